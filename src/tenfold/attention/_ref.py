"""Reference numerics of low-bit attention (SageAttention2/3, SageBwd), in plain PyTorch.

This file is the spec that the kernels are tested against. So far it holds the number
formats and the quantizers the attention variants are built from:

* FP8 E4M3 (``e4m3``): round-to-nearest-even onto the E4M3 grid, saturating at +-448.
* FP4 E2M1 (``e2m1``): the eight magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}, round to nearest,
  ties to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
  5 -> 4), saturating at +-6.
* NVFP4 (``quant_nvfp4``): E2M1 values with one E4M3 scale per 16 consecutive elements of
  the last dim, scale = E4M3(absmax / 6).
* MXFP4 (``quant_mxfp4``): E2M1 values with one power-of-two (E8M0) scale per 32 elements,
  scale = 2^(floor(log2 absmax) - 2) (the OCP MX rule; 2 is E2M1's largest exponent).
* INT8 per token block (``quant_int8_blocks``): scale = absmax / 127 per block of tokens.

Every quantizer returns the dequantized tensor (float32) and its scales, so that a
reference attention computes ``softmax(dequant(Q) dequant(K)^T) dequant(V)`` in float.
"""

from __future__ import annotations

import torch
from torch import Tensor

E4M3_MAX = 448.0
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
    return grid[idx].copysign(x)


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
    scale = torch.where(amax > 0, amax, torch.ones_like(amax)) / 127.0
    q = torch.round(b / scale[..., None, None]).clamp(-127, 127)
    deq = (q * scale[..., None, None]).reshape(xp.shape)[..., :T, :]
    return deq.movedim(-2, dim), scale
