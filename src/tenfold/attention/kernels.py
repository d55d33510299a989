"""Triton kernels of low-bit attention: the fused smoothing + INT8 block quantization of Q
and K, the flash-style forward of ``qk_int8_pv_fp8`` / ``qk_int8_pv_fp16`` / ``int8_train``
(one kernel, the P.V numerics a ``tl.constexpr``), and the SageBwd backward of
``int8_train`` (a dK/dV kernel and a dQ kernel).

They compute what :mod:`tenfold.attention._ref` specifies (same quantization, same tiles:
64-key online-softmax steps, 64x64 backward tiles) and are registered as ``torch.library``
ops (``tenfold::sage_quant_int8``, ``tenfold::sage_fwd``, ``tenfold::sage_bwd``) with fake
implementations, so ``torch.compile`` traces through them. Loaded lazily: importing
:mod:`tenfold.attention` never imports Triton. On the CPU they run under the Triton
interpreter (``TRITON_INTERPRET=1``), whose FP8 down-cast is not round-to-nearest-even, so
there P's E4M3 rounding is done in fp32 arithmetic and the FP8 dot in fp32 (products of
E4M3 values are exact in fp32: the same arithmetic).
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..core.triton_util import available, cuda_arch, interpret, require, triton_modules
from . import _ref

__all__ = ["available", "attention", "quant_int8"]

BLOCK_N = 64  # keys per online-softmax step = K's INT8 block = the reference's kv_tile
BWD = _ref.BWD_TILE  # 64x64 backward tiles
_RNE = 12582912.0  # 1.5 * 2^23: (x + _RNE) - _RNE rounds |x| < 2^22 to nearest even


_triton = triton_modules
_interpret = interpret


def _require(x: Tensor) -> None:
    require(x, "tenfold.attention")


@functools.cache
def _kernels():
    from . import _triton as T

    return T.quant_kernel, T.fwd_kernel, T.bwd_dkdv_kernel, T.bwd_dq_kernel


# --------------------------------------------------------------------------------------
# torch.library ops
# --------------------------------------------------------------------------------------

_PV = {"qk_int8_pv_fp8": 0, "int8_train": 1, "qk_int8_pv_fp16": 2}


def _nblk(T: int, blk: int) -> int:
    return -(-T // blk)


@torch.library.custom_op("tenfold::sage_quant_int8", mutates_args=())
def _quant_op(x: Tensor, mean: Tensor | None, mult: float, block: int) -> tuple[Tensor, Tensor]:
    quant_kernel = _kernels()[0]
    B, H, T, D = x.shape
    q = torch.empty(B, H, T, D, dtype=torch.int8, device=x.device)
    s = torch.empty(B, H, _nblk(T, block), dtype=torch.float32, device=x.device)
    mu = mean if mean is not None else s
    quant_kernel[(_nblk(T, block), B * H)](
        x, mu, q, s, T, H, mult, *x.stride(), mu.stride(0) if mean is not None else 0,
        mu.stride(1) if mean is not None else 0, s.shape[-1],
        D=D, BLK=block, SMOOTH=mean is not None, **_quant_launch(D, block, _interpret()),
    )  # fmt: skip
    return q, s


@_quant_op.register_fake
def _(x, mean, mult, block):
    B, H, T, D = x.shape
    return x.new_empty(B, H, T, D, dtype=torch.int8), x.new_empty(
        B, H, _nblk(T, block), dtype=torch.float32
    )


def _quant_launch(D: int, block: int, interpreted: bool) -> dict:
    """8 warps for blocks of 8k values or more (4 spilled 80-352 B at 128 x D), else 4."""
    return {} if interpreted else {"num_warps": 8 if D * block >= 8192 else 4}


def _fwd_launch(D: int, interpreted: bool, arch: int = 90) -> tuple[int, dict]:
    """Query rows per program and launch options of the forward kernel on compute capability
    ``arch`` (one place: the wrapper launches with it, :func:`aot_specs` compiles with it).
    Chosen from ptxas' register counts (``results/gpu-readiness/aot-before.csv``, compiled
    without a launch's specialisation): 8 warps keep every variant under 255 registers
    without spills; Ada and Ampere take 64 query rows at head dim 64 (128 rows spilled
    184-392 B there)."""
    if interpreted:
        return 64, {}
    return (64 if D == 64 and arch < 90 else 128), {"num_warps": 8, "num_stages": 3}


def _bwd_launch(D: int, interpreted: bool) -> dict:
    """Launch options of the two backward kernels: 4 warps at head dim 64, 8 at 128, 3
    stages (with 2, dK/dV spilled 24 B at D=128 on sm_80; ``results/gpu-readiness``)."""
    return {} if interpreted else {"num_warps": 4 if D == 64 else 8, "num_stages": 3}


@torch.library.custom_op("tenfold::sage_fwd", mutates_args=())
def _fwd_op(
    qi: Tensor, qs: Tensor, ki: Tensor, ks: Tensor, v: Tensor, vs: Tensor,
    out_dtype: torch.dtype, causal_off: int, causal: bool, pv: int, q_block: int,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    fwd_kernel = _kernels()[1]
    B, H, Tq, D = qi.shape
    Hk, Tk = ki.shape[1], ki.shape[2]
    # the interpreter's fp32 -> bf16 cast truncates: there the output is cast by torch
    o = torch.empty(
        B, H, Tq, D, dtype=torch.float32 if _interpret() else out_dtype, device=qi.device
    )
    lse = torch.empty(B, H, Tq, dtype=torch.float32, device=qi.device)
    BM, launch = _fwd_launch(D, _interpret(), cuda_arch(qi))
    fwd_kernel[(_nblk(Tq, BM), B * H)](
        qi, qs, ki, ks, v, vs, o, lse, H, H // Hk, Tq, Tk, causal_off, qs.shape[-1],
        ks.shape[-1], *o.stride(),
        D=D, BM=BM, BN=BLOCK_N, QBLK=q_block, CAUSAL=causal, PV=pv, EMU=_interpret(), **launch,
    )  # fmt: skip
    return o.to(out_dtype), lse


@_fwd_op.register_fake
def _(qi, qs, ki, ks, v, vs, out_dtype, causal_off, causal, pv, q_block):
    B, H, Tq, D = qi.shape
    return qi.new_empty(B, H, Tq, D, dtype=out_dtype), qi.new_empty(B, H, Tq, dtype=torch.float32)


@torch.library.custom_op("tenfold::sage_bwd", mutates_args=())
def _bwd_op(
    qi: Tensor, qs: Tensor, ki: Tensor, ks: Tensor, v: Tensor, do: Tensor, doi: Tensor,
    dos: Tensor, lse: Tensor, delta: Tensor, causal_off: int, causal: bool, q_block: int,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    _, _, dkdv_kernel, dq_kernel = _kernels()
    B, H, Tq, D = qi.shape
    Hk, Tk = ki.shape[1], ki.shape[2]
    dq = torch.empty(B, H, Tq, D, dtype=torch.float32, device=qi.device)
    dk = torch.empty(B, H, Tk, D, dtype=torch.float32, device=qi.device)
    dv = torch.empty_like(dk)
    common = dict(D=D, BM=BWD, BN=BWD, QBLK=q_block, CAUSAL=causal, EMU=_interpret())
    common.update(_bwd_launch(D, _interpret()))
    dkdv_kernel[(_nblk(Tk, BWD), B * H)](
        qi, qs, ki, ks, v, do, doi, dos, lse, delta, dk, dv, H, H // Hk, Tq, Tk, causal_off,
        qs.shape[-1], ks.shape[-1], dos.shape[-1], *v.stride(), *do.stride(), **common,
    )  # fmt: skip
    dq_kernel[(_nblk(Tq, BWD), B * H)](
        qi, qs, ki, ks, v, do, lse, delta, dq, H, H // Hk, Tq, Tk, causal_off,
        qs.shape[-1], ks.shape[-1], *v.stride(), *do.stride(), **common,
    )  # fmt: skip
    if Hk != H:  # grouped-query attention: sum each K/V head's query heads
        dk = dk.view(B, Hk, H // Hk, Tk, D).sum(2)
        dv = dv.view(B, Hk, H // Hk, Tk, D).sum(2)
    return dq, dk, dv


@_bwd_op.register_fake
def _(qi, qs, ki, ks, v, do, doi, dos, lse, delta, causal_off, causal, q_block):
    return (
        torch.empty_like(qi, dtype=torch.float32),
        ki.new_empty(ki.shape, dtype=torch.float32),
        ki.new_empty(ki.shape, dtype=torch.float32),
    )


# --------------------------------------------------------------------------------------
# Wrappers: checks, then the ops
# --------------------------------------------------------------------------------------


def quant_int8(
    x: Tensor, block: int, mean: Tensor | None = None, mult: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Fused smoothing + INT8 quantization of (B, H, T, D): ``(x - mean) * mult`` with one
    absmax/127 scale per ``block`` tokens -> (int8 (B, H, T, D), scales (B, H, nblocks)).
    The kernel of :func:`tenfold.attention._ref.quant_int8_blocks`."""
    _require(x)
    if x.ndim != 4:
        raise ValueError(f"expected (B, H, T, D), got shape {tuple(x.shape)}")
    if x.shape[-1] & (x.shape[-1] - 1) or block & (block - 1):
        raise ValueError(f"head dim {x.shape[-1]} and block {block} must be powers of two")
    if mean is not None:
        mean = mean.float().contiguous()
        if mean.shape != (*x.shape[:2], x.shape[-1]):
            raise ValueError(f"mean must be (B, H, D), got {tuple(mean.shape)}")
    return _quant_op(x, mean, float(mult), block)


