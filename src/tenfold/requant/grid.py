"""Weight grids and bit packing: what a quantized weight is made of.

A weight matrix W (out, in) is cut into groups of ``group`` consecutive input columns per
output row. Each group has its own grid:

* **uniform** (RTN, GPTQ, AWQ): asymmetric min-max over a range that includes 0,
  ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)`` in [0, 2^b - 1],
  ``code = clamp(round(w / scale) + zero, 0, 2^b - 1)``, ``w_hat = (code - zero) * scale``.
  Zero is always on the grid; a group of zeros gets scale 1 and stays exactly zero.
* **codebook** (SqueezeLLM): ``w_hat = codebook[row, code]`` with 2^b values per row.

Codes are stored packed, ``bits`` bits each, little-endian within a byte stream
(:func:`pack_codes` / :func:`unpack_codes`), for any width 1-8. Scales are stored in fp16,
zero points as uint8, codebooks in fp16, so what is saved is what the model computes with:
:func:`uniform_params` rounds the scale to fp16 before the codes are chosen.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "groups_of",
    "uniform_params",
    "uniform_codes",
    "uniform_dequant",
    "rtn",
    "pack_codes",
    "unpack_codes",
]

SCALE_DTYPE = torch.float16  # what scales and codebooks are stored (and computed) in


def groups_of(in_features: int, group: int | None) -> int:
    """The group length actually used: ``group`` or the whole row when None; it must divide
    ``in_features`` (a clear error names both)."""
    g = in_features if group is None else int(group)
    if g <= 0 or in_features % g:
        raise ValueError(
            f"group size {group} does not divide the layer's {in_features} input features; "
            f"use a divisor of {in_features} (or group_size=None for one group per row)"
        )
    return g


def uniform_params(w: Tensor, bits: int, group: int) -> tuple[Tensor, Tensor]:
    """Per-group (scale, zero) of ``w`` (out, in): fp16 scales (out, in // group) and integer
    zero points stored as float (out, in // group). NaN anywhere in a group gives it a NaN
    scale (NaN in, NaN out)."""
    out_f, in_f = w.shape
    qmax = (1 << bits) - 1
    wg = w.float().reshape(out_f, in_f // group, group)  # (O, G, g)
    lo = wg.amin(-1).clamp(max=0.0)
    hi = wg.amax(-1).clamp(min=0.0)
    nan = torch.isnan(wg).any(-1)
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if torch.isinf(scale).any() or (scale > torch.finfo(SCALE_DTYPE).max).any():
        raise ValueError(
            "weights span more than the fp16 range of a group's scale (|w| ~ 1e7 and up); "
            "rescale the layer or check it for corrupted values"
        )
    # what is stored is what is used: fp16, rounded up so that the grid still spans the
    # group (rounding down would clip its largest values by more than half a step)
    s16 = scale.to(SCALE_DTYPE)
    up = torch.nextafter(s16, torch.full_like(s16, float("inf")))
    scale = torch.where(s16.float() < scale, up, s16).float()
    scale = torch.where(scale > 0, scale, torch.full_like(scale, 2.0**-24))  # fp16 underflow
    scale = torch.where(nan, torch.full_like(scale, float("nan")), scale)
    zero = torch.round(-lo / scale).clamp(0, qmax)
    zero = torch.where(nan, torch.zeros_like(zero), zero)
    return scale, zero


def _expand(p: Tensor, group: int) -> Tensor:
    return p.repeat_interleave(group, dim=1)  # (O, G) -> (O, G * g)


def uniform_codes(w: Tensor, scale: Tensor, zero: Tensor, bits: int, group: int) -> Tensor:
    """Integer codes (int64, in [0, 2^b - 1]) of ``w`` on the given grid."""
    s, z = _expand(scale, group), _expand(zero, group)
    q = torch.round(w.float() / s) + z
    q = torch.nan_to_num(q, nan=0.0)  # NaN groups carry a NaN scale: dequant stays NaN
    return q.clamp(0, (1 << bits) - 1).to(torch.int64)


def uniform_dequant(codes: Tensor, scale: Tensor, zero: Tensor, group: int) -> Tensor:
    """fp32 weights of ``codes`` on the grid."""
    return (codes.float() - _expand(zero, group)) * _expand(scale, group)


def rtn(w: Tensor, bits: int, group: int) -> Tensor:
    """Round-to-nearest on the per-group min-max grid -> the dequantized fp32 weight."""
    scale, zero = uniform_params(w, bits, group)
    return uniform_dequant(uniform_codes(w, scale, zero, bits, group), scale, zero, group)


def pack_codes(codes: Tensor, bits: int) -> Tensor:
    """Codes (any shape, values in [0, 2^bits)) -> a flat uint8 tensor of ceil(n*bits/8)
    bytes, the first code in the lowest bits of the first byte."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1-8, got {bits}")
    c = codes.reshape(-1).to(torch.int64)
    if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] for {bits} bits")
    if bits == 8:
        return c.to(torch.uint8)
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((c[:, None] >> shifts) & 1).reshape(-1)  # (n * bits,) bits, LSB first
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = 1 << torch.arange(8, dtype=torch.int64)
    return (stream.reshape(-1, 8) * weights).sum(1).to(torch.uint8)


def unpack_codes(packed: Tensor, bits: int, n: int) -> Tensor:
    """The first ``n`` codes of :func:`pack_codes`' stream (int64); a stream too short for
    ``n`` codes is a clear error, not garbage."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be 1-8, got {bits}")
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError(f"packed codes must be a flat uint8 tensor, got {packed.dtype} "
                         f"{tuple(packed.shape)}")  # fmt: skip
    need = -(-n * bits // 8)
    if packed.numel() != need:
        raise ValueError(f"{n} codes of {bits} bits need {need} bytes, got {packed.numel()}")
    p = packed.to(torch.int64)
    if bits == 8:
        return p
    stream = ((p[:, None] >> torch.arange(8, dtype=torch.int64)) & 1).reshape(-1)
    stream = stream[: n * bits].reshape(n, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(1)
