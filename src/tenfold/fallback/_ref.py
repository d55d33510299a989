"""Reference numerics of fallback quantization, in plain PyTorch. This file is the spec: the
Triton kernels in :mod:`tenfold.fallback.kernels` are tested against it.

Block-wise INT8
    A matrix (R, C) is zero-padded to multiples of the block (br, bc) and cut into blocks.
    Each block gets one fp32 scale ``s = absmax / 127`` (1 for an all-zero block, NaN for a
    block holding NaN or inf, so that non-finite input gives non-finite output) and the
    values ``q = round_half_away(x * (127 / absmax))`` clamped to [-127, 127] (int8).
    Per-tensor INT8 is the same with one block the size of the whole (padded) matrix.

Fallback rule (per block of an activation or gradient; see :class:`FallbackRule`)
    ``relative``: the block's absmax exceeds ``threshold`` times the median block absmax of
    the tensor -- an outlier block by the tensor's own statistics.
    ``crest``: the block's absmax exceeds ``threshold`` times the block's RMS -- the block's
    INT8 SQNR, ``10 log10(3 * 127^2 / crest^2)`` dB, falls below the level it sets.
    ``absolute``: absmax exceeds ``threshold`` itself.
    ``topk``: the ``threshold`` fraction of blocks with the largest absmax (a fixed rate).

Mixed GEMM ``C = A @ B`` (A: (M, K), B: (K, N), both with blocks that share the reduction
step ``s``: A blocks (bm, s), B blocks (s, bn))
    For every output block (i, j) and reduction step k, the step runs in 16-bit when A's
    block (i, k) or B's block (k, j) is marked, else in INT8::

        C[i, j] = sum_k  marked ? float(A16[i,k] @ B16[k,j])               (fp32 accumulate)
                                : float(Aq[i,k] @ Bq[k,j]) * (sA[i,k] * sB[k,j])  (exact int)

    accumulated in fp32 over k in order. ``A16``/``B16`` are the operands rounded to the
    16-bit format (bf16 by default). INT8 products are exact (computed in float64).
    A saved activation keeps 16-bit values only in its own fallback blocks; where its
    partner falls back but it did not, its 16-bit value is its dequantized INT8 value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

QMAX = 127.0


def _ceil_to(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _pad2d(x: Tensor, block: tuple[int, int]) -> Tensor:
    R, C = x.shape
    pr, pc = _ceil_to(R, block[0]) - R, _ceil_to(C, block[1]) - C
    return F.pad(x, (0, pc, 0, pr)) if pr or pc else x


def _blocks(x: Tensor, block: tuple[int, int]) -> Tensor:
    """(R, C) padded -> (Rb, Cb, br, bc) view of its blocks."""
    br, bc = block
    R, C = x.shape
    return x.view(R // br, br, C // bc, bc).permute(0, 2, 1, 3)


def _expand(s: Tensor, block: tuple[int, int]) -> Tensor:
    """Per-block (Rb, Cb) -> per-element (Rb*br, Cb*bc)."""
    return s.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)


def _bcast(x: Tensor, s: Tensor, block: tuple[int, int], op=torch.mul) -> Tensor:
    """``op(x, per-block s)`` for a padded (Rb*br, Cb*bc) x and (Rb, Cb) s, by broadcasting."""
    R, C = x.shape
    br, bc = block
    out = op(x.reshape(R // br, br, C // bc, bc), s[:, None, :, None])
    return out.reshape(R, C)


def round_half_away(v: Tensor) -> Tensor:
    """Round to nearest, ties away from zero: sign(v) * floor(|v| + 0.5)."""
    return torch.floor(v.abs() + 0.5).copysign_(v)


@dataclass
class QTensor:
    """A block-quantized matrix: ``q`` int8 (Rp, Cp) padded, ``scale`` fp32 (Rb, Cb),
    ``mask`` bool (Rb, Cb) of blocks that fall back (or None), ``hi`` the 16-bit copy
    (Rp, Cp) used by those blocks (or None when nothing falls back), ``shape`` the
    unpadded (R, C)."""

    q: Tensor
    scale: Tensor
    block: tuple[int, int]
    shape: tuple[int, int]
    mask: Tensor | None = None
    hi: Tensor | None = None

    def t(self) -> QTensor:
        return QTensor(
            self.q.t(),
            self.scale.t(),
            (self.block[1], self.block[0]),
            (self.shape[1], self.shape[0]),
            None if self.mask is None else self.mask.t(),
            None if self.hi is None else self.hi.t(),
        )

    def dequantize(self) -> Tensor:
        """fp32 (R, C): the INT8 values times their scales (fallback blocks included)."""
        return self.padded_dequantize()[: self.shape[0], : self.shape[1]]

    def value(self) -> Tensor:
        """fp32 (R, C): what the GEMM sees -- 16-bit values in fallback blocks, INT8 elsewhere."""
        x = self.padded_dequantize()
        if self.mask is not None and self.hi is not None:
            m = _expand(self.mask, self.block)
            x = torch.where(m, self.hi.float(), x)
        return x[: self.shape[0], : self.shape[1]]

    @property
    def has_fallback(self) -> bool:
        """Whether any block of this operand is marked to run in 16-bit."""
        return self.mask is not None and bool(self.mask.any())

    @property
    def fallback_rate(self) -> float:
        return 0.0 if self.mask is None else self.mask.float().mean().item()

    def nbytes(self) -> int:
        """Bytes to keep this operand for the backward: int8 values, fp32 scales, the mask,
        and the 16-bit values of fallback blocks only."""
        n = self.q.numel() + 4 * self.scale.numel()
        if self.mask is not None:
            n += self.mask.numel()
            if self.hi is not None:
                n += int(self.mask.sum()) * self.block[0] * self.block[1] * self.hi.element_size()
        return n

    def compact(self) -> QTensor:
        """Keep only the fallback blocks of ``hi`` (packed (n, br, bc)): what is saved."""
        if self.mask is None or self.hi is None:
            return replace(self, hi=None)
        packed = _blocks(self.hi, self.block)[self.mask].clone()  # (n, br, bc)
        return replace(self, hi=packed)

    def expand_hi(self) -> QTensor:
        """Undo :meth:`compact`: a full 16-bit copy that holds the saved 16-bit values in
        fallback blocks and the dequantized INT8 values, rounded to 16-bit, elsewhere."""
        if self.hi is None or self.hi.ndim == 2:
            return self
        full = self.padded_dequantize().to(self.hi.dtype)
        _blocks(full, self.block)[self.mask] = self.hi
        return replace(self, hi=full)

    def padded_dequantize(self) -> Tensor:
        return _bcast(self.q.float(), self.scale, self.block)


def _block_stats(
    xp: Tensor, block: tuple[int, int], meansq: bool = True
) -> tuple[Tensor, Tensor | None]:
    """absmax and (if asked) mean square of each block of the padded fp32 matrix."""
    R, C = xp.shape
    b = xp.reshape(R // block[0], block[0], C // block[1], block[1])
    absmax = b.abs().amax(dim=(1, 3))
    # a block holding NaN or inf gets a NaN absmax (and so a NaN scale): it dequantizes to
    # NaN and the GEMM's output is NaN where it takes part, as a float GEMM's would be
    absmax = absmax.masked_fill(~torch.isfinite(absmax), float("nan"))
    return absmax, b.square().mean(dim=(1, 3)) if meansq else None


def _quantize_blocks(xp: Tensor, absmax: Tensor, block: tuple[int, int]) -> tuple[Tensor, Tensor]:
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    scale = torch.where(torch.isnan(absmax), absmax, safe / QMAX)  # NaN in, NaN out
    v = _bcast(xp, QMAX / safe, block)
    q = round_half_away(v).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def fallback_mask(absmax: Tensor, meansq: Tensor | None, rule: str, threshold: float) -> Tensor:
    """The rule of the module docstring on per-block statistics (Rb, Cb) -> bool (Rb, Cb)."""
    if rule == "relative":
        return absmax > threshold * absmax.flatten().median()
    if rule == "crest":
        return absmax > threshold * meansq.sqrt()
    if rule == "absolute":
        return absmax > threshold
    if rule == "topk":
        n = absmax.numel()
        k = int(math.floor(threshold * n + 1e-9))
        mask = torch.zeros(n, dtype=torch.bool, device=absmax.device)
        if k > 0:
            mask[absmax.flatten().topk(k).indices] = True
        return mask.view_as(absmax)
    raise ValueError(f"unknown fallback rule {rule!r}")


def _quantize(
    x: Tensor,
    block: tuple[int, int] | None,
    rule: str | None = None,
    threshold: float = 0.0,
    hi_dtype: torch.dtype = torch.bfloat16,
) -> QTensor:
    """Quantize a 2-D tensor block-wise (``block=None``: per tensor) and mark its fallback
    blocks with ``rule`` (None: no fallback)."""
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(x.shape)}")
    R, C = x.shape
    if block is None:
        block = (max(R, 1), max(C, 1))
    xp = _pad2d(x.float(), block)
    absmax, meansq = _block_stats(xp, block, meansq=rule == "crest")
    q, scale = _quantize_blocks(xp, absmax, block)
    if meansq is not None:
        # statistics over real elements: padded zeros would lower a tail block's RMS
        Rb, Cb = absmax.shape
        rows = torch.full((Rb,), block[0], device=x.device)
        rows[-1] = R - (Rb - 1) * block[0]
        cols = torch.full((Cb,), block[1], device=x.device)
        cols[-1] = C - (Cb - 1) * block[1]
        count = rows[:, None] * cols[None, :]
        meansq = meansq * (block[0] * block[1]) / count
    return _with_mask(x, q, scale, block, absmax, meansq, rule, threshold, hi_dtype)


def _with_mask(x, q, scale, block, absmax, meansq, rule, threshold, hi_dtype) -> QTensor:
    """The quantized operand with the rule's mask and, where any block falls back, the
    16-bit copy of ``x`` (shared by the reference and the kernel wrapper)."""
    mask = hi = None
    if rule is not None:
        mask = fallback_mask(absmax, meansq, rule, threshold)
        if bool(mask.any()):
            hi = _pad2d(x, block).to(hi_dtype)
    return QTensor(q, scale, tuple(block), tuple(x.shape), mask, hi)


def with_hi(qt: QTensor, x: Tensor, hi_dtype: torch.dtype = torch.bfloat16) -> QTensor:
    """Attach the 16-bit copy of ``x`` (for an operand whose partner may fall back)."""
    return replace(qt, hi=_pad2d(x, qt.block).to(hi_dtype))


def with_dequantized_hi(qt: QTensor, hi_dtype: torch.dtype = torch.bfloat16) -> QTensor:
    """A 16-bit copy made of the dequantized INT8 values (a saved activation none of whose
    blocks fell back, paired with a gradient that did)."""
    return replace(qt, hi=qt.padded_dequantize().to(hi_dtype))


def _check_pair(a: QTensor, b: QTensor) -> None:
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"GEMM shapes {a.shape} @ {b.shape} do not match")
    if a.block[1] != b.block[0]:
        raise ValueError(
            f"A's blocks {a.block} and B's blocks {b.block} must share the reduction step"
        )
    if a.q.shape[1] != b.q.shape[0]:
        raise ValueError("padded reduction lengths differ (blocks of different sizes)")


def _any_mask(a: QTensor, b: QTensor) -> bool:
    return a.has_fallback or b.has_fallback


def _mixed_gemm(a: QTensor, b: QTensor) -> Tensor:
    """Exact spec of the mixed GEMM (see the module docstring) -> fp32 (M, N)."""
    _check_pair(a, b)
    s = a.block[1]
    Mp, Kp = a.q.shape
    Np = b.q.shape[1]
    ra, cb = _expand(a.scale, (a.block[0], 1)), _expand(b.scale, (1, b.block[1]))  # (Mp,Kb),(Kb,Np)
    fb = _any_mask(a, b)
    if fb:
        ma = torch.zeros(a.scale.shape, dtype=torch.bool) if a.mask is None else a.mask
        mb = torch.zeros(b.scale.shape, dtype=torch.bool) if b.mask is None else b.mask
        ma = _expand(ma, (a.block[0], 1))  # (Mp, Kb)
        mb = _expand(mb, (1, b.block[1]))  # (Kb, Np)
        if a.hi is None or b.hi is None:
            raise ValueError("fallback blocks need the 16-bit copies of both operands")
    acc = torch.zeros(Mp, Np, dtype=torch.float32, device=a.q.device)
    for k in range(Kp // s):
        sl = slice(k * s, (k + 1) * s)
        prod = (a.q[:, sl].double() @ b.q[sl, :].double()).float()  # exact integers
        contrib = prod * (ra[:, k, None] * cb[None, k, :])
        if fb:
            hi = a.hi[:, sl].float() @ b.hi[sl, :].float()
            contrib = torch.where(ma[:, k, None] | mb[None, k, :], hi, contrib)
        acc += contrib
    return acc[: a.shape[0], : b.shape[1]]


def _mixed_gemm_fast(a: QTensor, b: QTensor) -> Tensor:
    """The same GEMM in a few dense fp32 matmuls (used for training on the CPU). Equal to
    :func:`_mixed_gemm` in exact arithmetic; differs only by fp32 rounding."""
    _check_pair(a, b)
    M, N = a.shape[0], b.shape[1]
    ad, bd = a.padded_dequantize(), b.padded_dequantize()  # (Mp, Kp), (Kp, Np)
    s = a.block[1]
    has_a, has_b = a.has_fallback, b.has_fallback
    if not (has_a or has_b):
        return (ad @ bd)[:M, :N]
    if has_a and not has_b:
        ma = _expand(a.mask, a.block)  # (Mp, Kp)
        # only the reduction blocks that hold a marked block take part in the 16-bit GEMM
        ks = torch.nonzero(a.mask.any(0)).flatten()
        cols = (ks[:, None] * s + torch.arange(s, device=ks.device)).flatten()
        hi = a.hi[:, cols].float().masked_fill_(~ma[:, cols], 0) @ b.hi[cols].float()
        return (ad.masked_fill_(ma, 0) @ bd + hi)[:M, :N]
    ah, bh = a.hi.float(), b.hi.float()
    if has_b and not has_a:
        mb = _expand(b.mask, b.block)  # (Kp, Np)
        return (ad @ bd.masked_fill_(mb, 0) + ah @ bh.masked_fill_(~mb, 0))[:M, :N]
    # a step is 16-bit where either side is marked: the INT8 part over the unmarked pairs,
    # plus 16-bit everywhere minus 16-bit over the unmarked pairs
    ma, mb = _expand(a.mask, a.block), _expand(b.mask, b.block)
    int_part = ad.masked_fill_(ma, 0) @ bd.masked_fill_(mb, 0)
    hi_part = ah @ bh - ah.masked_fill(ma, 0) @ bh.masked_fill(mb, 0)
    return (int_part + hi_part)[:M, :N]
