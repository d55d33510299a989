"""Public API of low-bit attention: the SDPA-compatible :func:`sageattn`, the
:class:`AttentionConfig` + :func:`apply_` pair for tenfold's models, and
:func:`sdpa_routed`, a context manager that sends every ``F.scaled_dot_product_attention``
call of any model through :func:`sageattn`.

Where things run:

* ``backend="triton"``: the kernels of :mod:`tenfold.attention.kernels` (CUDA, or the
  Triton interpreter on the CPU), for ``qk_int8_pv_fp8``, ``qk_int8_pv_fp16`` and
  ``int8_train`` (forward and backward), fp16/bf16, head dim 64 or 128, no ``attn_mask``.
* ``backend="reference"``: the exact numerics of :mod:`tenfold.attention._ref` in PyTorch,
  any device, every variant, head dims up to 256, masks. Slow: it measures accuracy.
* ``backend="auto"``: the kernel where it can serve the call; the reference on the CPU and,
  with a one-time warning, for variants without a kernel (FP4); PyTorch SDPA with a
  one-time warning where a kernel variant's kernel cannot serve the inputs (fp32, head dim,
  ``attn_mask``; ``on_unsupported="sdpa"``), or a :class:`UnsupportedAttention` error
  (``on_unsupported="error"``).

``variant="auto"`` picks by hardware: ``qk_int8_pv_fp8`` on GPUs with FP8 tensor cores
(compute capability 8.9 and up), ``qk_int8_pv_fp16`` on other CUDA GPUs, SDPA (with a
warning) on the CPU, where a quantized attention only costs time.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.models import set_attention_fn
from ..core.validate import check_config, check_number
from . import _ref
from ._ref import VARIANTS, Numerics

__all__ = [
    "AttentionConfig",
    "Backend",
    "Layout",
    "UnsupportedAttention",
    "Variant",
    "apply_",
    "remove_",
    "sageattn",
    "sdpa_routed",
]

_SDPA = F.scaled_dot_product_attention  # the original, whatever is patched later


class Variant(str, enum.Enum):
    AUTO = "auto"
    QK_INT8_PV_FP8 = "qk_int8_pv_fp8"
    QK_INT8_PV_FP16 = "qk_int8_pv_fp16"
    FP4_NVFP4 = "fp4_nvfp4"
    FP4_MXFP4 = "fp4_mxfp4"
    INT8_TRAIN = "int8_train"


class Backend(str, enum.Enum):
    AUTO = "auto"
    TRITON = "triton"
    REFERENCE = "reference"


class Layout(str, enum.Enum):
    BHTD = "bhtd"  # (batch, heads, tokens, head dim): SDPA's
    BTHD = "bthd"  # (batch, tokens, heads, head dim): flash-attn's


class UnsupportedAttention(ValueError):
    """The requested variant/backend cannot serve these inputs on this machine."""


KERNEL_VARIANTS = ("qk_int8_pv_fp8", "qk_int8_pv_fp16", "int8_train")
KERNEL_HEAD_DIMS = (64, 128)


@dataclass(frozen=True)
class AttentionConfig:
    """What :func:`apply_` and :func:`sdpa_routed` install. ``variant``: a :class:`Variant`
    name. ``backend``: ``auto``/``triton``/``reference``. ``on_unsupported``: ``"sdpa"``
    (fall back to PyTorch SDPA with a one-time warning) or ``"error"``. ``layout``: of the
    tensors :func:`sageattn` receives (models call it in ``bhtd``)."""

    variant: Variant | str = Variant.AUTO
    backend: Backend | str = Backend.AUTO
    on_unsupported: str = "sdpa"
    layout: Layout | str = Layout.BHTD

    def __post_init__(self):
        check_config(self, on_unsupported=("sdpa", "error"))
        object.__setattr__(self, "variant", _enum(Variant, self.variant, "variant"))
        object.__setattr__(self, "backend", _enum(Backend, self.backend, "backend"))
        object.__setattr__(self, "layout", _enum(Layout, self.layout, "layout"))
        if self.on_unsupported not in ("sdpa", "error"):
            raise ValueError(
                f"on_unsupported={self.on_unsupported!r}: choose 'sdpa' (warn once and "
                "use PyTorch SDPA) or 'error'"
            )


def _enum(cls, value, name):
    try:
        return cls(value.value if isinstance(value, enum.Enum) else value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: choose one of {[m.value for m in cls]}") from None


# --------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------

_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, stacklevel=4)


def auto_variant(device: torch.device) -> str | None:
    """The variant ``auto`` picks on ``device``; None means PyTorch SDPA."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return "qk_int8_pv_fp8" if (major, minor) >= (8, 9) else "qk_int8_pv_fp16"


