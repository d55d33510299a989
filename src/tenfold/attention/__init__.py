"""Low-bit attention (arXiv 2505.11594, SageAttention3 + SageBwd): FP4/INT8/FP8 attention
for inference and 8-bit attention for training, as a drop-in for
``F.scaled_dot_product_attention``. See ``docs/attention.md``.

    from tenfold.attention import sageattn, AttentionConfig, apply_
    out = sageattn(q, k, v, is_causal=True, variant="qk_int8_pv_fp8")
    apply_(model, AttentionConfig(variant="int8_train"))
"""

from ..core.experiment import MethodInfo
from ._ref import VARIANTS, Numerics
from .api import (
    AttentionConfig,
    Backend,
    Layout,
    UnsupportedAttention,
    Variant,
    apply_,
    remove_,
    sageattn,
    sdpa_routed,
)

METHOD = MethodInfo(
    "attention",
    "2505.11594",
    "SageAttention3 + SageBwd",
    "FP4/INT8/FP8 attention for inference, 8-bit attention for training",
)

__all__ = [
    "METHOD",
    "VARIANTS",
    "AttentionConfig",
    "Backend",
    "Layout",
    "Numerics",
    "UnsupportedAttention",
    "Variant",
    "apply_",
    "remove_",
    "sageattn",
    "sdpa_routed",
]
