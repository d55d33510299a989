"""``attention/accuracy``: every low-bit variant and the paper's ablations against float64
attention, on inputs captured from trained models and on synthetic ones
(:mod:`.capture`); the reference numerics of :mod:`tenfold.attention._ref` (on the CPU this
measures accuracy, not speed)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ...core.experiment import Claim, Result, RunContext, experiment
from ...core.tasks.plotting import pyplot
from .. import _ref as R
from .capture import SOURCE_NAMES, capture_sources

# the variants, then the ablations (name, base variant, Numerics overrides)
ABLATIONS = [
    ("NVFP4 (E4M3 scale / 16)", "fp4_nvfp4", {}),
    ("MXFP4 (E8M0 scale / 32)", "fp4_mxfp4", {}),
    ("NVFP4, P two-level", "fp4_nvfp4", {}),
    ("NVFP4, P direct", "fp4_nvfp4", {"p_two_level": False}),
    ("NVFP4, no smoothing", "fp4_nvfp4", {"smooth": "none"}),
    ("NVFP4, smooth K", "fp4_nvfp4", {"smooth": "k"}),
    ("NVFP4, smooth Q+K", "fp4_nvfp4", {}),
    ("INT8/FP8, no smoothing", "qk_int8_pv_fp8", {"smooth": "none"}),
    ("INT8/FP8, smooth K", "qk_int8_pv_fp8", {}),
]
FWD_VARIANTS = ("qk_int8_pv_fp8", "qk_int8_pv_fp16", "int8_train", "fp4_nvfp4", "fp4_mxfp4")


def _errors(o: torch.Tensor, ex: torch.Tensor) -> dict[str, float]:
    o, ex = o.double(), ex.double()
    cos = F.cosine_similarity(o.flatten(), ex.flatten(), dim=0)
    return {
        "cos": float(cos),
        "rel_l1": float((o - ex).abs().sum() / ex.abs().sum()),
        "rmse": float((o - ex).pow(2).mean().sqrt()),
    }


def _mean(ms: list[dict]) -> dict[str, float]:
    out = {k: float(np.mean([m[k] for m in ms])) for k in ms[0]}
    out["min_cos"] = float(min(m["cos"] for m in ms))
    return out


def forward_accuracy(calls: list[dict], num: R.Numerics) -> dict[str, float]:
    """Errors of one numerics against float64, averaged over the captured layers."""
    ms = []
    for c in calls:
        causal = "bottom_right" if c["causal"] else None
        if "exact" not in c:  # float64 attention once per layer, for every variant after
            c["exact"] = R.attention_exact(c["q"], c["k"], c["v"], causal=causal)
        o, _ = R.attention_fwd(c["q"], c["k"], c["v"], num, causal=causal)
        ms.append(_errors(o, c["exact"]))
    return _mean(ms)


def backward_accuracy(calls: list[dict], num: R.Numerics) -> dict[str, float]:
    """cos-sim of SageBwd's O, dQ, dK, dV against float64, averaged over the layers."""
    out: dict[str, list[float]] = {"O": [], "dQ": [], "dK": [], "dV": []}
    for c in calls:
        causal = "bottom_right" if c["causal"] else None
        xs = [c[n].clone().requires_grad_() for n in "qkv"]
        o = R.Int8TrainAttention.apply(*xs, num, None, None, causal)
        o.backward(c["do"])
        es = [c[n].double().requires_grad_() for n in "qkv"]
        oe = R.attention_exact(*es, causal=causal)
        oe.backward(c["do"].double())
        out["O"].append(_errors(o.detach(), oe.detach())["cos"])
        for name, a, b in zip(("dQ", "dK", "dV"), xs, es):
            out[name].append(_errors(a.grad, b.grad)["cos"])
    return {k: float(np.mean(v)) for k, v in out.items()}