def _kernel_problem(q: Tensor, variant: str, attn_mask, causal: str | None) -> str | None:
    """Why the Triton kernel cannot serve this call (None: it can)."""
    from . import kernels

    if variant not in KERNEL_VARIANTS:
        return f"{variant} has no Triton kernel here (FP4 needs Blackwell's tl.dot_scaled)"
    if not kernels.available():
        return "Triton kernels need a CUDA GPU with Triton installed"
    if (
        q.device.type == "cuda"
        and variant == "qk_int8_pv_fp8"
        and torch.cuda.get_device_capability(q.device) < (8, 9)
    ):
        return "FP8 P.V needs compute capability 8.9+ (Ada, Hopper, Blackwell)"
    if q.dtype not in (torch.float16, torch.bfloat16):
        return f"the kernels take fp16/bf16, got {q.dtype}"
    if q.shape[-1] not in KERNEL_HEAD_DIMS:
        return f"the kernels take head dim {KERNEL_HEAD_DIMS}, got {q.shape[-1]}"
    if attn_mask is not None:
        return "the kernels take no attn_mask (use is_causal for causal masks)"
    return None


def _reference_problem(q: Tensor, num: Numerics) -> str | None:
    D = q.shape[-1]
    if D > _ref.MAX_HEAD_DIM or D % num.head_dim_multiple:
        return (
            f"head dim {D} is not supported by this variant (at most {_ref.MAX_HEAD_DIM}, "
            f"a multiple of {num.head_dim_multiple})"
        )
    return None


def _to_bhtd(x: Tensor, layout: Layout) -> Tensor:
    return x.transpose(1, 2) if layout is Layout.BTHD else x


def sageattn(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    variant: Variant | str = Variant.AUTO,
    backend: Backend | str = Backend.AUTO,
    layout: Layout | str = Layout.BHTD,
    on_unsupported: str = "sdpa",
    causal_align: str = "bottom_right",
) -> Tensor:
    """Low-bit attention with the signature of ``F.scaled_dot_product_attention``.

    ``query`` (B, H, Tq, D), ``key``/``value`` (B, Hkv, Tk, D) with H a multiple of Hkv
    (grouped-query attention; ``enable_gqa`` is accepted for SDPA compatibility and
    implied), or (B, T, H, D) with ``layout="bthd"``; the output has the query's layout and
    dtype. ``is_causal`` with Tq != Tk aligns the mask bottom-right (query i sees keys
    j <= i + Tk - Tq, as with a KV cache); ``causal_align="top_left"`` gives SDPA's
    convention. ``variant`` names the numerics (see :data:`tenfold.attention.VARIANTS`).
    """
    cfg = AttentionConfig(variant, backend, on_unsupported, layout)
    q, k, v = (_to_bhtd(t, cfg.layout) for t in (query, key, value))
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim != 4:
            raise ValueError(
                f"{name} must be 4-D ({'B, T, H, D' if cfg.layout is Layout.BTHD else 'B, H, T, D'}), "
                f"got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    B, H, Tq, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[-1] != D:
        raise ValueError(
            f"key {tuple(k.shape)} and value {tuple(v.shape)} must match each other and the "
            f"query's batch and head dim {tuple(q.shape)} ({cfg.layout.value} layout)"
        )
    if H % k.shape[1]:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[1]})")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"query, key, value dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
    if scale is not None:
        check_number("scale", scale, ">0")
    check_number("dropout_p", dropout_p, "[0,1]")
    if causal_align not in ("bottom_right", "top_left"):
        raise ValueError(f"causal_align={causal_align!r}: 'bottom_right' or 'top_left'")
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal, not both (as with SDPA)")
    if attn_mask is not None:
        if not isinstance(attn_mask, Tensor) or not (
            attn_mask.dtype == torch.bool or attn_mask.is_floating_point()
        ):
            raise TypeError("attn_mask must be a bool or floating-point tensor (as with SDPA)")
        try:
            torch.broadcast_shapes(attn_mask.shape, (B, H, Tq, k.shape[-2]))
        except RuntimeError:
            raise ValueError(
                f"attn_mask {tuple(attn_mask.shape)} does not broadcast to "
                f"(B, H, Tq, Tk) = {(B, H, Tq, k.shape[-2])}"
            ) from None
    causal = causal_align if is_causal else None

    def fallback(why: str) -> Tensor:
        msg = f"tenfold.attention: {why}; using PyTorch SDPA for these calls"
        if cfg.on_unsupported == "error":
            raise UnsupportedAttention(why)
        _warn_once(msg)
        out = _sdpa(q, k, v, attn_mask, dropout_p, causal, scale)
        return out.transpose(1, 2) if cfg.layout is Layout.BTHD else out

    name = cfg.variant.value
    if name == "auto":
        name = auto_variant(q.device)
        if name is None:
            return fallback(f"no low-bit attention kernel for {q.device.type} tensors (auto)")
    num = VARIANTS[name]
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if needs_grad and name not in _ref.TRAINABLE:
        raise UnsupportedAttention(
            f"{name} is inference-only (no backward); use variant='int8_train' for training "
            "or call it under torch.no_grad()"
        )
    if dropout_p:
        return fallback(f"dropout_p={dropout_p} is not supported by quantized attention")
    rep = H // k.shape[1]
    use_kernel = cfg.backend is Backend.TRITON or (
        cfg.backend is Backend.AUTO and q.device.type == "cuda" and name in KERNEL_VARIANTS
    )
    if cfg.backend is Backend.AUTO and q.device.type == "cuda" and name not in KERNEL_VARIANTS:
        _warn_once(
            f"tenfold.attention: {name} has no kernel on this machine (FP4 needs Blackwell's "
            "tl.dot_scaled); running its PyTorch reference numerics (slow: for accuracy studies)"
        )
    if use_kernel:
        why = _kernel_problem(q, name, attn_mask, causal)
        if why is not None:
            if cfg.backend is Backend.TRITON or cfg.on_unsupported == "error":
                raise UnsupportedAttention(why)
            return fallback(why)
        from . import kernels

        out = kernels.attention(q, k, v, name, scale, causal)
    else:
        why = _reference_problem(q, num)
        if why is not None:
            return fallback(why)
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
            v = v.repeat_interleave(rep, dim=1)  # (B, H, Tk, D)
        out = _ref._attention(q, k, v, num, scale, attn_mask, causal)
    return out.transpose(1, 2) if cfg.layout is Layout.BTHD else out


