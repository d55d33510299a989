"""The small-LM recipe that reproductions share (fallback's INT8 training, attention's 8-bit
training): a Llama-style LM on a tokenized text corpus, AdamW with warm-up and cosine decay,
held-out validation batches, and a cached full-precision base model for fine-tuning runs.

Everything is keyed by a :class:`LMRunSpec`, a frozen, validated record of one run's model,
data and optimiser settings. Sweep points (:func:`tenfold.core.sweep.run_sweep`) stay plain
JSON dicts at the process boundary: build them with :meth:`LMRunSpec.point` (the spec's
fields plus the method's own, e.g. the scheme) and read the spec back in the worker with
:meth:`LMRunSpec.from_point`::

    spec = LMRunSpec(corpus="python-docs", steps=300, seed=0)
    points = [spec.point(scheme=s) for s in ("full", "int8")]
    ...
    def train_run(point):
        spec = LMRunSpec.from_point(point)
        model, streams, val, start_val = setup_run(spec, "mymethod", version=1)
        return fit_run(model, streams, spec, eval_fn).as_dict()
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from ..data import TokenStreams, lm_batch, token_streams
from ..io import cached_state
from ..models import LM, LMConfig
from ..train import TrainConfig, Trainer
from ..validate import check_config

__all__ = [
    "LM_RULES",
    "LMRunSpec",
    "RunResult",
    "lm_streams",
    "build_lm",
    "val_batches",
    "val_loss",
    "lm_trainer",
    "pretrained_lm",
    "setup_run",
    "fit_run",
]


# The rules every LM-run config shares (model, data, optimisation; core.validate words).
LM_RULES = dict(
    vocab_size=">=2",
    n_layer=">=1",
    n_heads=">=1",
    head_dim=">=1",
    block_size=">=2",
    batch_size="[1,65536]",
    lr=">0",
    eval_every=">=0",
    eval_batches=">=1",
)


@dataclass(frozen=True)
class LMRunSpec:
    """One LM run: the model (``n_layer`` x ``n_heads`` x ``head_dim``, ``mlp``, context
    ``block_size``), the data (``corpus``, a BPE of ``vocab_size``; a fine-tuning run names
    its ``domain``, a glob of the corpus' documents, and the base model's ``pretrain_steps``
    on every other document) and the optimisation (``steps`` at ``lr``, ``batch_size``,
    validation every ``eval_every`` steps on ``eval_batches`` fixed batches, ``seed``)."""

    corpus: str = "python-docs"
    vocab_size: int = 2048
    block_size: int = 128
    n_layer: int = 4
    n_heads: int = 4
    head_dim: int = 32
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    batch_size: int = 16
    lr: float = 3e-3
    steps: int = 1000
    eval_every: int = 100
    eval_batches: int = 8
    seed: int = 0
    domain: str = ""
    pretrain_steps: int = 0

    def __post_init__(self):
        check_config(self, **LM_RULES, steps=">=0", pretrain_steps=">=0")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"LMRunSpec.mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        if self.domain and self.pretrain_steps < 1:
            raise ValueError("a fine-tuning spec (with a domain) needs pretrain_steps >= 1")

    @property
    def finetune(self) -> bool:
        return bool(self.domain)

    def point(self, **extra: Any) -> dict[str, Any]:
        """A sweep point: this spec's fields plus ``extra`` (the method's own fields)."""
        clash = set(extra) & {f.name for f in dataclasses.fields(self)}
        if clash:
            raise ValueError(f"point fields {sorted(clash)} clash with LMRunSpec's own")
        return {**dataclasses.asdict(self), **extra}

    @classmethod
    def from_point(cls, point: dict[str, Any]) -> LMRunSpec:
        """The spec of a sweep point (its other fields are the method's)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in point.items() if k in names})


@dataclass(frozen=True)
class RunResult:
    """What :func:`fit_run` measured: the training loss ``curve`` and validation ``evals`` as
    [step, loss] pairs, the final validation loss (None when the run diverged), the
    divergence message (None when it did not) and the training time."""

    curve: list
    evals: list
    final_val: float | None
    diverged: str | None
    train_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lm_streams(spec: LMRunSpec) -> tuple[TokenStreams, TokenStreams | None]:
    """(base streams, domain streams or None). With a ``domain`` the base excludes the
    domain's documents and the domain reuses the base tokenizer."""
    kw = dict(vocab_size=spec.vocab_size)
    if spec.domain:
        base = token_streams(spec.corpus, exclude=spec.domain, **kw)
        dom = token_streams(
            spec.corpus, include=spec.domain, val_fraction=0.15, tokenizer=base.tokenizer
        )
        return base, dom
    return token_streams(spec.corpus, **kw), None


def build_lm(spec: LMRunSpec, vocab: int) -> LM:
    return LM(
        LMConfig(
            vocab_size=vocab,
            block_size=spec.block_size,
            n_layer=spec.n_layer,
            n_heads=spec.n_heads,
            head_dim=spec.head_dim,
            mlp=spec.mlp,
        )
    )


def val_batches(stream, spec: LMRunSpec) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``eval_batches`` fixed validation batches (seeded, the same for every run)."""
    g = torch.Generator().manual_seed(1234)
    return [lm_batch(stream, spec.batch_size, spec.block_size, g) for _ in range(spec.eval_batches)]


@torch.no_grad()
def val_loss(model, batches) -> float:
    was = model.training
    model.eval()
    tot = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
    model.train(was)
    return tot


def lm_trainer(model, stream, spec: LMRunSpec, steps: int, eval_fn=None, progress=False) -> Trainer:
    """AdamW (0.9, 0.95), wd 0.1, 5% warm-up then cosine, next-token loss on ``stream``."""
    tcfg = TrainConfig(
        steps=steps,
        batch_size=spec.batch_size,
        lr=spec.lr,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        warmup_steps=max(1, steps // 20),
        schedule="cosine",
        ema_decay=None,
        eval_every=spec.eval_every if eval_fn is not None else 0,
        seed=spec.seed,
        progress=progress,
        desc="pretrain (fp32)" if eval_fn is None else "train",
    )

    def data(ctx):
        return lm_batch(stream, spec.batch_size, spec.block_size, ctx.generator)

    return Trainer(model, lambda m, b, ctx: m(*b)[1], data, tcfg, eval_fn=eval_fn)


def pretrained_lm(spec: LMRunSpec, base, namespace: str, version: int, progress=False) -> dict:
    """State dict of the full-precision base model of a fine-tuning run: ``pretrain_steps``
    on ``base.train``, cached (:func:`tenfold.core.io.cached_state`) under ``namespace`` by
    every setting it depends on."""
    if spec.pretrain_steps < 1:
        raise ValueError("pretrained_lm needs a spec with pretrain_steps >= 1")
    key = dict(
        corpus=spec.corpus,
        domain=spec.domain,
        vocab_size=spec.vocab_size,
        block_size=spec.block_size,
        n_layer=spec.n_layer,
        n_heads=spec.n_heads,
        head_dim=spec.head_dim,
        mlp=spec.mlp,
        steps=spec.pretrain_steps,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=spec.seed,
        v=version,
    )

    def build():
        torch.manual_seed(spec.seed)
        model = build_lm(spec, base.vocab_size)
        lm_trainer(model, base.train, spec, spec.pretrain_steps, progress=progress).fit()
        return model.state_dict()

    with torch.random.fork_rng(devices=[]):  # the template must not move the caller's RNG
        like = build_lm(spec, base.vocab_size).state_dict()  # what a sound cache file holds
    return cached_state(namespace, key, build, name="pretrained", like=like)


def setup_run(spec: LMRunSpec, namespace: str, version: int):
    """Seed, streams, model and validation batches of one run -> (model, streams, val
    batches, validation loss before training or None). A fine-tuning spec (with a
    ``domain``) starts from :func:`pretrained_lm` and trains on the domain's streams."""
    torch.manual_seed(spec.seed)
    base, dom = lm_streams(spec)
    streams = dom if dom is not None else base
    model = build_lm(spec, base.vocab_size)
    val = val_batches(streams.val, spec)
    start_val = None
    if dom is not None:
        model.load_state_dict(pretrained_lm(spec, base, namespace, version))
        start_val = val_loss(model, val)
    return model, streams, val, start_val


def fit_run(model, streams, spec: LMRunSpec, eval_fn) -> RunResult:
    """Train ``spec.steps`` steps with :func:`lm_trainer`; a non-finite loss ends the run as
    diverged (recorded in the result) instead of raising."""
    if spec.steps < 1:
        raise ValueError("fit_run needs a spec with steps >= 1")
    trainer = lm_trainer(model, streams.train, spec, spec.steps, eval_fn=eval_fn)
    diverged = None
    t0 = time.perf_counter()
    try:
        trainer.fit()
    except FloatingPointError as e:
        diverged = str(e)
    return RunResult(
        curve=[[h["step"], h["loss"]] for h in trainer.history],
        evals=[[e["step"], e["val_loss"]] for e in trainer.evals],
        final_val=trainer.evals[-1]["val_loss"] if trainer.evals and not diverged else None,
        diverged=diverged,
        train_seconds=time.perf_counter() - t0,
    )
