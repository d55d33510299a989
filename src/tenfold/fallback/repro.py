"""Reproductions of arXiv 2503.08040 (fallback quantization) at CPU scale.

* ``fallback/pretrain`` -- a Llama-style SwiGLU LM pretrained from scratch on real English
  text (the Python documentation, Debian's python3-doc) in full precision, per-tensor INT8,
  block INT8 and block INT8 with 16-bit fallback; a GELU-MLP (GPT-2-like) control in full
  precision and block INT8. Loss curves, fallback rates by layer and over time, and where
  the outliers sit.
* ``fallback/finetune`` -- the same LM pretrained in full precision on every document but
  the "What's New" pages, then fine-tuned on those pages with each scheme.

INT8 runs use the exact numerics of :mod:`tenfold.fallback._ref` (fp32 elsewhere), so on the
CPU they measure accuracy, not speed. Each run is one point of :func:`run_sweep`: runs go in
parallel worker processes and a rerun reuses finished ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..core.experiment import Claim, Result, RunContext, experiment
from ..core.sweep import point_key, run_sweep
from ..core.tasks.lm import LMRunSpec, fit_run, lm_streams, pretrained_lm, setup_run, val_loss
from ..core.tasks.plotting import plot_run, pyplot
from .api import (
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
    few_percent: float = 0.10
    workers: int = 0
    resume: bool = True

    def __post_init__(self):
        for name in ("n_layer", "n_heads", "head_dim", "block_size", "batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if "full" not in self.schemes:
            raise ValueError("schemes must include 'full', the baseline of every claim")
        for s in (*self.schemes, *self.alternatives):
            scheme_config(s, self.block, self.rule, self.threshold)
        FallbackConfig(block=tuple(self.block), rule=self.rule, threshold=self.threshold)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class FinetuneConfig(FallbackRunConfig):
    domain: str = "whatsnew/*"
    pretrain_steps: int = 1000
    steps: int = 300
    lr: float = 1e-3
    control: bool = False


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
    if getattr(cfg, "control", False):
        pts += [one(s, "gelu") for s in ("full", "int8_block")]
    return pts


def _cache(ctx: RunContext) -> Path:
    """One folder of finished runs per experiment, beside its timestamped run folders. A run
    file holds its full point (every setting, the seed, the point version) and is reused only
    for the identical point, so a changed config reruns exactly the runs it changes."""
    return ctx.out_dir.parent / "runs"


def _run(cfg, ctx: RunContext, extra: dict, desc: str):
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
    out = {(r["point"]["mlp"], r["point"]["scheme"]): r for r in recs}
    out["_reused"] = reused
    return out


def _label(scheme: str) -> str:
    if scheme.startswith("fallback:"):
        _, r, t = scheme.split(":")
        if r == "topk":
            return f"fallback, top {100 * float(t):g}% of blocks"
        return f"fallback, {r} > {t}"
    return SCHEME_NAMES[scheme]


def _rate(rec: dict) -> float | None:
    layers = rec["result"]["layers_last_window"]
    if not layers:
        return None
    return float(np.mean([s["rate"] for s in layers.values()]))


def _mean_rate(rec: dict) -> float | None:
    ot = rec["result"]["fallback_over_time"]
    if not ot:
        return None
    return float(np.mean([o["rate"] for o in ot]))


def _fmt(v: float | None, spec: str = ".4f") -> str:
    return "diverged" if v is None else format(v, spec)


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return (a - b) / b


def _loss_figure(ctx, recs, cfg, title: str, name: str):
    plt = pyplot()
    mlps = sorted({m for m, _ in recs}, reverse=True)
    fig, axes = plt.subplots(1, len(mlps), figsize=(6 * len(mlps), 4), squeeze=False)
    for ax, mlp in zip(axes[0], mlps):
        for (m, s), rec in recs.items():
            if m != mlp:
                continue
            plot_run(ax, rec["result"], _label(s))
        ax.set_title(f"{title}: {'SwiGLU' if mlp == 'swiglu' else 'GELU MLP (control)'}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (dots: validation)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return ctx.figure(fig, name)


def _fallback_figure(ctx, rec, name: str):
    plt = pyplot()
    res = rec["result"]
    layers = res["layers_last_window"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    names = list(layers)
    a1.bar(range(len(names)), [100 * layers[n]["x_rate"] for n in names], label="activation X")
    a1.bar(
        range(len(names)),
        [100 * layers[n]["dy_rate"] for n in names],
        alpha=0.5,
        label="gradient dY",
    )
    a1.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    a1.set_ylabel("fallback rate, last eval window (%)")
    a1.set_title("fallback rate by layer")
    a1.legend(fontsize=7)
    ot = res["fallback_over_time"]
    if ot:
        steps = [o["step"] for o in ot]
        for n in names:
            a2.plot(steps, [100 * o.get(n, 0) for o in ot], lw=0.8, alpha=0.7)
        a2.plot(steps, [100 * o["rate"] for o in ot], "k-", lw=2, label="mean over layers")
        a2.legend(fontsize=7)
    a2.set_xlabel("step")
    a2.set_ylabel("fallback rate in the window (%)")
    a2.set_title("fallback rate over training (one line per layer)")
    return ctx.figure(fig, name)


def _outlier_figure(ctx, recs, name: str):
    plt = pyplot()
    cols = [(m, recs[(m, "full")]) for m in ("swiglu", "gelu") if (m, "full") in recs]
    fig, axes = plt.subplots(1, len(cols), figsize=(7 * len(cols), 4.5), squeeze=False)
    for ax, (mlp, rec) in zip(axes[0], cols):
        amax = rec["result"].get("channel_absmax") or {}
        names = list(amax)
        width = max(len(v) for v in amax.values()) if amax else 1
        img = np.full((len(names), width), np.nan)
        for i, n in enumerate(names):
            v = np.asarray(amax[n])
            img[i, : len(v)] = v / max(np.median(v), 1e-12)
        im = ax.imshow(np.log10(img), aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_yticks(range(len(names)), names, fontsize=6)
        ax.set_xlabel("input channel")
        ax.set_title(
            f"{'SwiGLU' if mlp == 'swiglu' else 'GELU'} full precision: log10(max|x| / median)"
        )
        fig.colorbar(im, ax=ax)
    return ctx.figure(fig, name)


def _outlier_table(recs) -> list[dict]:
    rows = []
    for mlp in ("swiglu", "gelu"):
        rec = recs.get((mlp, "full"))
        if rec is None:
            continue
        for n, v in (rec["result"].get("channel_absmax") or {}).items():
            v = np.asarray(v)
            top = np.argsort(v)[::-1][:3]
            rows.append(
                {
                    "model": mlp,
                    "layer": n,
                    "max/median": round(float(v.max() / max(np.median(v), 1e-12)), 1),
                    "top channels": ", ".join(str(int(t)) for t in top),
                }
            )
    return rows


def _sqnr_table(recs) -> list[dict]:
    rows = []
    for mlp in ("swiglu", "gelu"):
        rec = recs.get((mlp, "full"))
        an = rec["result"].get("gemm_sqnr") if rec else None
        for layer, per in (an or {}).items():
            row = {"model": mlp, "layer": layer}
            for s in ANALYSIS_SCHEMES:
                v = per[s]
                row[s] = f"{v['Y']:.1f} / {v['dX']:.1f} / {v['dW']:.1f}"
            row["fallback rate"] = f"{100 * per['int8_fallback']['rate']:.2f}%"
            rows.append(row)
    return rows


def _scheme_table(recs, base_key) -> list[dict]:
    rows = []
    for (mlp, s), rec in recs.items():
        res = rec["result"]
        layers = res["layers_last_window"]
        saved = sum(v["saved_bytes"] for v in layers.values()) if layers else None
        bf16 = sum(v["bf16_bytes"] for v in layers.values()) if layers else None
        full = recs.get((mlp, "full"), recs[base_key])["result"]["final_val"]
        rel = _rel(res["final_val"], full)
        rows.append(
            {
                "model": mlp,
                "scheme": _label(s),
                "final val loss": _fmt(res["final_val"]),
                "vs full": "-" if rel is None else f"{100 * rel:+.2f}%",
                "fallback rate (mean)": "-"
                if _mean_rate(rec) is None
                else f"{100 * _mean_rate(rec):.2f}%",
                "saved X (INT8 / BF16)": "-" if not saved else f"{saved / bf16:.3f}",
                "train s": round(res["train_seconds"], 1),
            }
        )
    return rows


# --------------------------------------------------------------------------------------
# Experiments
# --------------------------------------------------------------------------------------


# the quick presets' model: 2 layers of width 64, context 64 (seconds per run on 2 cores)
QUICK_MODEL = dict(n_layer=2, n_heads=2, head_dim=32, block_size=64, batch_size=16, eval_batches=4)


@experiment(
    "fallback/pretrain",
    FallbackRunConfig,
    presets={
        "quick": dict(QUICK_MODEL, steps=150, eval_every=25),
        "full": dict(
            alternatives=("fallback:crest:12", "fallback:topk:0.05", "fallback:relative:4"),
        ),
    },
    summary="Pretrain a Llama-style SwiGLU LM (and a GELU control) on the Python docs in full precision, per-tensor INT8, block INT8 and block INT8 with 16-bit fallback.",
)
def pretrain(cfg: FallbackRunConfig, ctx: RunContext) -> Result:
    recs = _run(cfg, ctx, {}, "pretrain runs")
    return _summarize(cfg, ctx, recs, "pretrain", finetune=False)


@experiment(
    "fallback/finetune",
    FinetuneConfig,
    presets={
        "quick": dict(QUICK_MODEL, pretrain_steps=150, steps=60, eval_every=20),
        "full": dict(),
    },
    summary="Fine-tune a full-precision pretrained LM on the Python docs' What's New pages with each INT8 scheme.",
)
def finetune(cfg: FinetuneConfig, ctx: RunContext) -> Result:
    extra = dict(domain=cfg.domain, pretrain_steps=cfg.pretrain_steps)
    recs = _run(cfg, ctx, extra, "finetune runs")
    return _summarize(cfg, ctx, recs, "finetune", finetune=True)


def _summarize(cfg, ctx: RunContext, recs: dict, what: str, finetune: bool) -> Result:
    reused = recs.pop("_reused")
    full = recs[("swiglu", "full")]["result"]["final_val"]
    blk = recs.get(("swiglu", "int8_block"))
    fb = recs.get(("swiglu", "int8_fallback"))
    tol = cfg.tolerance
    claims, metrics = [], {"full_val_loss": full, "runs": len(recs), "runs_reused": reused}
    figures = [_loss_figure(ctx, recs, cfg, what, f"{what}_loss")]
    if fb is not None and fb["result"]["layers_last_window"]:
        figures.append(_fallback_figure(ctx, fb, f"{what}_fallback_rate"))
    if not finetune:
        figures.append(_outlier_figure(ctx, recs, f"{what}_outliers"))
    for key, rec in recs.items():
        metrics[f"{key[0]}_{key[1]}_val_loss"] = rec["result"]["final_val"] or float("nan")
    if blk is not None:
        b = blk["result"]["final_val"]
        rel = _rel(b, full)
        claims.append(
            Claim.check(
                "int8-block-degrades",
                f"Block-wise INT8 {'fine-tuning' if finetune else 'training'} (no fallback) "
                "degrades or diverges on a GLU model",
                "diverged"
                if b is None
                else f"SwiGLU: block INT8 val loss {b:.4f} vs full {full:.4f} ({100 * rel:+.2f}%)",
                b is None or rel > tol,
                f"degrades = more than {100 * tol:g}% above full precision",
            )
        )
    if fb is not None:
        f = fb["result"]["final_val"]
        rel = _rel(f, full)
        rate = _mean_rate(fb)
        metrics["fallback_rate"] = rate if rate is not None else float("nan")
        ok = f is not None and abs(rel) <= tol and rate is not None and rate <= cfg.few_percent
        paper = (
            "With fallback, INT8 fine-tuning matches full precision"
            if finetune
            else "With fallback, the final validation loss is within 1% of full precision at a "
            "fallback rate of a few percent"
        )
        claims.append(
            Claim.check(
                "fallback-matches-full",
                paper,
                "diverged"
                if f is None
                else f"fallback val loss {f:.4f} vs full {full:.4f} ({100 * rel:+.2f}%), "
                f"mean fallback rate {100 * (rate or 0):.2f}% of blocks",
                ok,
                f"within {100 * tol:g}% and a rate <= {100 * cfg.few_percent:g}%",
            )
        )
    ctrl_full, ctrl_blk = recs.get(("gelu", "full")), recs.get(("gelu", "int8_block"))
    if ctrl_full is not None and ctrl_blk is not None:
        a, b = ctrl_full["result"]["final_val"], ctrl_blk["result"]["final_val"]
        rel = _rel(b, a)
        claims.append(
            Claim.check(
                "gelu-control",
                "Control: on a GELU-MLP (GPT-2-like) model plain block INT8 already works",
                "diverged"
                if b is None
                else f"GELU: block INT8 {b:.4f} vs full {a:.4f} ({100 * rel:+.2f}%)",
                b is not None and abs(rel) <= tol,
                f"works = within {100 * tol:g}% of full precision",
            )
        )
    tables = {"schemes": _scheme_table(recs, ("swiglu", "full"))}
    if finetune:
        tables["schemes"] = [
            {**row, "val before fine-tune": _fmt(recs[("swiglu", "full")]["result"]["start_val"])}
            for row in tables["schemes"]
        ]
    else:
        tables["outlier channels"] = _outlier_table(recs)
    sq = _sqnr_table(recs)
    if sq:
        tables["GEMM SQNR on the trained model's real tensors (dB: Y / dX / dW)"] = sq
        for mlp in ("swiglu", "gelu"):
            for s in ANALYSIS_SCHEMES:
                vals = [r[s] for r in sq if r["model"] == mlp]
                if vals:
                    metrics[f"{mlp}_{s}_min_sqnr_db"] = min(
                        min(float(v) for v in x.split(" / ")) for x in vals
                    )
    if fb is not None and fb["result"]["layers_last_window"]:
        tables["fallback by layer (last eval window)"] = [
            {
                "layer": n,
                "X rate": f"{100 * s['x_rate']:.2f}%",
                "dY rate": f"{100 * s['dy_rate']:.2f}%",
            }
            for n, s in fb["result"]["layers_last_window"].items()
        ]
    notes = (
        f"Corpus: {cfg.corpus}; BPE vocab {cfg.vocab_size}; LM {cfg.n_layer} layers x "
        f"{cfg.n_heads} heads x {cfg.head_dim}, context {cfg.block_size}, batch {cfg.batch_size}, "
        f"{cfg.steps} steps, AdamW lr {cfg.lr} cosine. Blocks {tuple(cfg.block)}, rule "
        f"{cfg.rule} > {cfg.threshold}. INT8 numerics emulated exactly on the CPU "
        "(tenfold.fallback._ref); the tied lm_head stays in fp32."
    )
    if finetune:
        notes += (
            f" Pretrained {cfg.pretrain_steps} steps in fp32 on every document but "
            f"{cfg.domain!r}, fine-tuned on {cfg.domain!r} (validation: held-out pages)."
        )
    return Result(metrics=metrics, claims=claims, tables=tables, figures=figures, notes=notes)