class _Int8Train(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale, causal, num):
        qi, qs, ki, ks, o, lse = _forward(q, k, v, "int8_train", scale, causal, num)
        ctx.save_for_backward(qi, qs, ki, ks, v, o, lse)
        ctx.scale, ctx.causal, ctx.num = scale, causal, num
        ctx.dtypes = (q.dtype, k.dtype, v.dtype)
        return o

    @staticmethod
    def backward(ctx, do):
        qi, qs, ki, ks, v, o, lse = ctx.saved_tensors
        delta = (do.float() * o.float()).sum(-1)  # (B, H, Tq)
        doi, dos = quant_int8(do, BWD)
        off = ki.shape[2] - qi.shape[2] if ctx.causal == "bottom_right" else 0
        dq, dk, dv = _bwd_op(
            qi, qs, ki, ks, v, do, doi, dos, lse, delta, off, ctx.causal is not None,
            ctx.num.q_block,
        )  # fmt: skip
        dq = dq * ctx.scale
        dk = dk / _ref.LOG2E
        return dq.to(ctx.dtypes[0]), dk.to(ctx.dtypes[1]), dv.to(ctx.dtypes[2]), None, None, None


def _forward(q, k, v, variant, scale, causal, num):
    qi, qs = quant_int8(q, num.q_block, mult=scale * _ref.LOG2E)
    kmean = k.float().mean(-2) if num.smooth in ("k", "qk") else None
    ki, ks = quant_int8(k, BLOCK_N, mean=kmean)
    pv = _PV[variant]
    if pv == 0:
        amax = v.float().abs().amax(-2)  # (B, Hkv, D): one scale per channel
        vs = amax.clamp_min(_ref.TINY) / _ref.E4M3_MAX
        # contiguous: the forward kernel reads V as (B, Hkv, Tk, D) rows, and an elementwise
        # op keeps a strided input's layout (layout="bthd" gave garbage without this)
        vq = (v.float() / vs[..., None, :]).to(torch.float8_e4m3fn).contiguous()
    elif pv == 1:
        vq, vs = quant_int8(v, BLOCK_N)
    else:
        vq, vs = v.to(torch.float16).contiguous(), qs  # vs unused
    off = k.shape[2] - q.shape[2] if causal == "bottom_right" else 0
    o, lse = _fwd_op(qi, qs, ki, ks, vq, vs, q.dtype, off, causal is not None, pv, num.q_block)
    return qi, qs, ki, ks, o, lse


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    variant: str,
    scale: float | None = None,
    causal: str | None = None,
) -> Tensor:
    """Kernel of :func:`tenfold.attention._ref._attention` for ``variant`` over
    (B, H, Tq, D) and (B, Hkv, Tk, D) (grouped-query attention read in place), fp16/bf16,
    head dim 64 or 128. ``causal``: None, ``"bottom_right"`` or ``"top_left"``.
    ``int8_train`` is differentiable (SageBwd backward)."""
    _require(q)
    if variant not in _PV:
        raise ValueError(f"no kernel for variant {variant!r}; kernels: {list(_PV)}")
    num = _ref.VARIANTS[variant]
    if q.ndim != 4 or k.ndim != 4 or k.shape != v.shape:
        raise ValueError(
            f"expected q (B, H, Tq, D), k and v (B, Hkv, Tk, D); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if k.shape[0] != q.shape[0] or k.shape[-1] != q.shape[-1]:
        raise ValueError(f"batch/head dim differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if q.shape[-1] not in (64, 128):
        raise ValueError(f"the kernels take head dim 64 or 128, got {q.shape[-1]}")
    if q.dtype not in (torch.float16, torch.bfloat16) or not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"the kernels take fp16/bf16 q, k, v of one dtype, got {q.dtype}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads {q.shape[1]} not a multiple of kv heads {k.shape[1]}")
    if causal not in (None, "bottom_right", "top_left"):
        raise ValueError(f"causal={causal!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if variant == "int8_train" and needs_grad:
        return _Int8Train.apply(q, k, v, scale, causal, num)
    return _forward(q, k, v, variant, scale, causal, num)[4]


# --------------------------------------------------------------------------------------
# Ahead-of-time compilation (tests/attention/test_attention_aot.py)
# --------------------------------------------------------------------------------------

_V_TYPE = {0: "*fp8e4nv", 1: "*i8", 2: "*fp16"}
_PV_NAME = {0: "fp8", 1: "int8", 2: "fp16"}


def aot_specs(full: bool = False) -> list[dict]:
    """Every kernel at the constexprs and launch options the wrappers above choose on a GPU,
    for the architectures the dispatcher sends each variant to (``auto``: FP8 P.V on 8.9+,
    FP16 P.V below; ``int8_train`` everywhere): what ``tenfold.core.triton_util`` compiles,
    each specialised as a launch on contiguous (B, H, T, D) = (2, 16, 4096, D) tensors with
    4 query heads per K/V head would be.
    ``full=False`` (the tests): each kernel, head dim and P.V mode at least once, causal and
    not alternating; ``full=True``: every combination."""
    from . import _triton as T

    qb = _ref.VARIANTS["int8_train"].q_block
    H, L = 16, 4096  # heads and sequence length of the example tensors

    def bhtd(D):  # strides of a contiguous (B, H, T, D) tensor
        return H * L * D, L * D, D, 1

    specs = []
    quant_types = {"x_ptr": "*fp16", "mean_ptr": "*fp32", "q_ptr": "*i8", "s_ptr": "*fp32",
                   "mult": "fp32"}  # fmt: skip
    for D in (64, 128):
        for blk, smooth in ((qb, False), (BLOCK_N, True), (BWD, False))[: 3 if full else 2]:
            specs.append(dict(fn=T.quant_kernel, arch=90, types=quant_types,
                              **_quant_launch(D, blk, False),
                              constexprs=dict(D=D, BLK=blk, SMOOTH=smooth),
                              label=f"D={D} BLK={blk} SMOOTH={int(smooth)}",
                              args=dict(zip(("sxb", "sxh", "sxt", "sxd"), bhtd(D)), T=L, H=H,
                                        smb=H * D if smooth else 0, smh=D if smooth else 0,
                                        nblk=_nblk(L, blk))))  # fmt: skip
    fwd_types = {"q_ptr": "*i8", "qs_ptr": "*fp32", "k_ptr": "*i8", "ks_ptr": "*fp32",
                 "vs_ptr": "*fp32", "o_ptr": "*fp16", "lse_ptr": "*fp32"}  # fmt: skip
    common = dict(H=H, REP=4, Tq=L, Tk=L, off=0, nqb=_nblk(L, qb), nkb=_nblk(L, BLOCK_N))
    i = 0
    for arch, pvs in ((90, (0, 1, 2)), (89, (0,)), (80, (2, 1))):
        for D in (64, 128):
            for pv in pvs:
                for causal in (True, False) if full else (i % 2 == 0,):
                    i += 1
                    BM, launch = _fwd_launch(D, False, arch)
                    specs.append(dict(
                        fn=T.fwd_kernel, arch=arch, **launch,
                        constexprs=dict(D=D, BM=BM, BN=BLOCK_N, QBLK=qb, CAUSAL=causal, PV=pv,
                                        EMU=False),
                        types={**fwd_types, "v_ptr": _V_TYPE[pv]},
                        label=f"D={D} BM={BM} PV={_PV_NAME[pv]} CAUSAL={int(causal)}",
                        args=dict(zip(("sob", "soh", "sot", "sod"), bhtd(D)), **common),
                    ))  # fmt: skip
    bwd_types = {"q_ptr": "*i8", "qs_ptr": "*fp32", "k_ptr": "*i8", "ks_ptr": "*fp32",
                 "v_ptr": "*bf16", "do_ptr": "*bf16", "doq_ptr": "*i8", "dos_ptr": "*fp32",
                 "lse_ptr": "*fp32", "dlt_ptr": "*fp32", "dk_ptr": "*fp32", "dv_ptr": "*fp32",
                 "dq_ptr": "*fp32"}  # fmt: skip
    for arch in (90, 80) if full else (90,):
        for D in (64, 128):
            for fn in (T.bwd_dkdv_kernel, T.bwd_dq_kernel):
                specs.append(dict(
                    fn=fn, arch=arch, **_bwd_launch(D, False), types=bwd_types,
                    constexprs=dict(D=D, BM=BWD, BN=BWD, QBLK=qb, CAUSAL=True, EMU=False),
                    label=f"D={D} CAUSAL=1",
                    args=dict(zip(("svb", "svh", "svt", "svd"), bhtd(D)),
                              **dict(zip(("sdb", "sdh", "sdt", "sdd"), bhtd(D))), **common,
                              **({"ndob": _nblk(L, BWD)} if fn is T.bwd_dkdv_kernel else {})),
                ))  # fmt: skip
    return specs
