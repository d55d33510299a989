"""The runs of both fallback experiments: the INT8 schemes, one training run per scheme (a
sweep point: an LMRunSpec plus the scheme's fields) with its fallback statistics, outlier
channels and GEMM SQNR, and the configs of the experiments."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ... import __version__
from ...core.experiment import RunContext
from ...core.sweep import point_key, run_sweep
from ...core.tasks.lm import (
    LM_RULES,
    LMRunSpec,
    fit_run,
    lm_streams,
    pretrained_lm,
    setup_run,
    val_loss,
)
from ...core.validate import check_config
from ..api import (
    SCHEMES,
    FallbackConfig,
    _skipped,
    apply_,
    capture_linear_io,
    fallback_stats,
    gemm_sqnr,
    reset_fallback_stats,
)

SCHEME_NAMES = {
    "full": "full precision (fp32)",
    "int8_tensor": "INT8 per tensor",
    "int8_block": "INT8 per block",
    "int8_fallback": "INT8 per block + fallback",
}
POINT_VERSION = 1
SKIP = ("lm_head",)  # the tied output layer stays in full precision, as in the paper's setup


def scheme_config(scheme: str, block, rule: str, threshold: float) -> FallbackConfig | None:
    """``full``, ``int8_tensor``, ``int8_block``, ``int8_fallback`` or ``fallback:RULE:T``."""
    if scheme.startswith("fallback:"):
        _, r, t = scheme.split(":")
        return FallbackConfig(block=tuple(block), rule=r, threshold=float(t))
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown scheme {scheme!r}; choose from {', '.join(SCHEMES)} or 'fallback:RULE:T'"
        )
    cfg = SCHEMES[scheme]
    if cfg is None:
        return None
    if cfg.granularity.value == "block":
        cfg = replace(cfg, block=tuple(block))
    if cfg.uses_fallback:
        cfg = replace(cfg, rule=rule, threshold=threshold)
    return cfg


def _snapshot(model) -> dict:
    out = {}
    for name, st in fallback_stats(model).items():
        out[name] = {
            "x_rate": st.x_rate,
            "dy_rate": st.dy_rate,
            "rate": st.rate,
            "x_cols": [] if st.x_col_fallback is None else st.x_col_fallback.tolist(),
            "saved_bytes": st.saved_bytes,
            "bf16_bytes": st.bf16_bytes,
        }
    return out


@torch.no_grad()
def _channel_absmax(model, batches) -> dict[str, list[float]]:
    """max |input| of every Linear per input channel over the batches (where outliers sit)."""
    amax: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not _skipped(name, SKIP):

            def hook(m, inp, out, name=name):
                a = inp[0].detach().abs().flatten(0, -2).amax(0)
                amax[name] = a if name not in amax else torch.maximum(amax[name], a)

            hooks.append(mod.register_forward_hook(hook))
    model.eval()
    for x, _ in batches:
        model(x)
    for h in hooks:
        h.remove()
    return {k: v.tolist() for k, v in amax.items()}


def train_run(point: dict) -> dict:
    """Train one scheme (a sweep point: an LMRunSpec plus the scheme's fields) -> curves,
    evals, fallback statistics."""
    spec = LMRunSpec.from_point(point)
    model, streams, val, start_val = setup_run(spec, "fallback", POINT_VERSION)
    qcfg = scheme_config(point["scheme"], point["block"], point["rule"], point["threshold"])
    if qcfg is not None:
        apply_(model, qcfg, skip=SKIP)
    over_time: list[dict] = []
    last_window: dict = {}

    def eval_fn(m, step):
        snap = _snapshot(m)
        if snap:
            last_window.clear()
            last_window.update(snap)
            rates = [s["rate"] for s in snap.values()]
            over_time.append(
                {
                    "step": step,
                    "rate": float(np.mean(rates)),
                    **{k: s["rate"] for k, s in snap.items()},
                }
            )
            reset_fallback_stats(m)
        return {"val_loss": val_loss(m, val)}

    out = fit_run(model, streams, spec, eval_fn).as_dict()
    diverged = out["diverged"]
    last = over_time[-2]["step"] if len(over_time) > 1 else 0
    out.update(
        start_val=start_val,
        fallback_over_time=over_time,
        layers_last_window=dict(last_window) if not diverged else {},
        last_window_start=last,
    )
    if point.get("outliers") and not diverged:
        out["channel_absmax"] = _channel_absmax(model, val[:2])
    if point.get("analysis") and not diverged:
        out["gemm_sqnr"] = _gemm_analysis(model, val[0], point)
    return out


ANALYSIS_SCHEMES = ("int8_tensor", "int8_block", "int8_fallback")


def _gemm_analysis(model, batch, point: dict) -> dict[str, dict[str, dict[str, float]]]:
    """SQNR of every linear layer's three GEMMs on the trained model's real X and dY."""
    model.train()
    io = capture_linear_io(model, lambda m: m(*batch)[1], skip=SKIP)
    out = {}
    for name, (x, w, dy) in io.items():
        out[name] = {
            s: gemm_sqnr(
                x, w, dy, scheme_config(s, point["block"], point["rule"], point["threshold"])
            )
            for s in ANALYSIS_SCHEMES
        }
    return out


# --------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FallbackRunConfig:
    corpus: str = "python-docs"
    vocab_size: int = 2048
    n_layer: int = 4
    n_heads: int = 4
    head_dim: int = 32
    block_size: int = 128
    batch_size: int = 16
    steps: int = 1000
    lr: float = 3e-3
    eval_every: int = 100
    eval_batches: int = 8
    schemes: tuple[str, ...] = ("full", "int8_tensor", "int8_block", "int8_fallback")
    alternatives: tuple[str, ...] = ()
    control: bool = True
    block: tuple[int, int] = (32, 32)
    rule: str = "relative"
    threshold: float = 8.0
    tolerance: float = 0.01
    rare: float = 0.05
    noise_seeds: int = 2  # full-precision runs (seeds) that measure the seed-to-seed noise
    workers: int = 0
    resume: bool = True

    def __post_init__(self):
        check_config(
            self,
            **LM_RULES,
            steps=">=1",
            schemes="unique",
            alternatives="empty unique",
            block=">=1",
            threshold=">0",
            tolerance="(0,1)",
            rare="(0,1)",
            noise_seeds=">=1",
            workers=">=0",
        )
        if "full" not in self.schemes:
            raise ValueError("schemes must include 'full', the baseline of every claim")
        for s in (*self.schemes, *self.alternatives):
            scheme_config(s, self.block, self.rule, self.threshold)
        FallbackConfig(block=tuple(self.block), rule=self.rule, threshold=self.threshold)
        if self.noise_seeds < 1:
            raise ValueError(
                f"noise_seeds must be >= 1 (1: noise not measured), got {self.noise_seeds}"
            )
        if not (0 < self.tolerance < 1 and 0 < self.rare < 1):
            raise ValueError(
                f"tolerance and rare must be in (0, 1), got {self.tolerance}, {self.rare}"
            )


@dataclass(frozen=True)
class FinetuneConfig(FallbackRunConfig):
    domain: str = "whatsnew/*"
    pretrain_steps: int = 1000
    steps: int = 300
    lr: float = 1e-3
    control: bool = False

    def __post_init__(self):
        super().__post_init__()
        check_config(self, pretrain_steps=">=1", alternatives="empty unique")


def _points(cfg, ctx: RunContext, extra: dict) -> list[dict]:
    """Sweep points: an LMRunSpec per run (``extra``: a fine-tuning run's domain and base
    steps) plus the scheme, its block and rule, and versions."""
    spec = LMRunSpec(
        corpus=cfg.corpus,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        block_size=cfg.block_size,
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        lr=cfg.lr,
        eval_every=cfg.eval_every,
        eval_batches=cfg.eval_batches,
        seed=ctx.seed,
        **extra,
    )
    common = dict(
        block=list(cfg.block),
        rule=cfg.rule,
        threshold=cfg.threshold,
        v=POINT_VERSION,
        tenfold=__version__,
    )

    def one(s, mlp):
        p = replace(spec, mlp=mlp).point(
            scheme=s, outliers=s in ("full", "int8_fallback"), **common
        )
        if s == "full":
            p["analysis"] = 1  # GEMM SQNR of each scheme on the trained model's real tensors
        return p

    pts = [one(s, "swiglu") for s in (*cfg.schemes, *cfg.alternatives)]
    mlps = ["swiglu"]
    if getattr(cfg, "control", False):
        pts += [one(s, "gelu") for s in ("full", "int8_block")]
        mlps.append("gelu")
    for i in range(1, cfg.noise_seeds):  # the seed-to-seed noise of full precision
        pts += [
            replace(spec, mlp=mlp, seed=ctx.seed + i).point(
                scheme="full", outliers=False, noise_seed=i, **common
            )
            for mlp in mlps
        ]
    return pts


def _cache(ctx: RunContext) -> Path:
    """One folder of finished runs per experiment, beside its timestamped run folders. A run
    file holds its full point (every setting, the seed, the point version) and is reused only
    for the identical point, so a changed config reruns exactly the runs it changes."""
    return ctx.out_dir.parent / "runs"


def run_schemes(cfg, ctx: RunContext, extra: dict, desc: str):
    """Run (or reuse) every scheme's run of ``cfg`` -> {(mlp, scheme): sweep record}."""
    cache = _cache(ctx)
    points = _points(cfg, ctx, extra)
    if not cfg.resume:
        for p in points:
            (cache / f"{point_key(p)}.json").unlink(missing_ok=True)
    ctx.log(f"tokenizing {cfg.corpus} (cached after the first run)")
    first = LMRunSpec.from_point(points[0])
    base, dom = lm_streams(first)  # tokenizer and streams built once, before the workers
    if dom is not None:
        ctx.log(f"pretraining the full-precision base model ({cfg.pretrain_steps} steps, cached)")
        pretrained_lm(first, base, "fallback", POINT_VERSION, ctx.progress)
    recs = run_sweep(train_run, points, cache, cfg.workers or None, ctx.progress, desc)
    reused = sum(r["reused"] for r in recs)
    ctx.log(f"{len(recs)} runs ({reused} reused from {cache})")
    out = {
        (r["point"]["mlp"], r["point"]["scheme"]): r for r in recs if "noise_seed" not in r["point"]
    }
    noise: dict[str, list] = {}
    for r in recs:
        if r["point"]["scheme"] == "full":
            noise.setdefault(r["point"]["mlp"], []).append(r["result"]["final_val"])
    out["_reused"] = reused
    out["_noise"] = noise  # mlp -> final val loss of full precision, one per seed
    return out


# the quick presets' model: 2 layers of width 64, context 64 (seconds per run on 2 cores)
QUICK_MODEL = dict(n_layer=2, n_heads=2, head_dim=32, block_size=64, batch_size=16, eval_batches=4)
