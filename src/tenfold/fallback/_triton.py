"""The Triton kernels of :mod:`tenfold.fallback.kernels` (imported only when a kernel is
first used, so that ``import tenfold`` never imports Triton): fused block quantization and
the mixed INT8/16-bit GEMM. :mod:`tenfold.fallback._ref` is their spec."""

import triton
import triton.language as tl


@triton.jit
def quant_kernel(
    x_ptr, q_ptr, scale_ptr, absmax_ptr, meansq_ptr,
    R, C, sxr, sxc, sqr, sqc, Cb,
    BR: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    # one program per (BR, BC) block: absmax, mean square, scale and INT8 values
    rb = tl.program_id(0).to(tl.int64)  # 64-bit offsets: rows * stride may pass 2^31
    cb = tl.program_id(1).to(tl.int64)
    rows = rb * BR + tl.arange(0, BR)
    cols = cb * BC + tl.arange(0, BC)
    inside = (rows[:, None] < R) & (cols[None, :] < C)
    x = tl.load(x_ptr + rows[:, None] * sxr + cols[None, :] * sxc, mask=inside, other=0.0)
    x = x.to(tl.float32)
    # x * 0 is 0 for finite x and NaN for NaN/inf: a block holding one gets a NaN absmax and
    # a NaN scale (tl.max alone need not propagate NaN), as in the reference
    nanflag = tl.sum(tl.sum(x * 0.0, axis=1), axis=0)
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0) + nanflag
    n_r = tl.minimum(R - rb * BR, BR)
    n_c = tl.minimum(C - cb * BC, BC)
    msq = tl.sum(tl.sum(x * x, axis=1), axis=0) / (n_r * n_c).to(tl.float32)
    safe = tl.where(amax > 0, amax, 1.0)
    inv = 127.0 / safe
    v = x * inv
    q = tl.where(v >= 0, tl.floor(v + 0.5), tl.ceil(v - 0.5))
    q = tl.minimum(tl.maximum(q, -127.0), 127.0)
    tl.store(q_ptr + rows[:, None] * sqr + cols[None, :] * sqc, q.to(tl.int8))
    tl.store(scale_ptr + rb * Cb + cb, safe / 127.0 + nanflag)
    tl.store(absmax_ptr + rb * Cb + cb, amax)
    tl.store(meansq_ptr + rb * Cb + cb, msq)


@triton.jit
def gemm_kernel(
    aq, a_s, am, ah, bq, b_s, bm, bh, c,
    M, N, Mp, Np, K,
    saq0, saq1, sas0, sas1, sam0, sam1, sah0, sah1,
    sbq0, sbq1, sbs0, sbs1, sbm0, sbm1, sbh0, sbh1,
    sc0, sc1,
    S: tl.constexpr, BK: tl.constexpr, BA_R: tl.constexpr, BB_C: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr,
    A_MASK: tl.constexpr, B_MASK: tl.constexpr, HI_FP32: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0).to(tl.int64)  # 64-bit offsets: M * K may pass 2^31
    pid_n = tl.program_id(1).to(tl.int64)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_k = tl.arange(0, BK)
    in_m = offs_m < Mp
    in_n = offs_n < Np
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k in range(0, K // S):
        sa = tl.load(a_s + (offs_m // BA_R) * sas0 + k * sas1, mask=in_m, other=0.0)
        sb = tl.load(b_s + k * sbs0 + (offs_n // BB_C) * sbs1, mask=in_n, other=0.0)
        acc_i = tl.zeros((BM, BN), dtype=tl.int32)
        for kk in range(0, S, BK):
            ks = k * S + kk + offs_k
            in_k = (kk + offs_k) < S
            a = tl.load(
                aq + offs_m[:, None] * saq0 + ks[None, :] * saq1,
                mask=in_m[:, None] & in_k[None, :],
                other=0,
            )
            b = tl.load(
                bq + ks[:, None] * sbq0 + offs_n[None, :] * sbq1,
                mask=in_k[:, None] & in_n[None, :],
                other=0,
            )
            acc_i += tl.dot(a, b, out_dtype=tl.int32)
        contrib = acc_i.to(tl.float32) * (sa[:, None] * sb[None, :])
        if A_MASK or B_MASK:
            # the fallback flags stay vectors (a row of A or a column of B falls back), and
            # the epilogue adds the INT8 and the 16-bit part one after the other, so that no
            # more than two (BM, BN) tiles are live at a time (register pressure)
            fa = tl.zeros((BM,), dtype=tl.int32)
            fn = tl.zeros((BN,), dtype=tl.int32)
            if A_MASK:
                fa = tl.load(am + (offs_m // BA_R) * sam0 + k * sam1, mask=in_m, other=0)
                fa = fa.to(tl.int32)
            if B_MASK:
                fn = tl.load(bm + k * sbm0 + (offs_n // BB_C) * sbm1, mask=in_n, other=0)
                fn = fn.to(tl.int32)
            fb = (fa[:, None] | fn[None, :]) != 0
            acc += tl.where(fb, 0.0, contrib)
            if tl.max(fa, axis=0) + tl.max(fn, axis=0) > 0:
                hi = tl.zeros((BM, BN), dtype=tl.float32)
                for kk in range(0, S, BK):
                    ks = k * S + kk + offs_k
                    in_k = (kk + offs_k) < S
                    a16 = tl.load(
                        ah + offs_m[:, None] * sah0 + ks[None, :] * sah1,
                        mask=in_m[:, None] & in_k[None, :],
                        other=0.0,
                    )
                    b16 = tl.load(
                        bh + ks[:, None] * sbh0 + offs_n[None, :] * sbh1,
                        mask=in_k[:, None] & in_n[None, :],
                        other=0.0,
                    )
                    if HI_FP32:
                        # the interpreter mis-computes 16-bit dots; products of 16-bit
                        # values are exact in fp32, so this is the same arithmetic
                        hi += tl.dot(a16.to(tl.float32), b16.to(tl.float32), input_precision="ieee")
                    else:
                        hi += tl.dot(a16, b16)
                acc += tl.where(fb, hi, 0.0)
        else:
            acc += contrib
    out = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c + offs_m[:, None] * sc0 + offs_n[None, :] * sc1, acc, mask=out)
