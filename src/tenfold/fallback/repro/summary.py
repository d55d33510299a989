"""Tables, figures and claims of a finished set of fallback runs (both experiments)."""

from __future__ import annotations

import math

import numpy as np

from ...core.experiment import Claim, Result, RunContext, two_se
from ...core.tasks.plotting import plot_run, pyplot
from .runs import ANALYSIS_SCHEMES, SCHEME_NAMES


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


def summarize(cfg, ctx: RunContext, recs: dict, what: str, finetune: bool) -> Result:
    """The Result of a finished set of runs (``recs`` from :func:`.runs.run_schemes`)."""
    reused = recs.pop("_reused")
    seeds = recs.pop("_noise")
    full = recs[("swiglu", "full")]["result"]["final_val"]
    blk = recs.get(("swiglu", "int8_block"))
    fb = recs.get(("swiglu", "int8_fallback"))
    tol = cfg.tolerance
    n_runs = len(recs) + sum(len(v) - 1 for v in seeds.values())  # + the noise seeds
    claims, metrics = [], {"full_val_loss": full, "runs": n_runs, "runs_reused": reused}
    figures = [_loss_figure(ctx, recs, cfg, what, f"{what}_loss")]
    if fb is not None and fb["result"]["layers_last_window"]:
        figures.append(_fallback_figure(ctx, fb, f"{what}_fallback_rate"))
    if not finetune:
        figures.append(_outlier_figure(ctx, recs, f"{what}_outliers"))
    for key, rec in recs.items():
        metrics[f"{key[0]}_{key[1]}_val_loss"] = rec["result"]["final_val"] or float("nan")

    def seed_noise(mlp: str) -> tuple[float, str]:
        """The seed-to-seed noise of a relative loss gap (%): 2 standard errors of full
        precision's final loss over its seeds, relative to their mean."""
        vals = [v for v in seeds.get(mlp, []) if v is not None]
        n = len(seeds.get(mlp, []))
        metrics[f"{mlp}_full_val_loss_seeds"] = vals
        if n < 2 or len(vals) < n:
            return math.inf, "one seed of full precision: seed noise not measured"
        return 100 * two_se(vals) / float(np.mean(vals)), (
            f"2 standard errors of full precision's final validation loss over {n} seeds (relative)"
        )

    def gap(b):  # % above full precision; a diverged run is an infinite gap
        return math.inf if b is None else 100 * _rel(b, full)

    phase = "fine-tuning" if finetune else "pretraining"
    noise, how = seed_noise("swiglu")
    metrics["seed_noise_pct"] = noise
    if blk is not None:
        b = blk["result"]["final_val"]
        claims.append(
            Claim.judge(
                "int8-block-degrades",
                '"[INT8 training] struggles with modern Transformer variants incorporating GLU '
                f'units": block-wise INT8 {phase} (no fallback) of a SwiGLU LM ends more than '
                f"{100 * tol:g}% above full precision",
                source="abstract",
                values=gap(b),
                margin=100 * tol,
                noise=noise,
                noise_from=how,
                unit="% val loss vs full",
                measured="diverged"
                if b is None
                else f"SwiGLU: block INT8 val loss {b:.4f} vs full {full:.4f} ({gap(b):+.2f}%)",
            )  # fmt: skip
        )
    if fb is not None:
        f = fb["result"]["final_val"]
        rate = _mean_rate(fb)
        metrics["fallback_rate"] = rate if rate is not None else float("nan")
        claims.append(
            Claim.judge(
                "fallback-matches-full",
                '"Experiments show that our approach is robustly competent in both fine-tuning '
                f'and pretraining settings": with fallback, INT8 {phase} ends within '
                f"{100 * tol:g}% of full precision",
                source="abstract",
                values=abs(gap(f)),
                margin=100 * tol,
                sense="below",
                noise=noise,
                noise_from=how,
                unit="% |val loss gap| vs full",
                measured="diverged"
                if f is None
                else f"fallback val loss {f:.4f} vs full {full:.4f} ({gap(f):+.2f}%), mean "
                f"fallback rate {100 * (rate or 0):.2f}% of blocks",
            )  # fmt: skip
        )
        ot = fb["result"]["fallback_over_time"]
        rates = [100 * o["rate"] for o in ot]
        claims.append(
            Claim.judge(
                "fallback-rare",
                f"Fallback stays rare: under {100 * cfg.rare:g}% of the activation blocks fall "
                "back to 16-bit, so nearly all of the GEMM work stays in INT8 (ours: the "
                "condition for the paper's 1.57x speed-up)",
                source="ours",
                values=rates if len(rates) > 1 else (rates or [math.nan]),
                noise=None if len(rates) > 1 else math.inf,
                margin=100 * cfg.rare,
                sense="below",
                unit="% of blocks",
                noise_from=f"2 standard errors over the {len(rates)} evaluation windows",
                measured=f"mean fallback rate {100 * (rate or 0):.2f}% over {len(rates)} windows"
                + (f" (highest {max(rates):.2f}%)" if rates else ""),
            )  # fmt: skip
        )
    ctrl_full, ctrl_blk = recs.get(("gelu", "full")), recs.get(("gelu", "int8_block"))
    if ctrl_full is not None and ctrl_blk is not None:
        a, b = ctrl_full["result"]["final_val"], ctrl_blk["result"]["final_val"]
        rel = math.inf if a is None or b is None else 100 * abs(_rel(b, a))
        gnoise, ghow = seed_noise("gelu")
        claims.append(
            Claim.judge(
                "gelu-control",
                '"Low-bit training, such as INT8 training, ... has already demonstrated its '
                'effectiveness on GPT2 models with block-level quantization": on a GELU-MLP '
                f"(GPT-2-like) model, plain block INT8 ends within {100 * tol:g}% of full "
                "precision",
                source="abstract",
                values=rel,
                margin=100 * tol,
                sense="below",
                noise=gnoise,
                noise_from=ghow,
                unit="% |val loss gap| vs full",
                measured="diverged"
                if b is None or a is None
                else f"GELU: block INT8 {b:.4f} vs full {a:.4f} ({100 * _rel(b, a):+.2f}%)",
            )  # fmt: skip
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