def _sdpa(q, k, v, attn_mask, dropout_p, causal, scale) -> Tensor:
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    if causal == "bottom_right" and q.shape[-2] != k.shape[-2]:
        attn_mask = _ref.mask_bias(q.shape[-2], k.shape[-2], None, causal, q.device) == 0
        causal = None
    return _SDPA(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=causal is not None,
        scale=scale,
    )  # fmt: skip


sageattn.supports_gqa = True


# --------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------


class _Bound:
    """``sageattn`` with a config bound: an SDPA-signature kernel for tenfold's models."""

    supports_gqa = True

    def __init__(self, cfg: AttentionConfig, causal_align: str = "bottom_right"):
        self.cfg, self.causal_align = cfg, causal_align

    def __call__(self, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                 enable_gqa=False):  # fmt: skip
        c = self.cfg
        return sageattn(
            q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa,
            variant=c.variant, backend=c.backend, layout=c.layout,
            on_unsupported=c.on_unsupported, causal_align=self.causal_align,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"sageattn[{self.cfg.variant.value}, {self.cfg.backend.value}]"


def apply_(model: nn.Module, cfg: AttentionConfig, filter_fn=None) -> list[str]:
    """Swap the attention kernel of tenfold's core models (every
    :class:`~tenfold.core.models.PluggableAttention`: self, cross and joint attention) for
    :func:`sageattn` with ``cfg``; ``filter_fn(module, name) -> bool`` picks modules. Returns
    the names of the swapped modules. Parameters and the state_dict are untouched;
    :func:`remove_` restores SDPA."""
    if not isinstance(cfg, AttentionConfig):
        raise TypeError(f"apply_ takes an AttentionConfig, got {type(cfg).__name__}")
    swapped = set_attention_fn(model, _Bound(cfg), filter_fn)
    if not swapped:
        raise ValueError(
            "apply_ found no attention module with a pluggable kernel (tenfold.core.models' "
            "Attention/CrossAttention/JointAttention); for other models use sdpa_routed()"
        )
    return swapped


def remove_(model: nn.Module) -> list[str]:
    """Give every swapped attention module back PyTorch SDPA; returns their names."""
    return set_attention_fn(model, None, lambda m, name: isinstance(m.attn_fn, _Bound))


@contextlib.contextmanager
def sdpa_routed(cfg: AttentionConfig | None = None):
    """Within the block, ``torch.nn.functional.scaled_dot_product_attention`` is
    :func:`sageattn` with ``cfg`` (SDPA's top-left causal convention is kept), so any model
    that calls it through ``F.`` uses low-bit attention. Code that imported the function
    itself (``from torch.nn.functional import scaled_dot_product_attention``) before the
    block is not routed."""
    cfg = cfg or AttentionConfig()
    if cfg.layout is not Layout.BHTD:
        raise ValueError("SDPA calls are (B, H, T, D); sdpa_routed needs layout='bhtd'")
    fn = functools.wraps(_SDPA)(_Bound(cfg, causal_align="top_left"))
    prev = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = fn
    try:
        yield fn
    finally:
        F.scaled_dot_product_attention = prev
