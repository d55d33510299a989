"""Reproductions of arXiv 2505.11594 (SageAttention3 + SageBwd) at CPU scale.

* ``attention/accuracy`` (:mod:`.accuracy`) -- every variant's cos-sim, relative L1 and RMSE
  against float64 attention, and the paper's ablations (NVFP4 vs MXFP4, two-level vs direct
  P, no / K / Q+K smoothing; SageBwd's gradients with dP in 16-bit vs INT8), on real
  attention inputs captured from tenfold's own trained models (:mod:`.capture`: a DiT on
  the digits, the LM on the Python docs, with the real dO of their losses) and on synthetic
  inputs with the channel outliers of large models.
* ``attention/train-8bit`` (:mod:`.train_8bit`) -- the LM fine-tuned from a full-precision
  base with ``int8_train`` attention vs full precision, and pretrained from scratch with both.

Both use the exact numerics of :mod:`tenfold.attention._ref` (on the CPU they measure
accuracy, not speed).
"""

from .accuracy import (
    ABLATIONS,
    FWD_VARIANTS,
    AccuracyConfig,
    backward_accuracy,
    forward_accuracy,
    measure,
)
from .capture import capture_dit, capture_lm, capture_sources, synthetic_long, synthetic_outliers
from .train_8bit import Train8bitConfig, train_run

__all__ = [
    "ABLATIONS",
    "FWD_VARIANTS",
    "AccuracyConfig",
    "Train8bitConfig",
    "backward_accuracy",
    "capture_dit",
    "capture_lm",
    "capture_sources",
    "forward_accuracy",
    "measure",
    "synthetic_long",
    "synthetic_outliers",
    "train_run",
]