@dataclass(frozen=True)
class Measured:
    """Errors against float64 per source: ``fwd[source][variant]`` and
    ``abl[source][ablation]`` (cos, rel_l1, rmse, min_cos), ``bwd[source][setting]`` (cos-sim
    of O, dQ, dK, dV)."""

    fwd: dict[str, dict[str, dict[str, float]]]
    abl: dict[str, dict[str, dict[str, float]]]
    bwd: dict[str, dict[str, dict[str, float]]]

    @property
    def names(self) -> list[str]:
        return list(self.fwd)

    def cos(self, source: str, ablation: str) -> float:
        return self.abl[source][ablation]["cos"]


def measure(srcs: dict[str, list[dict]]) -> Measured:
    """Every variant, ablation and SageBwd setting on every source."""
    bwd_num = R.VARIANTS["int8_train"]
    return Measured(
        fwd={
            s: {v: forward_accuracy(c, R.VARIANTS[v]) for v in FWD_VARIANTS}
            for s, c in srcs.items()
        },
        abl={
            s: {a: forward_accuracy(c, R.numerics(v, **kw)) for a, v, kw in ABLATIONS}
            for s, c in srcs.items()
        },
        bwd={
            s: {
                "dP in 16-bit (SageBwd)": backward_accuracy(c, bwd_num),
                "dP in INT8 (ablation)": backward_accuracy(c, replace(bwd_num, bwd_dp="int8")),
            }
            for s, c in srcs.items()
        },
    )


