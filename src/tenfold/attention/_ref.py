"""Reference numerics of low-bit attention (SageAttention2/3, SageBwd), in plain PyTorch.

This file is the spec that the kernels are tested against: every quantizer returns the
dequantized values, and the attention is computed from them in float32, tile by tile,
exactly as a flash-attention kernel walks the keys (online softmax over tiles of
``Numerics.kv_tile`` keys; P is quantized relative to the running row max of its tile).

Number formats:

* FP8 E4M3 (``e4m3``): round-to-nearest-even onto the E4M3 grid, saturating at +-448.
* FP4 E2M1 (``e2m1``): the eight magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}, round to nearest,
  ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
  5 -> 4), saturating at +-6.
* NVFP4 (``quant_nvfp4``): E2M1 values with one E4M3 scale per 16 consecutive elements of
  the last dim, scale = E4M3(absmax / 6).
* MXFP4 (``quant_mxfp4``): E2M1 values with one power-of-two (E8M0) scale per 32 elements,
  scale = 2^(floor(log2 absmax) - 2) (the OCP MX rule; 2 is E2M1's largest exponent).
* INT8 per token block (``quant_int8_blocks``): scale = absmax / 127 per block of tokens.

Attention variants (:data:`VARIANTS`, each a :class:`Numerics`):

* ``qk_int8_pv_fp8`` (SageAttention2): K minus its mean over tokens; Q (blocks of 128
  tokens, softmax scale * log2(e) folded in) and K (blocks of 64) in INT8, scale =
  absmax/127; scores in log2 units and exp2; P in FP8 E4M3 with the static scale 448 (P is
  in [0, 1]); V in FP8 E4M3 with one scale per channel (absmax over tokens / 448).
* ``qk_int8_pv_fp16`` (SageAttention1-like): the same QK, P and V rounded to fp16.
* ``fp4_nvfp4`` (SageAttention3): K minus its mean; Q minus the mean of its 128-token group,
  with ``delta_s = q_mean . k^T`` added back to the scores; Q, K in NVFP4 along the head
  dim; V in NVFP4 along tokens; two-level P: ``P * 448 * 6`` (a constant, folded into the
  exp2 shift) is quantized to NVFP4 along the keys, so its per-16 E4M3 scales use the
  whole E4M3 range.
* ``fp4_mxfp4``: the same with MXFP4 (E8M0 scale per 32) everywhere.
* ``int8_train`` (SageBwd): Q, K (smoothed), V in INT8 per block, P in INT8 per token (one
  scale per row of each key tile); the backward (:class:`Int8TrainAttention`) recomputes the
  scores in INT8 and quantizes P, dO and dS per 64x64 tile for ``dV = P^T dO``,
  ``dQ = dS K`` and ``dK = dS^T Q``, but keeps ``dP = dO V^T`` in 16-bit.

:func:`attention_exact` is the float64 baseline every variant is measured against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core.validate import check_config

E4M3_MAX = 448.0
# floor of every absmax before it becomes a scale: exp2 of very negative scores gives
# denormal P whose absmax/127 would underflow to 0 (and 0/0 = NaN); a block whose absmax is
# below TINY quantizes to zeros
TINY = 2.0**-100
E2M1_MAX = 6.0
_E2M1_GRID = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_E2M1_MIDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_E2M1_TIES_UP = (0.75, 1.75, 3.5)  # midpoints whose lower neighbour has an odd code


def e4m3(x: Tensor) -> Tensor:
    """Round to FP8 E4M3 (round to nearest even, saturating at +-448) -> float32."""
    if not x.is_floating_point():
        raise TypeError(f"e4m3 needs a floating-point tensor, got {x.dtype}")
    return x.float().clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()


def e2m1(x: Tensor) -> Tensor:
    """Round to FP4 E2M1 (round to nearest, ties to the even code, saturating) -> float32."""
    if not x.is_floating_point():
        raise TypeError(f"e2m1 needs a floating-point tensor, got {x.dtype}")
    x = x.float()
    a = x.abs().clamp(max=E2M1_MAX)
    mids = torch.tensor(_E2M1_MIDS, device=x.device)
    idx = (a.unsqueeze(-1) > mids).sum(-1)  # ties go to the lower neighbour ...
    up = torch.zeros_like(a, dtype=torch.bool)
    for m in _E2M1_TIES_UP:  # ... unless its code is odd
        up |= a == m
    idx = idx + up.long()
    grid = torch.tensor(_E2M1_GRID, device=x.device)
    return torch.where(torch.isnan(x), x, grid[idx].copysign(x))  # NaN stays NaN


def _groups(x: Tensor, size: int) -> Tensor:
    if x.shape[-1] % size:
        raise ValueError(
            f"the last dim ({x.shape[-1]}) must be a multiple of the group size {size}"
        )
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // size, size)


def quant_nvfp4(x: Tensor, group: int = 16) -> tuple[Tensor, Tensor]:
    """NVFP4 along the last dim -> (dequantized float32 of x's shape, E4M3 scales (..., n))."""
    g = _groups(x, group)
    amax = g.abs().amax(-1)
    scale = e4m3(amax / E2M1_MAX)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = e2m1(g / safe.unsqueeze(-1))
    return (q * scale.unsqueeze(-1)).reshape(x.shape), scale


def quant_mxfp4(x: Tensor, group: int = 32) -> tuple[Tensor, Tensor]:
    """MXFP4 along the last dim -> (dequantized float32, power-of-two scales (..., n))."""
    g = _groups(x, group)
    amax = g.abs().amax(-1)
    exp = torch.floor(torch.log2(torch.where(amax > 0, amax, torch.ones_like(amax)))) - 2
    scale = torch.exp2(exp.clamp(-127, 127))
    scale = torch.where(torch.isnan(amax), amax, scale)  # a group holding NaN stays NaN
    q = e2m1(g / scale.unsqueeze(-1))
    return (q * scale.unsqueeze(-1)).reshape(x.shape), scale


def quant_int8_blocks(x: Tensor, block: int, dim: int = -2) -> tuple[Tensor, Tensor]:
    """INT8 with one scale per ``block`` consecutive positions along ``dim`` (tokens), taken
    over those positions and the whole last dim (head dim). Returns (dequantized float32,
    scales (..., n_blocks)). A tail block shorter than ``block`` gets its own scale."""
    if x.ndim < 2:
        raise ValueError(f"expected (..., T, D), got shape {tuple(x.shape)}")
    x = x.float().movedim(dim, -2)
    T = x.shape[-2]
    n = -(-T // block)
    pad = n * block - T
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x
    b = xp.reshape(*xp.shape[:-2], n, block, xp.shape[-1])
    amax = b.abs().amax(dim=(-2, -1))
    scale = amax.clamp_min(TINY) / 127.0
    q = torch.round(b / scale[..., None, None]).clamp(-127, 127)
    deq = (q * scale[..., None, None]).reshape(xp.shape)[..., :T, :]
    return deq.movedim(-2, dim), scale


# --------------------------------------------------------------------------------------
# Attention numerics
# --------------------------------------------------------------------------------------

LOG2E = 1.4426950408889634
P_TWO_LEVEL = E4M3_MAX * E2M1_MAX  # 2688: P's range after the first level of FP4 P
MAX_HEAD_DIM = 256
QK_FORMATS = ("int8", "nvfp4", "mxfp4", "float")
PV_FORMATS = ("fp8", "int8", "nvfp4", "mxfp4", "fp16", "float")
SMOOTHING = ("none", "k", "qk")


@dataclass(frozen=True)
class Numerics:
    """How one attention variant quantizes. ``qk``: format of Q and K (``int8`` per token
    block, ``nvfp4``/``mxfp4`` along the head dim, ``float``). ``pv``: format of P and V
    (``fp8``: P static 448, V per channel; ``int8``: P per token, V per token block;
    ``nvfp4``/``mxfp4``: both along the keys; ``fp16``; ``float``). ``smooth``: subtract
    K's mean over tokens (``k``), and also Q's mean per ``q_block`` group with the
    ``delta_s`` correction (``qk``). ``p_two_level``: FP4 P scaled by 448*6 first (else P in
    [0, 1] is quantized directly). ``q_block``/``k_block``: INT8 scale blocks (tokens).
    ``kv_tile``: keys per online-softmax step. ``bwd_dp``: format of ``dP = dO V^T`` in the
    SageBwd backward: ``"16bit"`` (the method) or ``"int8"`` (the ablation the paper warns
    against)."""

    qk: str = "int8"
    pv: str = "fp8"
    smooth: str = "k"
    p_two_level: bool = True
    q_block: int = 128
    k_block: int = 64
    kv_tile: int = 64
    bwd_dp: str = "16bit"

    def __post_init__(self):
        check_config(
            self,
            q_block=">=1 pow2",
            k_block=">=1 pow2",
            kv_tile=">=1 pow2",
            bwd_dp=("16bit", "int8"),
        )
        if self.qk not in QK_FORMATS:
            raise ValueError(f"qk={self.qk!r}: choose one of {QK_FORMATS}")
        if self.pv not in PV_FORMATS:
            raise ValueError(f"pv={self.pv!r}: choose one of {PV_FORMATS}")
        if self.smooth not in SMOOTHING:
            raise ValueError(f"smooth={self.smooth!r}: choose one of {SMOOTHING}")
        if self.bwd_dp not in ("16bit", "int8"):
            raise ValueError(f"bwd_dp={self.bwd_dp!r}: choose '16bit' or 'int8'")
        if self.kv_tile % _group(self.pv) or (self.pv == "int8" and self.kv_tile % self.k_block):
            raise ValueError(
                f"kv_tile={self.kv_tile} must hold whole groups of the {self.pv} P/V format"
            )

    @property
    def head_dim_multiple(self) -> int:
        return _group(self.qk)


def _group(fmt: str) -> int:
    return {"nvfp4": 16, "mxfp4": 32}.get(fmt, 1)


VARIANTS: dict[str, Numerics] = {
    "qk_int8_pv_fp8": Numerics("int8", "fp8", "k"),
    "qk_int8_pv_fp16": Numerics("int8", "fp16", "k"),
    "fp4_nvfp4": Numerics("nvfp4", "nvfp4", "qk", True),
    "fp4_mxfp4": Numerics("mxfp4", "mxfp4", "qk", True),
    "int8_train": Numerics("int8", "int8", "k"),
}
TRAINABLE = ("int8_train",)


def numerics(variant: str | Numerics, **overrides) -> Numerics:
    """The :class:`Numerics` of a variant name (or a Numerics), with fields overridden."""
    if isinstance(variant, Numerics):
        num = variant
    elif variant in VARIANTS:
        num = VARIANTS[variant]
    else:
        raise ValueError(f"unknown attention variant {variant!r}; choose one of {list(VARIANTS)}")
    return replace(num, **overrides) if overrides else num


def _quant_fp4(x: Tensor, fmt: str) -> Tensor:
    return (quant_nvfp4 if fmt == "nvfp4" else quant_mxfp4)(x)[0]


def _pad_tokens(x: Tensor, mult: int) -> Tensor:
    pad = -x.shape[-2] % mult
    return F.pad(x, (0, 0, 0, pad)) if pad else x


def quant_v(v: Tensor, num: Numerics) -> Tensor:
    """V (B, H, Tk, D) in the P.V format of ``num`` -> dequantized float32, same shape.
    Tk must be a multiple of the FP4 group when the format is FP4 (pad with zero tokens)."""
    v = v.float()
    if num.pv == "fp8":
        amax = v.abs().amax(-2, keepdim=True)  # (B, H, 1, D): one scale per channel
        s = amax.clamp_min(TINY) / E4M3_MAX
        return e4m3(v / s) * s
    if num.pv == "int8":
        return quant_int8_blocks(v, num.k_block)[0]
    if num.pv in ("nvfp4", "mxfp4"):  # groups run along tokens: the P.V reduction
        return _quant_fp4(v.transpose(-1, -2), num.pv).transpose(-1, -2)
    if num.pv == "fp16":
        return v.half().float()
    return v


def quant_p(p: Tensor, num: Numerics) -> Tensor:
    """One tile of unnormalised probabilities P = exp2(S - m) in [0, 1], (..., Tq, tile) ->
    the dequantized float32 values the P.V product uses."""
    if num.pv == "fp8":
        return e4m3(p * E4M3_MAX) / E4M3_MAX
    if num.pv == "int8":  # per token: one scale per row of the tile
        amax = p.amax(-1, keepdim=True)
        s = amax.clamp_min(TINY) / 127.0
        return torch.round(p / s) * s
    if num.pv in ("nvfp4", "mxfp4"):
        if num.p_two_level:
            return _quant_fp4(p * P_TWO_LEVEL, num.pv) / P_TWO_LEVEL
        return _quant_fp4(p, num.pv)
    if num.pv == "fp16":
        return p.half().float()
    return p


def mask_bias(
    Tq: int, Tk: int, attn_mask: Tensor | None, causal: str | None, device
) -> Tensor | None:
    """Additive float32 bias (natural-log units) of an SDPA ``attn_mask`` (bool: True keeps;
    float: added) and a causal mask aligned ``"bottom_right"`` (query i sees keys
    j <= i + Tk - Tq, the KV-cache convention) or ``"top_left"`` (j <= i, SDPA's)."""
    bias = None
    if causal is not None:
        off = Tk - Tq if causal == "bottom_right" else 0
        i = torch.arange(Tq, device=device)[:, None]
        j = torch.arange(Tk, device=device)[None, :]
        bias = torch.zeros(Tq, Tk, device=device).masked_fill(j > i + off, -math.inf)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            m = torch.zeros(attn_mask.shape, device=device).masked_fill(~attn_mask, -math.inf)
        else:
            m = attn_mask.float()
        bias = m if bias is None else bias + m
    return bias


def attention_exact(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    scale: float | None = None,
    attn_mask: Tensor | None = None,
    causal: str | None = None,
) -> Tensor:
    """Float64 attention over (B, H, T, D) (K, V already expanded for GQA): the baseline.
    Rows that see no key give 0."""
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = q @ k.transpose(-1, -2) * scale  # (B, H, Tq, Tk)
    bias = mask_bias(q.shape[-2], k.shape[-2], attn_mask, causal, q.device)
    if bias is not None:
        s = s + bias.double()
    m = s.amax(-1, keepdim=True)
    p = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
    l = p.sum(-1, keepdim=True)
    return (p @ v) / torch.where(l > 0, l, torch.ones_like(l))


def smooth_qk(q: Tensor, k: Tensor, num: Numerics) -> tuple[Tensor, Tensor, Tensor | None]:
    """Smoothing of Q (B, H, Tq, D) and K (B, H, Tk, D) -> (q', k', delta) where delta
    (B, H, Tq, Tk) is ``q_mean . k'^T`` (None unless Q is smoothed); scores are
    ``q' k'^T + delta`` = ``q k^T`` minus a per-row constant, which softmax ignores."""
    q, k = q.float(), k.float()
    if num.smooth in ("k", "qk"):
        k = k - k.mean(-2, keepdim=True)
    delta = None
    if num.smooth == "qk":
        Tq, g = q.shape[-2], num.q_block
        qp = _pad_tokens(q, g)
        groups = qp.reshape(*qp.shape[:-2], -1, g, qp.shape[-1])  # (B, H, G, g, D)
        n = torch.full((groups.shape[-3],), g, device=q.device, dtype=torch.float32)
        n[-1] = Tq - g * (groups.shape[-3] - 1)
        qm = groups.sum(-2) / n[:, None]  # (B, H, G, D): mean over the real rows
        qm_rows = qm.repeat_interleave(g, dim=-2)[..., :Tq, :]  # (B, H, Tq, D)
        q = q - qm_rows
        delta = qm_rows @ k.transpose(-1, -2)  # (B, H, Tq, Tk)
    return q, k, delta


def scores_log2(q: Tensor, k: Tensor, num: Numerics, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """Quantized scores in log2 units, ``S = scale * log2(e) * q k^T`` (up to a per-row
    constant), from smoothed and quantized Q and K. Returns (S (B, H, Tq, Tk), the
    dequantized Q as multiplied (with scale*log2e folded in for INT8), the dequantized K)."""
    sm = scale * LOG2E
    q, k, delta = smooth_qk(q, k, num)
    if num.qk == "int8":
        qd = quant_int8_blocks(q * sm, num.q_block)[0]
        kd = quant_int8_blocks(k, num.k_block)[0]
        s = qd @ kd.transpose(-1, -2)
        if delta is not None:
            s = s + delta * sm
        return s, qd, kd
    if num.qk == "float":
        qd, kd = q * sm, k
        s = qd @ kd.transpose(-1, -2)
        if delta is not None:
            s = s + delta * sm
        return s, qd, kd
    qd, kd = _quant_fp4(q, num.qk), _quant_fp4(k, num.qk)
    s = qd @ kd.transpose(-1, -2)
    if delta is not None:
        s = s + delta
    return s * sm, qd * sm, kd


def check_inputs(q: Tensor, k: Tensor, v: Tensor, num: Numerics) -> None:
    """(B, H, T, D) inputs with K and V expanded to Q's heads; clear errors otherwise."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != 4:
            raise ValueError(f"{name} must be (B, H, T, D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if k.shape != v.shape or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"shapes do not match: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    D = q.shape[-1]
    if D > MAX_HEAD_DIM or D % num.head_dim_multiple:
        raise ValueError(
            f"head dim {D} is not supported by the reference of this variant "
            f"(at most {MAX_HEAD_DIM}, a multiple of {num.head_dim_multiple})"
        )


def attention_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num: Numerics,
    scale: float | None = None,
    attn_mask: Tensor | None = None,
    causal: str | None = None,
) -> tuple[Tensor, Tensor]:
    """Quantized attention forward over (B, H, T, D) (K, V expanded for GQA) ->
    (O float32 (B, H, Tq, D), LSE in log2 units (B, H, Tq); -inf for rows that see no key,
    whose output is 0)."""
    check_inputs(q, k, v, num)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    Tq, Tk = q.shape[-2], k.shape[-2]
    s, _, _ = scores_log2(q, k, num, scale)  # (B, H, Tq, Tk)
    bias = mask_bias(Tq, Tk, attn_mask, causal, q.device)
    if bias is not None:
        s = s + bias * LOG2E
    tile = num.kv_tile
    pad = -Tk % tile
    if pad:
        s = F.pad(s, (0, pad), value=-math.inf)
    vd = quant_v(_pad_tokens(v.float(), tile), num)  # (B, H, Tk', D)
    m = torch.full(s.shape[:-1], -math.inf, device=q.device)  # (B, H, Tq)
    l = torch.zeros_like(m)
    acc = torch.zeros(*s.shape[:-1], q.shape[-1], device=q.device)  # (B, H, Tq, D)
    for j in range(0, s.shape[-1], tile):
        sj = s[..., j : j + tile]  # (B, H, Tq, tile)
        m_new = torch.maximum(m, sj.amax(-1))
        m_safe = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
        p = torch.exp2(sj - m_safe[..., None])  # (B, H, Tq, tile), in [0, 1]
        alpha = torch.exp2(m - m_safe)
        l = l * alpha + p.sum(-1)
        acc = acc * alpha[..., None] + quant_p(p, num) @ vd[..., j : j + tile, :]
        m = m_new
    o = acc / torch.where(l > 0, l, torch.ones_like(l))[..., None]
    lse = torch.where(l > 0, m + torch.log2(torch.where(l > 0, l, torch.ones_like(l))), -math.inf)
    return o, lse


# --------------------------------------------------------------------------------------
# SageBwd: the 8-bit backward
# --------------------------------------------------------------------------------------

BWD_TILE = 64  # query rows x keys of one backward tile: P, dO and dS scales are per tile


def _quant_int8_tiles(x: Tensor, tile: int) -> Tensor:
    """INT8 with one absmax/127 scale per (tile x tile) block of the last two dims (both
    multiples of ``tile``)."""
    *lead, R, C = x.shape
    b = x.reshape(*lead, R // tile, tile, C // tile, tile)
    amax = b.abs().amax(dim=(-3, -1), keepdim=True)
    s = amax.clamp_min(TINY) / 127.0
    return (torch.round(b / s).clamp(-127, 127) * s).reshape(x.shape)


def _bwd_16bit(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16


def int8_train_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    lse: Tensor,
    do: Tensor,
    num: Numerics,
    scale: float | None = None,
    attn_mask: Tensor | None = None,
    causal: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """SageBwd backward -> (dQ, dK, dV) float32. The scores are recomputed from the INT8 Q
    and K of the forward; ``dV = P^T dO``, ``dQ = dS K`` and ``dK = dS^T Q`` take INT8
    operands (P, dO, dS with one scale per 64x64 tile; Q, K as in the forward), while
    ``dP = dO V^T`` is computed from dO and V in 16-bit (their dtype, fp16 for fp32 inputs)
    with fp32 accumulation, and ``dS = P * (dP - rowsum(dO * O))`` in fp32."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    Tq, Tk = q.shape[-2], k.shape[-2]
    s, qd, kd = scores_log2(q, k, num, scale)  # qd = int8(q * scale * log2e) dequantized
    bias = mask_bias(Tq, Tk, attn_mask, causal, q.device)
    if bias is not None:
        s = s + bias * LOG2E
    t = BWD_TILE
    lse_safe = torch.where(torch.isfinite(lse), lse, torch.full_like(lse, math.inf))
    p = torch.exp2(s - lse_safe[..., None])  # (B, H, Tq, Tk): rows with no key give 0
    h16 = _bwd_16bit(do.dtype)
    dof = do.float()
    if num.bwd_dp == "int8":  # ablation: dO and V in INT8 per 64-token block
        doq = quant_int8_blocks(dof, BWD_TILE)[0]
        vq = quant_int8_blocks(v.float(), num.k_block)[0]
        dp = doq @ vq.transpose(-1, -2)  # (B, H, Tq, Tk)
    else:
        dp = do.to(h16).float() @ v.to(h16).float().transpose(-1, -2)  # (B, H, Tq, Tk)
    delta = (dof * o.float()).sum(-1, keepdim=True)  # (B, H, Tq, 1)
    ds = p * (dp - delta)  # gradient of the natural-unit scores
    # pad to whole tiles with zeros (padded rows/keys carry no probability or gradient)
    pq, pk = -Tq % t, -Tk % t
    P = F.pad(p, (0, pk, 0, pq))
    dS = F.pad(ds, (0, pk, 0, pq))
    dO = quant_int8_blocks(F.pad(dof, (0, 0, 0, pq)), t)[0]  # (B, H, Tq', D)
    Pq = _quant_int8_tiles(P, t)
    dSq = _quant_int8_tiles(dS, t)
    Qd = F.pad(qd, (0, 0, 0, pq)) / LOG2E  # = int8(q * scale) dequantized
    Kd = F.pad(kd, (0, 0, 0, pk))
    dv = (Pq.transpose(-1, -2) @ dO)[..., :Tk, :]
    dq = (dSq @ Kd)[..., :Tq, :] * scale
    dk = (dSq.transpose(-1, -2) @ Qd)[..., :Tk, :]
    return dq, dk, dv


class Int8TrainAttention(torch.autograd.Function):
    """Reference SageBwd attention: forward of ``int8_train`` (:func:`attention_fwd`),
    backward :func:`int8_train_bwd`. Inputs (B, H, T, D) with K, V expanded."""

    @staticmethod
    def forward(ctx, q, k, v, num, scale, attn_mask, causal):
        o, lse = attention_fwd(q, k, v, num, scale, attn_mask, causal)
        o = o.to(q.dtype)  # the backward's rowsum(dO * O) uses the output as returned
        ctx.save_for_backward(q, k, v, o, lse, attn_mask)
        ctx.num, ctx.scale, ctx.causal = num, scale, causal
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, attn_mask = ctx.saved_tensors
        dq, dk, dv = int8_train_bwd(q, k, v, o, lse, do, ctx.num, ctx.scale, attn_mask, ctx.causal)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def _attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    num: Numerics,
    scale: float | None = None,
    attn_mask: Tensor | None = None,
    causal: str | None = None,
) -> Tensor:
    """Reference of a variant over (B, H, T, D) (K, V expanded) -> O in q's dtype. With
    ``pv == "int8"`` (SageBwd) it is differentiable through :class:`Int8TrainAttention`."""
    if (
        num.pv == "int8"
        and num.qk == "int8"
        and torch.is_grad_enabled()
        and (q.requires_grad or k.requires_grad or v.requires_grad)
    ):
        return Int8TrainAttention.apply(q, k, v, num, scale, attn_mask, causal)
    return attention_fwd(q, k, v, num, scale, attn_mask, causal)[0].to(q.dtype)
