"""The small-LM recipe that reproductions share (fallback's INT8 training, attention's 8-bit
training): a Llama-style LM on a tokenized text corpus, AdamW with warm-up and cosine decay,
held-out validation batches, and a cached full-precision base model for fine-tuning runs.

Everything is keyed by a plain ``point`` dict (the sweep point of a run) with the fields
``corpus, vocab_size, block_size, n_layer, n_heads, head_dim, mlp, batch_size, lr,
eval_every, eval_batches, seed`` and, for fine-tuning, ``domain`` and ``pretrain_steps``.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .data import lm_batch, token_streams
from .train import TrainConfig, Trainer
from .transformer import LM, LMConfig


def lm_streams(point: dict):
    """(base streams, domain streams or None). With ``point["domain"]`` (a glob of the
    corpus' documents) the base excludes the domain and the domain reuses its tokenizer."""
    kw = dict(vocab_size=point["vocab_size"])
    if point.get("domain"):
        base = token_streams(point["corpus"], exclude=point["domain"], **kw)
        dom = token_streams(
            point["corpus"], include=point["domain"], val_fraction=0.15, tokenizer=base.tokenizer
        )
        return base, dom
    return token_streams(point["corpus"], **kw), None


def build_lm(point: dict, vocab: int) -> LM:
    return LM(
        LMConfig(
            vocab_size=vocab,
            block_size=point["block_size"],
            n_layer=point["n_layer"],
            n_heads=point["n_heads"],
            head_dim=point["head_dim"],
            mlp=point["mlp"],
        )
    )


def val_batches(stream, point: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``eval_batches`` fixed validation batches (seeded, the same for every run)."""
    g = torch.Generator().manual_seed(1234)
    return [
        lm_batch(stream, point["batch_size"], point["block_size"], g)
        for _ in range(point["eval_batches"])
    ]


@torch.no_grad()
def val_loss(model, batches) -> float:
    was = model.training
    model.eval()
    tot = sum(model(x, y)[1].item() for x, y in batches) / len(batches)
    model.train(was)
    return tot


def lm_trainer(model, stream, point: dict, steps: int, eval_fn=None, progress=False) -> Trainer:
    """AdamW (0.9, 0.95), wd 0.1, 5% warm-up then cosine, next-token loss on ``stream``."""
    tcfg = TrainConfig(
        steps=steps,
        batch_size=point["batch_size"],
        lr=point["lr"],
        weight_decay=0.1,
        betas=(0.9, 0.95),
        warmup_steps=max(1, steps // 20),
        schedule="cosine",
        ema_decay=None,
        eval_every=point["eval_every"] if eval_fn is not None else 0,
        seed=point["seed"],
        progress=progress,
        desc="pretrain (fp32)" if eval_fn is None else "train",
    )

    def data(ctx):
        return lm_batch(stream, point["batch_size"], point["block_size"], ctx.generator)

    return Trainer(model, lambda m, b, ctx: m(*b)[1], data, tcfg, eval_fn=eval_fn)


def pretrained_lm(point: dict, base, namespace: str, version: int, progress=False) -> dict:
    """State dict of the full-precision base model of a fine-tuning run: ``pretrain_steps``
    on ``base.train``, cached under ``<cache>/<namespace>/`` by every setting it depends on."""
    from .io import load_tensors, save_tensors
    from .metrics import cache_dir

    keys = ("corpus", "domain", "vocab_size", "block_size", "n_layer", "n_heads", "head_dim")
    spec = {k: point[k] for k in keys}
    spec.update(mlp=point["mlp"], steps=point["pretrain_steps"], lr=point["lr"])
    spec.update(batch_size=point["batch_size"], seed=point["seed"], v=version)
    h = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / namespace / f"pretrained-{h}.safetensors"
    if path.exists():
        return load_tensors(path)[0]
    torch.manual_seed(point["seed"])
    model = build_lm(point, base.vocab_size)
    lm_trainer(model, base.train, point, point["pretrain_steps"], progress=progress).fit()
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    save_tensors(path, sd, spec)
    return sd


def plot_run(ax, result: dict, label: str) -> None:
    """Draw one run's training loss (a moving average over ~2% of the run, thin) and its
    validation losses (dots, same colour) on ``ax``; ``result`` has ``curve`` and ``evals``
    as lists of [step, loss]."""
    import numpy as np

    c = np.array(result["curve"])
    if not len(c):
        return
    k = max(1, len(c) // 50)
    sm = np.convolve(c[:, 1], np.ones(k) / k, mode="valid")
    (line,) = ax.plot(c[k - 1 :, 0], sm, lw=1, alpha=0.6, label=f"{label} (train)")
    e = np.array(result["evals"])
    if len(e):
        ax.plot(e[:, 0], e[:, 1], "o-", color=line.get_color(), ms=3, lw=1.5)


def setup_run(point: dict, namespace: str, version: int):
    """Seed, streams, model and validation batches of one run -> (model, streams, val
    batches, validation loss before training or None). A fine-tuning point (with ``domain``)
    starts from :func:`pretrained_lm` and trains on the domain's streams."""
    torch.manual_seed(point["seed"])
    base, dom = lm_streams(point)
    streams = dom if dom is not None else base
    model = build_lm(point, base.vocab_size)
    val = val_batches(streams.val, point)
    start_val = None
    if dom is not None:
        model.load_state_dict(pretrained_lm(point, base, namespace, version))
        start_val = val_loss(model, val)
    return model, streams, val, start_val


def fit_run(model, streams, point: dict, eval_fn) -> dict:
    """Train ``point["steps"]`` steps with :func:`lm_trainer`; a non-finite loss ends the run
    as diverged instead of raising. -> curve, evals, final_val (None if diverged), diverged
    (the error or None), train_seconds."""
    import time

    trainer = lm_trainer(model, streams.train, point, point["steps"], eval_fn=eval_fn)
    diverged = None
    t0 = time.perf_counter()
    try:
        trainer.fit()
    except FloatingPointError as e:
        diverged = str(e)
    return {
        "curve": [[h["step"], h["loss"]] for h in trainer.history],
        "evals": [[e["step"], e["val_loss"]] for e in trainer.evals],
        "final_val": trainer.evals[-1]["val_loss"] if trainer.evals and not diverged else None,
        "diverged": diverged,
        "train_seconds": time.perf_counter() - t0,
    }
