"""``fallback/pretrain``: the LM pretrained from scratch on the Python docs with each scheme
(full precision, per-tensor INT8, block INT8, block INT8 with 16-bit fallback) and a
GELU-MLP control in full precision and block INT8."""

from __future__ import annotations

from ...core.experiment import Result, RunContext, experiment
from .runs import QUICK_MODEL, FallbackRunConfig, run_schemes
from .summary import summarize


@experiment(
    "fallback/pretrain",
    FallbackRunConfig,
    presets={
        "quick": dict(QUICK_MODEL, steps=150, eval_every=25),
        "full": dict(
            alternatives=("fallback:crest:12", "fallback:topk:0.05", "fallback:relative:4"),
        ),
    },
    gpu="INT8 GEMM speed (the paper's 1.57x on RTX 4090); this run emulates the INT8 numerics exactly",
    summary="Pretrain a Llama-style SwiGLU LM (and a GELU control) on the Python docs in full precision, per-tensor INT8, block INT8 and block INT8 with 16-bit fallback.",
)
def pretrain(cfg: FallbackRunConfig, ctx: RunContext) -> Result:
    recs = run_schemes(cfg, ctx, {}, "pretrain runs")
    return summarize(cfg, ctx, recs, "pretrain", finetune=False)
