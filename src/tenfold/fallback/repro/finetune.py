"""``fallback/finetune``: the LM pretrained in full precision on every document but the
"What's New" pages, then fine-tuned on those pages with each scheme."""

from __future__ import annotations

from ...core.experiment import Result, RunContext, experiment
from .runs import QUICK_MODEL, FinetuneConfig, run_schemes
from .summary import summarize


@experiment(
    "fallback/finetune",
    FinetuneConfig,
    presets={
        "quick": dict(QUICK_MODEL, pretrain_steps=150, steps=60, eval_every=20),
        "full": dict(),
    },
    gpu="INT8 GEMM speed (the paper's 1.57x on RTX 4090); this run emulates the INT8 numerics exactly",
    summary="Fine-tune a full-precision pretrained LM on the Python docs' What's New pages with each INT8 scheme.",
)
def finetune(cfg: FinetuneConfig, ctx: RunContext) -> Result:
    extra = dict(domain=cfg.domain, pretrain_steps=cfg.pretrain_steps)
    recs = run_schemes(cfg, ctx, extra, "finetune runs")
    return summarize(cfg, ctx, recs, "finetune", finetune=True)