@dataclass(frozen=True)
class AccuracyConfig:
    n_heads: int = 4
    head_dim: int = 64
    dit_depth: int = 4
    dit_patch: int = 2  # 16x16 digits: 64 tokens at patch 2, 256 at patch 1 (~10x slower)
    dit_steps: int = 1500
    corpus: str = "python-docs"
    vocab_size: int = 2048
    lm_layers: int = 4
    lm_context: int = 256
    lm_steps: int = 1000
    capture_batch: int = 8
    synthetic_tokens: int = 2048
    outlier_scale: float = 5.0
    long_tokens: int = 4096
    long_score_std: float = 2.5
    sources: tuple[str, ...] = ("dit", "lm", "outliers", "long")

    def __post_init__(self):
        for name in ("n_heads", "head_dim", "dit_depth", "dit_patch", "lm_layers", "lm_context"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head_dim % 32:
            raise ValueError(
                f"head_dim must be a multiple of 32 (MXFP4 groups), got {self.head_dim}"
            )
        if 16 % self.dit_patch:
            raise ValueError(f"dit_patch must divide 16, got {self.dit_patch}")
        bad = set(self.sources) - set(SOURCE_NAMES)
        if bad or not self.sources:
            raise ValueError(f"sources must be among {', '.join(SOURCE_NAMES)}; got {self.sources}")
        if min(self.synthetic_tokens, self.long_tokens) < 64:
            raise ValueError("synthetic_tokens and long_tokens must be >= 64")
        if self.outlier_scale <= 0 or self.long_score_std <= 0:
            raise ValueError("outlier_scale and long_score_std must be > 0")


def _bar_figure(ctx, table: dict, rows: list[str], title: str, name: str):
    plt = pyplot()
    srcs = list(table)
    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(rows) + 3), 4))
    w = 0.8 / len(srcs)
    for i, s in enumerate(srcs):
        vals = [max(1 - table[s][r]["cos"], 1e-7) for r in rows]
        ax.bar(np.arange(len(rows)) + i * w, vals, w, label=SOURCE_NAMES[s])
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(rows)) + w * (len(srcs) - 1) / 2, rows, rotation=25, ha="right")
    ax.set_ylabel("1 - cos-sim vs float64 (log; lower is better)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return ctx.figure(fig, name)


@experiment(
    "attention/accuracy",
    AccuracyConfig,
    presets={
        "quick": dict(
            dit_steps=150,
            dit_depth=2,
            lm_layers=2,
            lm_context=128,
            lm_steps=100,
            capture_batch=4,
            synthetic_tokens=512,
            long_tokens=2048,
        ),
        "full": dict(),
    },
    summary="Accuracy of every low-bit attention variant and the paper's ablations against float64, on attention captured from a trained DiT and LM and on synthetic outlier inputs.",
)
def accuracy(cfg: AccuracyConfig, ctx: RunContext) -> Result:
    srcs, capture_s = capture_sources(cfg, ctx)
    m = measure(srcs)
    metrics: dict = {"capture_seconds": capture_s}
    for s in srcs:
        for v, e in m.fwd[s].items():
            metrics[f"{s}_{v}_cos"] = e["cos"]
        for k, val in m.bwd[s]["dP in 16-bit (SageBwd)"].items():
            metrics[f"{s}_int8_train_{k}_cos"] = val
    figures = [
        _bar_figure(ctx, m.fwd, list(FWD_VARIANTS), "attention variants vs float64", "variants"),
        _bar_figure(ctx, m.abl, [a for a, _, _ in ABLATIONS], "the paper's ablations", "ablations"),
    ]
    notes = (
        f"DiT: depth {cfg.dit_depth}, {cfg.n_heads} heads x {cfg.head_dim}, 16x16 digits at "
        f"patch {cfg.dit_patch}, {cfg.dit_steps} EDM steps; inputs: {cfg.capture_batch} noised "
        f"training digits, dO of the denoising loss. LM: {cfg.lm_layers} layers, {cfg.n_heads} heads x "
        f"{cfg.head_dim}, context {cfg.lm_context}, {cfg.lm_steps} steps on {cfg.corpus}; "
        f"inputs: a validation batch, dO of the next-token loss (causal). Synthetic outliers: "
        f"{cfg.synthetic_tokens} tokens, outlier scale {cfg.outlier_scale}; long diffuse: "
        f"{cfg.long_tokens} tokens, score std {cfg.long_score_std}. Reference numerics "
        "(tenfold.attention._ref) in float32 vs float64 exact attention; metrics are means over "
        "layers."
    )
    return Result(
        metrics=metrics,
        claims=_claims(m),
        tables=_tables(m, srcs),
        figures=figures,
        notes=notes,
    )


def _k_offset(calls: list[dict]) -> float:
    # how far K sits from zero per channel: what K smoothing removes
    return float(
        max((c["k"].mean(-2).abs() / c["k"].std(-2).clamp_min(1e-6)).amax().item() for c in calls)
    )


def _claims(m: Measured) -> list[Claim]:
    """The paper's accuracy claims, judged on every source."""
    fwd, bwd, names = m.fwd, m.bwd, m.names

    def per_src(fn) -> str:
        return "; ".join(f"{SOURCE_NAMES[s]}: {fn(s)}" for s in names)

    c = m.cos

    return [
        Claim.check(
            "nvfp4-beats-mxfp4",
            "NVFP4 (E4M3 scale per 16) is more accurate than MXFP4 (E8M0 per 32): cos-sim "
            "99.52% vs 98.37% on CogVideoX",
            per_src(
                lambda s: (
                    f"{100 * c(s, ABLATIONS[0][0]):.2f}% vs {100 * c(s, ABLATIONS[1][0]):.2f}%"
                )
            ),
            all(c(s, ABLATIONS[0][0]) > c(s, ABLATIONS[1][0]) for s in names),
            "holds when NVFP4 beats MXFP4 on every source",
        ),
        Claim.check(
            "two-level-p",
            "Two-level quantization of P beats direct FP4 quantization: 99.52% vs 93.32%",
            per_src(
                lambda s: (
                    f"{100 * c(s, 'NVFP4, P two-level'):.2f}% vs "
                    f"{100 * c(s, 'NVFP4, P direct'):.2f}%"
                )
            ),  # fmt: skip
            all(c(s, "NVFP4, P two-level") > c(s, "NVFP4, P direct") for s in names),
            "holds when two-level wins on every source",
        ),
        Claim.check(
            "smoothing-qk",
            "Smoothing Q and K makes FP4 attention accurate: cos-sim 0.996 vs 0.916 without",
            per_src(
                lambda s: (
                    f"none {c(s, 'NVFP4, no smoothing'):.4f}, K "
                    f"{c(s, 'NVFP4, smooth K'):.4f}, Q+K {c(s, 'NVFP4, smooth Q+K'):.4f}"
                )
            ),  # fmt: skip
            all(
                c(s, "NVFP4, smooth Q+K") >= c(s, "NVFP4, smooth K") - 1e-4
                and c(s, "NVFP4, smooth Q+K") > c(s, "NVFP4, no smoothing")
                for s in names
            ),
            "holds when Q+K beats none and is no worse than K alone, on every source",
        ),
        Claim.check(
            "int8-plug-and-play",
            "8-bit attention (INT8 QK, FP8 PV; SageAttention2) is accurate enough for "
            "plug-and-play inference: cos-sim >= 0.999",
            per_src(
                lambda s: (
                    f"{fwd[s]['qk_int8_pv_fp8']['cos']:.5f} "
                    f"(min layer {fwd[s]['qk_int8_pv_fp8']['min_cos']:.5f})"
                )
            ),  # fmt: skip
            all(fwd[s]["qk_int8_pv_fp8"]["min_cos"] >= 0.999 for s in names),
            "every layer of every source >= 0.999",
        ),
        Claim.check(
            "sagebwd-gradients",
            "SageBwd: O and dV stay accurate (0.997, 0.999) while dQ and dK lose most "
            "(0.966, 0.954)",
            per_src(
                lambda s: ", ".join(
                    f"{k} {v:.4f}" for k, v in bwd[s]["dP in 16-bit (SageBwd)"].items()
                )
            ),  # fmt: skip
            all(
                min(bwd[s]["dP in 16-bit (SageBwd)"][k] for k in ("O", "dV"))
                >= min(bwd[s]["dP in 16-bit (SageBwd)"][k] for k in ("dQ", "dK"))
                for s in names
            ),
            "holds when min(O, dV) >= min(dQ, dK) on every source",
        ),
        Claim.check(
            "dp-16bit",
            "Keeping dP = dO V^T in 16-bit matters: quantizing it hurts dQ and dK",
            per_src(
                lambda s: (
                    f"dQ {bwd[s]['dP in 16-bit (SageBwd)']['dQ']:.4f} vs "
                    f"{bwd[s]['dP in INT8 (ablation)']['dQ']:.4f}, dK "
                    f"{bwd[s]['dP in 16-bit (SageBwd)']['dK']:.4f} vs "
                    f"{bwd[s]['dP in INT8 (ablation)']['dK']:.4f}"
                )
            ),
            all(
                bwd[s]["dP in 16-bit (SageBwd)"][k] > bwd[s]["dP in INT8 (ablation)"][k]
                for s in names
                for k in ("dQ", "dK")
            ),
            "holds when 16-bit dP gives better dQ and dK on every source",
        ),
    ]


def _tables(m: Measured, srcs: dict[str, list[dict]]) -> dict[str, list[dict]]:
    fwd, bwd, names, c = m.fwd, m.bwd, m.names, m.cos
    return {
        "variants (mean over layers; cos / rel L1 / RMSE vs float64)": [
            {"variant": v}
            | {
                SOURCE_NAMES[s]: f"{fwd[s][v]['cos']:.5f} / {fwd[s][v]['rel_l1']:.4f} / "
                f"{fwd[s][v]['rmse']:.2e}"
                for s in names
            }
            for v in FWD_VARIANTS
        ],
        "ablations (cos-sim vs float64)": [
            {"setting": a} | {SOURCE_NAMES[s]: f"{c(s, a):.5f}" for s in names}
            for a, _, _ in ABLATIONS
        ],
        "SageBwd gradients (cos-sim vs float64)": [
            {"source": SOURCE_NAMES[s], "backward": b} | {k: f"{v:.4f}" for k, v in m.items()}
            for s in names
            for b, m in bwd[s].items()
        ],
        "captured inputs": [
            {
                "source": SOURCE_NAMES[s],
                "layers": len(cs),
                "shape (B, H, T, D)": str(tuple(cs[0]["q"].shape)),
                "causal": cs[0]["causal"],
                "max |K channel mean| / K std": f"{_k_offset(cs):.2f}",
            }
            for s, cs in srcs.items()
        ],
    }
