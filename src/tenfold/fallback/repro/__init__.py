"""Reproductions of arXiv 2503.08040 (fallback quantization) at CPU scale.

* ``fallback/pretrain`` (:mod:`.pretrain`) -- a Llama-style SwiGLU LM pretrained from scratch on real English
  text (the Python documentation, Debian's python3-doc) in full precision, per-tensor INT8,
  block INT8 and block INT8 with 16-bit fallback; a GELU-MLP (GPT-2-like) control in full
  precision and block INT8. Loss curves, fallback rates by layer and over time, and where
  the outliers sit.
* ``fallback/finetune`` (:mod:`.finetune`) -- the same LM pretrained in full precision on every document but
  the "What's New" pages, then fine-tuned on those pages with each scheme.

INT8 runs use the exact numerics of :mod:`tenfold.fallback._ref` (fp32 elsewhere), so on the
CPU they measure accuracy, not speed. Each run is one point of :func:`run_sweep`: runs go in
parallel worker processes and a rerun reuses finished ones.
"""

from . import finetune, pretrain
from .runs import SCHEME_NAMES, FallbackRunConfig, FinetuneConfig, scheme_config, train_run

__all__ = [
    "SCHEME_NAMES",
    "FallbackRunConfig",
    "FinetuneConfig",
    "finetune",
    "pretrain",
    "scheme_config",
    "train_run",
]
