"""Triton kernels of fallback quantization: fused block quantization (absmax, scale, INT8
values and the statistics of the fallback rule in one pass) and the mixed INT8/16-bit GEMM.

They compute exactly what :mod:`tenfold.fallback._ref` specifies and are registered as
``torch.library`` ops (``tenfold::fallback_quantize``, ``tenfold::fallback_mixed_gemm``) with
fake implementations, so ``torch.compile`` traces through them. Loaded lazily: importing
:mod:`tenfold.fallback` never imports Triton. On the CPU they run under the Triton
interpreter (``TRITON_INTERPRET=1``), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..core.triton_util import available, cuda_arch, interpret, require, triton_modules
from . import _ref
from ._ref import QTensor

__all__ = ["available", "quantize", "mixed_gemm"]


def _require(x: Tensor) -> None:
    require(x, "tenfold.fallback")


@functools.cache
def _kernels():
    from . import _triton as T

    return T.quant_kernel, T.gemm_kernel


# --------------------------------------------------------------------------------------
# torch.library ops
# --------------------------------------------------------------------------------------


@torch.library.custom_op("tenfold::fallback_quantize", mutates_args=())
def _quantize_op(x: Tensor, br: int, bc: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    quant_kernel, _ = _kernels()
    R, C = x.shape
    Rp, Cp = _ref._ceil_to(R, br), _ref._ceil_to(C, bc)
    Rb, Cb = Rp // br, Cp // bc
    q = torch.empty(Rp, Cp, dtype=torch.int8, device=x.device)
    scale = torch.empty(Rb, Cb, dtype=torch.float32, device=x.device)
    absmax = torch.empty_like(scale)
    meansq = torch.empty_like(scale)
    quant_kernel[(Rb, Cb)](
        x, q, scale, absmax, meansq, R, C, x.stride(0), x.stride(1), q.stride(0), q.stride(1),
        Cb, BR=br, BC=bc,
    )  # fmt: skip
    return q, scale, absmax, meansq


@_quantize_op.register_fake
def _(x, br, bc):
    R, C = x.shape
    Rp, Cp = _ref._ceil_to(R, br), _ref._ceil_to(C, bc)
    s = x.new_empty(Rp // br, Cp // bc, dtype=torch.float32)
    return x.new_empty(Rp, Cp, dtype=torch.int8), s, torch.empty_like(s), torch.empty_like(s)


def _gemm_launch(
    step: int, interpreted: bool, arch: int = 90, hi: bool = False
) -> tuple[int, int, int, dict]:
    """(BK, BM, BN, launch options) of the GEMM for a reduction block ``step`` on compute
    capability ``arch``, ``hi`` when 16-bit blocks take part (one place: the wrapper launches
    with it, :func:`aot_specs` compiles with it). Chosen from ptxas' output
    (``results/gpu-readiness/aot.csv``): 128 x 128 tiles, 8 warps, 3 stages, except the
    16-bit path below Hopper, which takes 128 x 64 -- at 128 x 128 its staged 16-bit tiles
    need 128 KB of shared memory at a block side of 128 (Ada has 99 KB) and spill 12-56 B."""
    BK = min(1 << (step - 1).bit_length(), 128)
    if interpreted:
        return BK, 32, 32, {}
    return BK, 128, (64 if hi and arch < 90 else 128), {"num_warps": 8, "num_stages": 3}


@torch.library.custom_op("tenfold::fallback_mixed_gemm", mutates_args=())
def _gemm_op(
    aq: Tensor,
    a_s: Tensor,
    am: Tensor | None,
    ah: Tensor | None,
    bq: Tensor,
    b_s: Tensor,
    bm: Tensor | None,
    bh: Tensor | None,
    M: int,
    N: int,
    step: int,
    a_rows: int,
    b_cols: int,
) -> Tensor:
    _, gemm_kernel = _kernels()
    triton, _tl = triton_modules()
    Mp, K = aq.shape
    Np = bq.shape[1]
    c = torch.empty(M, N, dtype=torch.float32, device=aq.device)
    BK, BM, BN, launch = _gemm_launch(step, interpret(), cuda_arch(aq), ah is not None)
    dummy = a_s  # never read when the matching MASK flag is off

    def st(t):
        return (t.stride(0), t.stride(1)) if t is not None else (0, 0)

    grid = (triton.cdiv(M, BM), triton.cdiv(N, BN))
    gemm_kernel[grid](
        aq, a_s, am if am is not None else dummy, ah if ah is not None else dummy,
        bq, b_s, bm if bm is not None else dummy, bh if bh is not None else dummy, c,
        M, N, Mp, Np, K,
        *st(aq), *st(a_s), *st(am), *st(ah), *st(bq), *st(b_s), *st(bm), *st(bh), *st(c),
        S=step, BK=BK, BA_R=a_rows, BB_C=b_cols, BM=BM, BN=BN,
        A_MASK=am is not None, B_MASK=bm is not None, HI_FP32=interpret(), **launch,
    )  # fmt: skip
    return c


@_gemm_op.register_fake
def _(aq, a_s, am, ah, bq, b_s, bm, bh, M, N, step, a_rows, b_cols):
    return aq.new_empty(M, N, dtype=torch.float32)


# --------------------------------------------------------------------------------------
# Wrappers: checks, then the ops
# --------------------------------------------------------------------------------------


def quantize(
    x: Tensor,
    block: tuple[int, int] | None,
    rule: str | None = None,
    threshold: float = 0.0,
    hi_dtype: torch.dtype = torch.bfloat16,
) -> QTensor:
    """Kernel of :func:`tenfold.fallback._ref._quantize` (same arguments, same result)."""
    _require(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"quantize takes fp32/fp16/bf16, got {x.dtype}")
    if block is None:
        # one block for the whole tensor: the kernel's tile would be the whole matrix,
        # so the per-tensor absmax is taken by torch and the rest follows the reference
        return _ref._quantize(x, None, rule, threshold, hi_dtype)
    if any(b & (b - 1) for b in block):
        raise ValueError(f"the kernel needs power-of-two block sides, got {block}")
    q, scale, absmax, meansq = _quantize_op(x, block[0], block[1])
    return _ref._with_mask(x, q, scale, block, absmax, meansq, rule, threshold, hi_dtype)


def mixed_gemm(a: QTensor, b: QTensor) -> Tensor:
    """Kernel of :func:`tenfold.fallback._ref._mixed_gemm` -> fp32 (M, N)."""
    _require(a.q)
    _ref._check_pair(a, b)
    if a.q.dtype != torch.int8 or b.q.dtype != torch.int8:
        raise TypeError("mixed_gemm needs int8 values in both operands")
    if a.q.device != b.q.device:
        raise ValueError(f"operands on different devices: {a.q.device} and {b.q.device}")
    step = a.block[1]
    fb = _ref._any_mask(a, b)
    if fb and (a.hi is None or b.hi is None):
        raise ValueError("fallback blocks need the 16-bit copies of both operands")
    am = a.mask.to(torch.uint8) if fb and a.mask is not None else None
    bm = b.mask.to(torch.uint8) if fb and b.mask is not None else None
    return _gemm_op(
        a.q,
        a.scale,
        am,
        a.hi if fb else None,
        b.q,
        b.scale,
        bm,
        b.hi if fb else None,
        a.shape[0],
        b.shape[1],
        step,
        a.block[0],
        b.block[1],
    )


# --------------------------------------------------------------------------------------
# Ahead-of-time compilation (tests/fallback/test_fallback_aot.py)
# --------------------------------------------------------------------------------------


def aot_specs(full: bool = False) -> list[dict]:
    """The quantize kernel for the block shapes the config allows and the GEMM with and
    without 16-bit blocks, at the tiles and launch options of the wrappers above, for the
    architectures with INT8 tensor cores that tenfold targets (Ampere, Ada, Hopper), each
    specialised as a launch on contiguous 4096 x 4096 operands is (what ``mixed_gemm``
    always gets: the quantized values and 16-bit copies it reads are fresh contiguous
    buffers). ``full=False`` (the tests): the smallest and largest reduction blocks;
    ``full=True``: every block side."""
    from . import _triton as T
    from .api import BLOCK_SIDES

    n = 4096  # rows, columns and reduction length of the example operands
    sides = BLOCK_SIDES if full else (BLOCK_SIDES[0], BLOCK_SIDES[-1])
    specs = []
    for br, bc in [(s, s) for s in sides] + [(BLOCK_SIDES[-1], BLOCK_SIDES[0])]:
        specs.append(dict(
            fn=T.quant_kernel, arch=90, constexprs=dict(BR=br, BC=bc),
            types={"x_ptr": "*bf16", "q_ptr": "*i8", "scale_ptr": "*fp32",
                   "absmax_ptr": "*fp32", "meansq_ptr": "*fp32"},
            args=dict(R=n, C=n, sxr=n, sxc=1, sqr=n, sqc=1, Cb=n // bc), label=f"BR={br} BC={bc}",
        ))  # fmt: skip
    types = {"aq": "*i8", "a_s": "*fp32", "am": "*u8", "ah": "*bf16", "bq": "*i8",
             "b_s": "*fp32", "bm": "*u8", "bh": "*bf16", "c": "*fp32"}  # fmt: skip
    for arch in (90, 89, 80):
        for step in sides:
            kb = n // step  # blocks along the reduction
            args = dict(M=n, N=n, Mp=n, Np=n, K=n, saq0=n, saq1=1, sas0=kb, sas1=1, sam0=kb,
                        sam1=1, sah0=n, sah1=1, sbq0=n, sbq1=1, sbs0=n // 32, sbs1=1,
                        sbm0=n // 32, sbm1=1, sbh0=n, sbh1=1, sc0=n, sc1=1)  # fmt: skip
            for masks in ((False, False), (True, False), (True, True)):
                if arch != 90 and masks == (True, False):
                    continue
                BK, BM, BN, launch = _gemm_launch(step, False, arch, hi=any(masks))
                specs.append(dict(
                    fn=T.gemm_kernel, arch=arch, **launch, types=types, args=args,
                    constexprs=dict(S=step, BK=BK, BA_R=32, BB_C=32, BM=BM, BN=BN,
                                    A_MASK=masks[0], B_MASK=masks[1], HI_FP32=False),
                    label=f"S={step} BK={BK} BM={BM} BN={BN} A_MASK={int(masks[0])} "
                    f"B_MASK={int(masks[1])}",
                ))  # fmt: skip
    return specs
