"""``requant/ptq``: held-out perplexity of tenfold's Python-docs LM quantized by each base
quantizer at each bit width, with and without ReQuant, and the paper's ablation.

Every linear layer but the readout is quantized. ReQuant uses one setting for every base
(``outlier_ratio`` self-adaptive, ``significant_ratio`` in ``steps`` PQI steps), and the
bits per weight it adds are reported beside each row. The noise of each comparison is the
spread over ``calib_seeds`` calibration sets (different windows of the training text); the
held-out windows are fixed."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from ...core.experiment import Claim, Result, RunContext, experiment
from ...core.validate import ConfigError, check_config
from ..api import RequantConfig, quantize_
from ..peers import PEERS, peer_rows
from ..qlinear import model_bits_per_weight
from ..sensitivity import mean_loss
from .models import FULL_LM, QUICK_LM, pretrained, windows

BASES = ("rtn", "gptq", "awq", "squeezellm")

# the paper's ablation (SqueezeLLM, Llama-3.2-1B): name -> RequantConfig overrides
ABLATION = {
    "full": {},
    "no detach": dict(significant_ratio=0.0),
    "base rule": dict(adaptive=False),
    "detach only": dict(outlier_ratio=0.0),
    "neither": dict(outlier_ratio=0.0, significant_ratio=0.0),
    "random": dict(random_picks=True),
}


@dataclass(frozen=True)
class PTQConfig:
    n_layer: int = 4
    n_heads: int = 4
    head_dim: int = 32
    block_size: int = 128
    pretrain_steps: int = 3000
    bases: tuple[str, ...] = BASES
    bits: tuple[int, ...] = (2, 3, 4)
    group_size: int = 64
    outlier_ratio: float = 0.0025
    significant_ratio: float = 0.0005
    steps: int = 2
    pqi_points: int = 8
    calib: int = 32
    calib_seeds: int = 2
    eval_windows: int = 64
    ablation_base: str = "squeezellm"
    ablation_bits: int = 3
    peers: tuple[str, ...] = PEERS
    seed: int = 0

    def __post_init__(self):
        check_config(
            self, n_layer=">=1", n_heads=">=1", head_dim=">=2", block_size=">=2",
            pretrain_steps=">=1", bases=BASES, bits="[2,8] unique",
            group_size=">=1", outlier_ratio="[0,0.5)", significant_ratio="[0,0.5)",
            steps=">=1", pqi_points=">=1", calib=">=1", calib_seeds="[2,16]",
            eval_windows=">=1", ablation_base=BASES, ablation_bits="[2,8]", seed=">=0",
            peers=PEERS if self.peers else "empty",
        )  # fmt: skip
        if len(set(self.bases)) != len(self.bases):
            raise ConfigError(f"PTQConfig.bases must not repeat a base, got {self.bases}")


def _ppl(model, val) -> float:
    return math.exp(mean_loss(model, val))


def _quantized(model, calib, cfg: PTQConfig, base: str, bits: int, requant: bool, **over):
    rq = dict(outlier_ratio=cfg.outlier_ratio, significant_ratio=cfg.significant_ratio)
    rc = RequantConfig(
        base=base, bits=bits, group_size=cfg.group_size, steps=cfg.steps,
        pqi_points=cfg.pqi_points, calib_size=calib.shape[0], seed=cfg.seed,
        **({**rq, **over} if requant else {}),
    )  # fmt: skip
    m = copy.deepcopy(model)
    quantize_(m, rc, calib)
    return m


@experiment(
    "requant/ptq",
    PTQConfig,
    presets={
        "quick": dict(
            QUICK_LM,
            bits=(2,),
            ablation_bits=2,
            group_size=32,
            calib=16,
            eval_windows=32,
            pqi_points=4,
        ),  # fmt: skip
        "full": dict(FULL_LM),
    },
    summary="Held-out perplexity of the Python-docs LM quantized with RTN, GPTQ, AWQ and SqueezeLLM at 2-4 bits, with and without ReQuant, bits/weight beside; the paper's ablation.",
)
def ptq(cfg: PTQConfig, ctx: RunContext) -> Result:
    model, base = pretrained(cfg, progress=ctx.progress)
    val = list(windows(base.val, cfg.eval_windows, cfg.block_size, 4321).split(16))
    fp_ppl = _ppl(model, val)
    calibs = [windows(base.train, cfg.calib, cfg.block_size, cfg.seed + 100 + s)
              for s in range(cfg.calib_seeds)]  # fmt: skip
    rows, claims = [], []
    for b in cfg.bases:
        for bits in cfg.bits:
            ppl_b, ppl_r, bpw_b, bpw_r = [], [], [], []
            for s, calib in enumerate(calibs):
                ctx.log(f"{b} {bits}-bit, calibration set {s + 1}/{len(calibs)}")
                mb = _quantized(model, calib, cfg, b, bits, requant=False)
                mr = _quantized(model, calib, cfg, b, bits, requant=True)
                ppl_b.append(_ppl(mb, val))
                ppl_r.append(_ppl(mr, val))
                bpw_b.append(model_bits_per_weight(mb))
                bpw_r.append(model_bits_per_weight(mr))
            rows.append({
                "base": b, "bits": bits, "ppl": sum(ppl_b) / len(ppl_b),
                "ppl_requant": sum(ppl_r) / len(ppl_r),
                "bits_per_weight": sum(bpw_b) / len(bpw_b),
                "bits_per_weight_requant": sum(bpw_r) / len(bpw_r),
                "per_calib": [round(x, 4) for x in ppl_b],
                "per_calib_requant": [round(x, 4) for x in ppl_r],
            })  # fmt: skip
            extra = rows[-1]["bits_per_weight_requant"] - rows[-1]["bits_per_weight"]
            claims.append(Claim.judge(
                f"requant-improves-{b}-{bits}bit",
                f"ReQuant improves {b} at {bits} bits (held-out perplexity falls), at "
                f"{extra:+.3f} bits/weight",
                source="abstract", values=[x - y for x, y in zip(ppl_b, ppl_r)], margin=0.0,
                sense="above", unit="perplexity",
                noise_from="2 standard errors over calibration sets",
                measured=f"{rows[-1]['ppl']:.3f} -> {rows[-1]['ppl_requant']:.3f} "
                f"(full precision {fp_ppl:.3f})",
            ))  # fmt: skip

    # the peers, on the same model, bits and groups (no calibration: no calibration noise)
    peers, missing = peer_rows(model, cfg.peers, cfg.bits, cfg.group_size,
                               lambda m: {"ppl": _ppl(m, val)}, log=ctx.log)  # fmt: skip

    # the ablation, on one base and bit width
    abl = []
    for name, over in ABLATION.items():
        vals = []
        for s, calib in enumerate(calibs):
            ctx.log(f"ablation {name!r}, calibration set {s + 1}/{len(calibs)}")
            m = _quantized(model, calib, cfg, cfg.ablation_base, cfg.ablation_bits, True, **over)
            vals.append(_ppl(m, val))
        abl.append({"variant": name, "ppl": sum(vals) / len(vals),
                    "per_calib": [round(v, 4) for v in vals]})  # fmt: skip
    by = {r["variant"]: r["per_calib"] for r in abl}
    for key, other, what in [
        ("detach-helps", "no detach", "step-wise significant-weight detach"),
        ("adaptive-outliers-help", "base rule", "self-adaptive outlier selection"),
        ("selection-beats-random", "random", "choosing by magnitude and PQI"),
    ]:
        claims.append(Claim.judge(
            key, f"In the ablation, {what} lowers perplexity (full vs '{other}', "
            f"{cfg.ablation_base} at {cfg.ablation_bits} bits)",
            source="paper", values=[o - f for o, f in zip(by[other], by["full"])],
            margin=0.0, sense="above", unit="perplexity",
            noise_from="2 standard errors over calibration sets",
        ))  # fmt: skip
    return Result(
        metrics={"fp_ppl": fp_ppl},
        claims=claims,
        tables={"ptq": rows, "peers": peers, "ablation": abl},
        figures=[ctx.figure(_figure(rows, fp_ppl), "ptq")],
        notes=f"groups of {cfg.group_size} (SqueezeLLM: one codebook per row); ReQuant: "
        f"outliers {cfg.outlier_ratio:.2%} (self-adaptive), significant "
        f"{cfg.significant_ratio:.2%} in {cfg.steps} steps of PQI at N = {cfg.pqi_points}; peers "
        f"(torchao IntxWeightOnlyConfig asymmetric, HQQ PyTorch backend) at the same bits and "
        f"groups" + "".join(f"; not run: {w}" for w in missing),
    )


def _figure(rows, fp_ppl):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [f"{r['base']}\n{r['bits']}b" for r in rows]
    x = torch.arange(len(rows)).float()
    ax.bar(x - 0.2, [r["ppl"] for r in rows], 0.4, label="base")
    ax.bar(x + 0.2, [r["ppl_requant"] for r in rows], 0.4, label="+ ReQuant")
    ax.axhline(fp_ppl, color="k", lw=0.8, ls="--", label="full precision")
    ax.set_xticks(x.tolist(), labels)
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.legend()
    return fig
