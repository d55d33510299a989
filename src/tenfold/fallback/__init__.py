"""Fallback quantization (arXiv 2503.08040): INT8 training of GLU transformers in which the
activation and gradient blocks that hold outliers fall back to 16-bit. See ``docs/fallback.md``.

    from tenfold.fallback import FallbackConfig, apply_, fallback_stats
    apply_(model, FallbackConfig(block=(32, 32), rule="relative", threshold=8.0), skip=("lm_head",))
"""

from ..core.experiment import MethodInfo
from .api import (
    SCHEMES,
    FallbackConfig,
    FallbackLinear,
    FallbackRule,
    GemmMode,
    Granularity,
    LayerStats,
    apply_,
    capture_linear_io,
    fallback_linear,
    fallback_stats,
    gemm_sqnr,
    reset_fallback_stats,
)

METHOD = MethodInfo(
    "fallback",
    "2503.08040",
    "Fallback Quantization",
    "INT8 training of GLU transformers that falls back to 16-bit on outlier blocks",
)

__all__ = [
    "METHOD",
    "SCHEMES",
    "FallbackConfig",
    "FallbackLinear",
    "FallbackRule",
    "GemmMode",
    "Granularity",
    "LayerStats",
    "apply_",
    "capture_linear_io",
    "fallback_linear",
    "fallback_stats",
    "gemm_sqnr",
    "reset_fallback_stats",
]
