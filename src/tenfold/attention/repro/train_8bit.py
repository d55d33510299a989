"""``attention/train-8bit``: the LM fine-tuned from a full-precision base with
``int8_train`` attention (SageBwd) vs full precision, and pretrained from scratch with both;
each run is a point of :func:`tenfold.core.sweep.run_sweep` (parallel, resumable)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ... import __version__
from ...core.experiment import Claim, Result, RunContext, experiment
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
from ...core.tasks.plotting import plot_run, pyplot
from ...core.validate import check_config
from ..api import AttentionConfig, apply_
from .capture import POINT_VERSION


@dataclass(frozen=True)
class Train8bitConfig:
    corpus: str = "python-docs"
    vocab_size: int = 2048
    n_layer: int = 4
    n_heads: int = 2
    head_dim: int = 64
    block_size: int = 128
    batch_size: int = 16
    steps: int = 1000  # pretraining from scratch
    lr: float = 3e-3
    domain: str = "whatsnew/*"  # fine-tuning: the "What's New" pages
    pretrain_steps: int = 1000  # the full-precision base model of the fine-tuning runs
    finetune_steps: int = 300
    finetune_lr: float = 1e-3
    eval_every: int = 100
    eval_batches: int = 8
    tolerance: float = 0.01
    pretrain_seeds: int = 1  # pretraining pairs (full, int8_train) with seeds seed, seed+1, ...
    finetune_seeds: int = 2  # fine-tuning pairs (each seed its own base model)
    workers: int = 0
    resume: bool = True

    def __post_init__(self):
        check_config(
            self,
            **LM_RULES,
            steps=">=1",
            pretrain_steps=">=1",
            finetune_steps=">=1",
            finetune_lr=">0",
            tolerance="(0,1)",
            pretrain_seeds=">=1",
            finetune_seeds=">=1",
            workers=">=0",
        )


def train_run(point: dict) -> dict:
    """One run (a sweep point): pretrain or fine-tune with full or int8_train attention."""
    spec = LMRunSpec.from_point(point)
    model, streams, val, start_val = setup_run(spec, "attention", POINT_VERSION)
    if point["scheme"] == "int8_train":
        apply_(model, AttentionConfig("int8_train", backend="reference", on_unsupported="error"))

    def eval_fn(m, step):
        return {"val_loss": val_loss(m, val)}

    return {**fit_run(model, streams, spec, eval_fn).as_dict(), "start_val": start_val}


def _train_points(cfg: Train8bitConfig, seed: int) -> list[dict]:
    """Sweep points: an LMRunSpec per run plus the phase, the attention scheme and versions."""
    base = LMRunSpec(
        corpus=cfg.corpus,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_heads=cfg.n_heads,
        head_dim=cfg.head_dim,
        block_size=cfg.block_size,
        batch_size=cfg.batch_size,
        mlp="swiglu",
        eval_every=cfg.eval_every,
        eval_batches=cfg.eval_batches,
        seed=seed,
    )
    tag = dict(v=POINT_VERSION, tenfold=__version__)
    pts = []
    for scheme in ("full", "int8_train"):
        for i in range(cfg.pretrain_seeds):
            spec = replace(base, steps=cfg.steps, lr=cfg.lr, seed=seed + i)
            pts.append(spec.point(phase="pretrain", scheme=scheme, **tag))
        for i in range(cfg.finetune_seeds):
            spec = replace(
                base,
                domain=cfg.domain,
                pretrain_steps=cfg.pretrain_steps,
                steps=cfg.finetune_steps,
                lr=cfg.finetune_lr,
                seed=seed + i,
            )
            pts.append(spec.point(phase="finetune", scheme=scheme, **tag))
    return pts


def _curves_figure(ctx, recs: dict, name: str):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, phase in zip(axes, ("pretrain", "finetune")):
        for scheme, label in (("full", "full precision"), ("int8_train", "int8_train (SageBwd)")):
            rec = recs.get((phase, scheme, 0))
            if rec is None:
                continue
            plot_run(ax, rec["result"], label)
        ax.set_title("pretraining from scratch" if phase == "pretrain" else "fine-tuning")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (dots: validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return ctx.figure(fig, name)


def _steps_to(evals: list, target: float) -> int | None:
    for step, v in evals:
        if v <= target:
            return step
    return None


@experiment(
    "attention/train-8bit",
    Train8bitConfig,
    presets={
        "quick": dict(
            n_layer=2,
            block_size=64,
            steps=150,
            pretrain_steps=150,
            finetune_steps=60,
            eval_every=25,
            eval_batches=4,
        ),  # fmt: skip
        "full": dict(pretrain_seeds=2),
    },
    gpu="training speed of the Triton SageBwd kernels; this run emulates their numerics",
    summary="Fine-tune a pretrained LM and pretrain one from scratch with 8-bit (SageBwd) attention vs full precision.",
)
def train_8bit(cfg: Train8bitConfig, ctx: RunContext) -> Result:
    cache = ctx.out_dir.parent / "runs"
    points = _train_points(cfg, ctx.seed)
    if not cfg.resume:
        for p in points:
            (cache / f"{point_key(p)}.json").unlink(missing_ok=True)
    ctx.log(f"tokenizing {cfg.corpus} (cached after the first run)")
    fts = [LMRunSpec.from_point(p) for p in points if p["phase"] == "finetune"]
    base, _ = lm_streams(fts[0])
    lm_streams(LMRunSpec.from_point(points[0]))
    ctx.log(
        f"pretraining the full-precision base models ({cfg.finetune_seeds} seeds x "
        f"{cfg.pretrain_steps} steps, cached)"
    )
    for ft in {f.seed: f for f in fts}.values():  # before the workers, once per seed
        pretrained_lm(ft, base, "attention", POINT_VERSION, ctx.progress)
    recs_l = run_sweep(train_run, points, cache, cfg.workers or None, ctx.progress, "8-bit runs")
    recs = {
        (r["point"]["phase"], r["point"]["scheme"], r["point"]["seed"] - ctx.seed): r
        for r in recs_l
    }
    reused = sum(r["reused"] for r in recs_l)
    ctx.log(f"{len(recs_l)} runs ({reused} reused from {cache})")

    def fv(phase, scheme, i=0):
        return recs[(phase, scheme, i)]["result"]["final_val"]

    metrics: dict = {"runs": len(recs_l), "runs_reused": reused}
    for (phase, scheme, i), rec in recs.items():
        key = f"{phase}_{scheme}" + (f"_seed{i}" if i else "")
        metrics[f"{key}_val_loss"] = rec["result"]["final_val"] or float("nan")
        metrics[f"{key}_train_seconds"] = rec["result"]["train_seconds"]
    tol = cfg.tolerance

    def gaps(phase, n):  # per seed, % of int8_train's final val loss above full's
        out = []
        for i in range(n):
            a, b = fv(phase, "full", i), fv(phase, "int8_train", i)
            out.append(math.nan if a is None else math.inf if b is None else 100 * (b - a) / a)
        return out

    def seeds_note(n):
        return f"2 standard errors over {n} seeds" if n > 1 else "one seed: noise not measured"

    claims = []
    ft = gaps("finetune", cfg.finetune_seeds)
    claims.append(
        Claim.judge(
            "finetune-lossless",
            '"Experiments indicate that 8-bit attention achieves lossless performance in '
            f'fine-tuning tasks": fine-tuned with SageBwd, the LM ends within {100 * tol:g}% '
            "of full precision's validation loss",
            source="abstract",
            values=[abs(g) for g in ft],
            noise=None if len(ft) > 1 else math.inf,
            margin=100 * tol,
            sense="below",
            noise_from=seeds_note(len(ft)) + " (each seed: its own base model, then both runs)",
            unit="% |val loss gap|",
            measured="; ".join(
                f"seed {i}: int8_train {fv('finetune', 'int8_train', i) or float('nan'):.4f} vs "
                f"full {fv('finetune', 'full', i) or float('nan'):.4f} ({g:+.2f}%)"
                for i, g in enumerate(ft)
            ),
        )
    )
    pre = gaps("pretrain", cfg.pretrain_seeds)
    pairs = [
        (fv("pretrain", "full", i), fv("pretrain", "int8_train", i))
        for i in range(cfg.pretrain_seeds)
    ]
    full_ev = recs[("pretrain", "full", 0)]["result"]["evals"]
    int8_ev = recs[("pretrain", "int8_train", 0)]["result"]["evals"]
    target = full_ev[len(full_ev) // 2][1] if full_ev else None
    s_full = _steps_to(full_ev, target) if target is not None else None
    s_int8 = _steps_to(int8_ev, target) if target is not None else None
    if all(math.isfinite(g) for g in pre):
        metrics["pretrain_gap"] = float(np.mean(pre)) / 100
    claims.append(
        Claim.judge(
            "pretrain-slower",
            '"[8-bit attention] exhibits slower convergence in pretraining tasks": '
            "pretrained from scratch with SageBwd, the LM ends above full precision's "
            "validation loss (same seed, same steps)",
            source="abstract",
            values=pre,
            noise=None if len(pre) > 1 else math.inf,
            margin=0.0,
            noise_from=seeds_note(len(pre)),
            unit="% val loss gap",
            measured="final val loss int8_train vs full: "
            + ", ".join(
                "diverged"
                if a is None or b is None
                else f"{b:.4f} vs {a:.4f} ({100 * (b - a) / a:+.2f}%)"
                for a, b in pairs
            )
            + (
                f"; steps to reach full's mid-run val loss {target:.3f}: full {s_full}, "
                f"int8_train {s_int8}"
                if target is not None
                else ""
            ),
            note="margin 0: any slowdown that clears the seed-to-seed noise",
        )
    )
    rows = []
    for (phase, scheme, i), rec in sorted(recs.items()):
        res = rec["result"]
        rows.append(
            {
                "phase": phase,
                "attention": scheme,
                "seed": ctx.seed + i,
                "val before": "-" if res["start_val"] is None else f"{res['start_val']:.4f}",
                "final val loss": "diverged"
                if res["final_val"] is None
                else f"{res['final_val']:.4f}",
                "train s": round(res["train_seconds"], 1),
            }
        )
    notes = (
        f"LM {cfg.n_layer} layers x {cfg.n_heads} heads x {cfg.head_dim}, context "
        f"{cfg.block_size}, batch {cfg.batch_size}, corpus {cfg.corpus}. Pretraining: "
        f"{cfg.steps} steps, lr {cfg.lr}. Fine-tuning: base pretrained {cfg.pretrain_steps} "
        f"steps in fp32 on every document but {cfg.domain!r}, then {cfg.finetune_steps} steps "
        f"at lr {cfg.finetune_lr} on {cfg.domain!r}. int8_train uses the reference SageBwd "
        "numerics (tenfold.attention._ref) in every attention layer; the rest is fp32. "
        f"Pretraining seeds: {cfg.pretrain_seeds}; fine-tuning: one seed."
    )
    return Result(
        metrics=metrics,
        claims=claims,
        tables={"runs": rows},
        figures=[_curves_figure(ctx, recs, "train_8bit_loss")],
        notes=notes,
    )
