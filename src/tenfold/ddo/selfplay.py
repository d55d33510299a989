"""Self-play rounds of DDO fine-tuning on the core :class:`~tenfold.core.train.Trainer`.

Round k: the reference is a frozen copy of the current model (round 1: the pre-trained
model); its fakes are drawn offline (once per round, one per real sample, paired with the
real sample's label) or online (every step, for the step's real batch); the model is
fine-tuned with :func:`~tenfold.ddo.api.ddo_loss` and its EMA is scored by a validation
metric every ``eval_every`` steps; the best-scoring EMA weights of the round become the
model and the reference of round k + 1.

Everything a round makes is kept in ``out_dir/round<k>/``: the fakes
(``fakes.safetensors``), the trainer's checkpoint (``last.safetensors``), the best weights
(``best.safetensors``) and the round's record (``round.json``, written last). A run that
stops anywhere resumes where it stopped and ends bit-identical on the CPU.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.diffusion import heun_sample
from ..core.io import CheckpointError, atomic_write_text, load_tensors, save_tensors
from ..core.train import StepContext, TrainConfig, Trainer, step_generator
from ..core.validate import check_config, check_int, check_tensor
from .api import DDOConfig, ddo_loss

__all__ = [
    "SelfPlayConfig",
    "RoundRecord",
    "DiffusionFakes",
    "TokenFakes",
    "self_play",
]


@dataclass(frozen=True)
class SelfPlayConfig:
    """Rounds and the fine-tuning of each. ``fakes``: ``"offline"`` (drawn once per round,
    ``num_fakes`` of them, 0 = one per real sample) or ``"online"`` (drawn every step).
    ``label_dropout``: share of rows trained unconditionally (their label replaced by the
    null label), for models used with classifier-free guidance. ``mode``: whether a lower
    (``"min"``, e.g. FD) or higher validation metric is better."""

    rounds: int = 1
    steps: int = 500
    batch_size: int = 128
    lr: float = 1e-4
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float | None = 0.99
    eval_every: int = 100
    fakes: str = "offline"
    num_fakes: int = 0
    gen_batch: int = 1024
    label_dropout: float = 0.0
    mode: str = "min"
    seed: int = 0
    progress: bool = True

    def __post_init__(self):
        check_config(
            self, rounds="[1,100]", steps=">=1", batch_size=">=1", lr=">0", warmup_steps=">=0",
            grad_clip=">0", ema_decay="(0,1)", eval_every=">=1", fakes=("offline", "online"),
            num_fakes=">=0", gen_batch=">=1", label_dropout="[0,1)", mode=("min", "max"),
            seed=">=0",
        )  # fmt: skip


@dataclass
class RoundRecord:
    """What one round did: the validation metric of its reference (``base_metric``) and of
    its best checkpoint, the step of that checkpoint, the evaluations, the training history
    (loss, discriminator accuracy and margin per step) and the wall time of fake generation
    and of training."""

    round: int
    base_metric: float
    best_metric: float
    best_step: int
    evals: list[dict[str, float]] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    fake_seconds: float = 0.0
    train_seconds: float = 0.0


class DiffusionFakes:
    """Fakes of an EDM denoiser ``ref(x, sigma, y)``: the deterministic Heun sampler at
    guidance 1 (the reference's own distribution), ``sampler_steps`` steps."""

    def __init__(self, sampler_steps: int = 18, sigma_max: float = 80.0):
        self.sampler_steps = check_int("sampler_steps", sampler_steps, ">=1")
        self.sigma_max = sigma_max

    def __call__(
        self, ref: nn.Module, like: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        noise = torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)
        return heun_sample(ref, noise, labels, self.sampler_steps, sigma_max=self.sigma_max)


class TokenFakes:
    """Fakes of an autoregressive model: the first ``prompt_len`` tokens of each real row
    (BOS, class token) are kept and the rest sampled from the reference at temperature 1
    (plain sampling, no guidance). ``model(idx)`` returns logits or (logits, ...); a model
    with ``new_cache()`` (core's LM) is decoded with its key/value cache."""

    def __init__(self, prompt_len: int = 1):
        self.prompt_len = check_int("prompt_len", prompt_len, ">=1")

    @torch.no_grad()
    def __call__(
        self, ref: nn.Module, like: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        P, L = self.prompt_len, like.shape[1]
        idx = like[:, :P]
        # a model with a key/value cache (core's LM: new_cache()) decodes incrementally
        cache = ref.new_cache() if callable(getattr(ref, "new_cache", None)) else None
        fed = 0
        for _ in range(L - P):
            out = ref(idx) if cache is None else ref(idx[:, fed:], cache=cache)
            fed = idx.shape[1]
            logits = (out[0] if isinstance(out, (tuple, list)) else out)[:, -1].float()  # (B, V)
            probs = logits.softmax(-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).to(idx)  # (B, 1)
            idx = torch.cat([idx, nxt], 1)
        return idx  # (B, L)


Fakes = Callable[[nn.Module, Tensor, Tensor | None, torch.Generator], Tensor]
Metric = Callable[[nn.Module], float]


def _round_seed(seed: int, k: int) -> int:
    return seed * 1009 + k


class _RoundLoss:
    """The Trainer's loss_fn for one round: pairs each real row with its fake, drops labels
    for unconditional rows, draws the diffusion (sigma, noise) from the step's generator,
    and logs the implicit discriminator's accuracy and margin."""

    def __init__(self, ref, ddo, sp, fakes, labelled: bool, null_label, prompt_len):
        self.ref, self.ddo, self.sp, self.fakes = ref, ddo, sp, fakes
        self.labelled, self.null, self.prompt_len = labelled, null_label, prompt_len

    def __call__(self, model: nn.Module, batch, ctx: StepContext) -> Tensor:
        labelled = self.labelled
        if self.sp.fakes == "offline":
            x, y, xf = batch
        else:
            x, y = batch
            xf = self.fakes(self.ref, x, y if labelled else None, ctx.generator)
        n = x.shape[0]
        uncond = None
        if self.sp.label_dropout > 0:  # (tokens: the class token; labels: y)
            uncond = ctx.rand(n) < self.sp.label_dropout
            if labelled:
                y = torch.where(uncond, torch.full_like(y, self.null), y)
        if x.is_floating_point():
            sigma = (ctx.randn(n) * self.ddo.P_std + self.ddo.P_mean).exp()
            noise = ctx.randn(*x.shape)
            real, fake = ((x, y), (xf, y)) if labelled else (x, xf)
            out = ddo_loss(model, self.ref, real, fake, self.ddo, uncond=uncond, sigma=sigma,
                           noise=noise)  # fmt: skip
        else:
            if uncond is not None:  # the class token of an unconditional row is the null
                x = x.clone()
                x[uncond, self.prompt_len - 1] = self.null
                xf = xf.clone()
                xf[uncond, self.prompt_len - 1] = self.null
            out = ddo_loss(model, self.ref, x, xf, self.ddo, uncond=uncond,
                           prompt_len=self.prompt_len)  # fmt: skip
        ctx.log(acc=out.accuracy, margin=out.margin)
        return out.loss


def _check_real(real) -> tuple[Tensor, Tensor | None]:
    x, y = real if isinstance(real, (tuple, list)) else (real, None)
    check_tensor("real data", x)
    if y is not None:
        check_tensor("real labels", y, ndim=1, dtypes=(torch.int64, torch.int32))
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"{y.shape[0]} labels for {x.shape[0]} real samples")
    return x, y


def _generate(ref, fakes: Fakes, x, y, sp: SelfPlayConfig, k: int) -> Tensor:
    from tqdm.auto import tqdm

    n = sp.num_fakes or x.shape[0]
    idx = torch.arange(n) % x.shape[0]  # fake i is paired with real sample i (and its label)
    out = []
    starts = range(0, n, sp.gen_batch)
    for s in tqdm(starts, desc=f"round {k} fakes", disable=not sp.progress, leave=False):
        sel = idx[s : s + sp.gen_batch]
        g = step_generator(_round_seed(sp.seed, k), s, stream=3)
        out.append(fakes(ref, x[sel], y[sel] if y is not None else None, g).detach().cpu())
    xf = torch.cat(out)
    if xf.shape[1:] != x.shape[1:] or xf.dtype != x.dtype:
        raise ValueError(
            f"the fake generator returned {xf.dtype} {tuple(xf.shape[1:])} samples for real "
            f"data of {x.dtype} {tuple(x.shape[1:])}"
        )
    if xf.is_floating_point() and not torch.isfinite(xf).all():
        raise FloatingPointError(f"round {k}: the reference produced non-finite fakes")
    return xf


def _run_key(model: nn.Module, ddo: DDOConfig, sp: SelfPlayConfig) -> dict[str, Any]:
    """What a round's files depend on: the objective, the rounds' settings and the model's
    architecture (its tensors' names and shapes). Not the number of rounds: a run asked for
    more rounds continues a finished one."""
    keep = {k: v for k, v in asdict(sp).items() if k not in ("progress", "rounds")}
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    return json.loads(json.dumps({"ddo": asdict(ddo), "selfplay": keep, "model": shapes}))


def _check_key(path: Path, key: dict[str, Any], found: Any) -> None:
    if found != key:
        raise CheckpointError(
            f"{path}: made by another self-play run (another model, DDOConfig or "
            "SelfPlayConfig): give a new out_dir, or delete this one to start over"
        )


def _load_round(path: Path, key: dict[str, Any]) -> RoundRecord | None:
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable round record ({e}); delete it") from None
    _check_key(path, key, rec.pop("key", None) if isinstance(rec, dict) else None)
    try:
        return RoundRecord(**rec)
    except TypeError as e:
        raise CheckpointError(f"{path}: not a round record ({e}); delete it") from None


def _load_best(model: nn.Module, path: Path, key: dict[str, Any]) -> None:
    tensors, meta = load_tensors(path)
    _check_key(path, key, meta.get("key"))
    model.load_state_dict(tensors, strict=True)


def self_play(
    model: nn.Module,
    real,
    fakes: Fakes,
    metric: Metric,
    ddo: DDOConfig,
    config: SelfPlayConfig,
    out_dir: str | os.PathLike,
    *,
    null_label: int | None = None,
    prompt_len: int = 1,
    stop_after: tuple[int, int] | None = None,
) -> list[RoundRecord]:
    """Fine-tune ``model`` with DDO in ``config.rounds`` self-play rounds; returns a record
    per round and leaves the best weights of the last round in ``model``.

    ``real``: the data, ``x`` or ``(x, labels)``; for an autoregressive model the tokens
    (N, L) whose first ``prompt_len`` tokens condition (a class token at ``prompt_len - 1``
    that ``null_label`` replaces in unconditional rows). ``fakes(ref, like, labels,
    generator)``: draws fakes like ``like`` (:class:`DiffusionFakes`, :class:`TokenFakes`).
    ``metric(model)``: the validation metric of a model (called on the EMA weights).
    ``stop_after=(k, s)`` stops in round k after step s, as a crash would (for tests)."""
    if not isinstance(ddo, DDOConfig) or not isinstance(config, SelfPlayConfig):
        raise TypeError("self_play takes a DDOConfig and a SelfPlayConfig")
    sp = config
    x, y = _check_real(real)
    if sp.label_dropout > 0 and (y is None and x.is_floating_point() or null_label is None):
        raise ValueError(
            "label_dropout > 0 needs labelled data and the model's null_label "
            "(the label of its unconditional branch)"
        )
    if sp.batch_size > x.shape[0]:
        raise ValueError(f"batch_size={sp.batch_size} is over the {x.shape[0]} real samples")
    out = Path(out_dir)
    better = (lambda a, b: a < b) if sp.mode == "min" else (lambda a, b: a > b)
    records: list[RoundRecord] = []
    key = _run_key(model, ddo, sp)
    kpath = out / "selfplay.json"  # what this folder's rounds were made with
    if kpath.exists():
        try:
            found = json.loads(kpath.read_text())
        except (OSError, ValueError):
            found = None
        _check_key(kpath, key, found)
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(kpath, json.dumps(key))
    for k in range(1, sp.rounds + 1):
        rdir = out / f"round{k}"
        done = _load_round(rdir / "round.json", key)
        if done is not None:  # this round finished: its best weights are the model now
            _load_best(model, rdir / "best.safetensors", key)
            records.append(done)
            continue
        rdir.mkdir(parents=True, exist_ok=True)
        ref = copy.deepcopy(model).eval().requires_grad_(False)
        base_metric = float(metric(ref))
        t0 = time.perf_counter()
        data: tuple[Tensor, ...]
        labels = y if y is not None else torch.zeros(x.shape[0], dtype=torch.long)
        if sp.fakes == "offline":
            fpath = rdir / "fakes.safetensors"
            try:
                saved, meta = load_tensors(fpath)
                xf = saved.get("fakes")
                want = (sp.num_fakes or x.shape[0], *x.shape[1:])
                if meta.get("key") != key or xf is None or tuple(xf.shape) != want:
                    raise CheckpointError(f"{fpath}: fakes of another run")
                fake_seconds = float(meta.get("seconds", 0.0))
            except CheckpointError:  # none yet, damaged or stale: draw them (seeded) again
                xf = _generate(ref, fakes, x, y, sp, k)
                fake_seconds = time.perf_counter() - t0
                save_tensors(fpath, {"fakes": xf}, {"key": key, "seconds": fake_seconds})
            idx = torch.arange(xf.shape[0]) % x.shape[0]
            data = (x[idx], labels[idx], xf)
        else:
            fake_seconds = 0.0
            data = (x, labels)
        best_path = rdir / "best.safetensors"
        # the reference itself is the first candidate: a round that finds nothing better
        # keeps it (best_step 0) rather than a worse checkpoint
        if not math.isfinite(base_metric):
            raise FloatingPointError(f"the validation metric of the reference is {base_metric}")
        state = {"best": base_metric, "step": 0}
        if not best_path.exists():
            save_tensors(
                best_path, ref.state_dict(), {"step": 0, "metric": base_metric, "key": key}
            )

        def eval_fn(m: nn.Module, step: int, _state=state, _path=best_path) -> dict[str, float]:
            v = float(metric(m))
            if not math.isfinite(v):
                raise FloatingPointError(f"the validation metric is {v} at step {step}")
            if better(v, _state["best"]):
                save_tensors(_path, m.state_dict(), {"step": step, "metric": v, "key": key})
                _state.update(best=v, step=step)
            return {"metric": v}

        loss = _RoundLoss(ref, ddo, sp, fakes, y is not None, null_label, prompt_len)
        tcfg = TrainConfig(
            steps=sp.steps, batch_size=sp.batch_size, lr=sp.lr, warmup_steps=sp.warmup_steps,
            grad_clip=sp.grad_clip, ema_decay=sp.ema_decay, eval_every=sp.eval_every,
            ckpt_every=sp.eval_every, seed=_round_seed(sp.seed, k), progress=sp.progress,
            desc=f"DDO round {k}",
        )  # fmt: skip
        trainer = Trainer(model, loss, data, tcfg, eval_fn=eval_fn, ckpt_dir=rdir)
        if trainer.ckpt_path.exists():  # resume: the best so far is in the saved evaluations
            trainer.load_checkpoint()
            for e in trainer.evals:
                if better(e["metric"], state["best"]):
                    state.update(best=e["metric"], step=e["step"])
        stop = stop_after[1] if stop_after is not None and stop_after[0] == k else None
        t1 = time.perf_counter()
        trainer.fit(resume=False, stop_after=stop)
        if trainer.step < sp.steps:
            return records  # stopped early (stop_after): resume with the same call
        _load_best(model, best_path, key)
        rec = RoundRecord(
            round=k, base_metric=base_metric, best_metric=state["best"], best_step=state["step"],
            evals=trainer.evals, history=trainer.history, fake_seconds=round(fake_seconds, 3),
            train_seconds=round(time.perf_counter() - t1, 3),
        )  # fmt: skip
        atomic_write_text(rdir / "round.json", json.dumps({**asdict(rec), "key": key}))
        records.append(rec)
    return records
