"""The Triton kernels of :mod:`tenfold.attention.kernels` (imported only when a kernel is
first used, so that ``import tenfold`` never imports Triton). See that module for what they
compute; :mod:`tenfold.attention._ref` is their spec."""

import triton
import triton.language as tl

# 2^-100, the floor of every absmax (_ref.TINY). A global a compiled kernel reads must be a
# tl.constexpr *object*: an annotated float (`TINY: tl.constexpr = ...`) works only in the
# interpreter and fails to compile ("Cannot access global variable TINY").
TINY = tl.constexpr(7.888609052210118e-31)


@triton.jit
def rne(x):
    return (x + 12582912.0) - 12582912.0


@triton.jit
def e4m3_grid(x):
    # x >= 0, <= 448 -> nearest E4M3 value (ties to even), in fp32
    bits = x.to(tl.int32, bitcast=True)
    e = tl.maximum(((bits >> 23) & 0xFF) - 127, -6)
    step = ((e - 3 + 127) << 23).to(tl.float32, bitcast=True)
    return rne(x / step) * step


@triton.jit
def quant_kernel(
    x_ptr, mean_ptr, q_ptr, s_ptr, T, H, mult,
    sxb, sxh, sxt, sxd, smb, smh, nblk,
    D: tl.constexpr, BLK: tl.constexpr, SMOOTH: tl.constexpr,
):  # fmt: skip
    # one program per (token block, batch*head): (x - mean) * mult -> INT8, absmax/127
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit: bh * T * D passes 2^31 on long sequences
    b = bh // H
    h = bh % H
    rows = pid * BLK + tl.arange(0, BLK)
    cols = tl.arange(0, D)
    inside = rows[:, None] < T
    ptrs = x_ptr + b * sxb + h * sxh + rows[:, None] * sxt + cols[None, :] * sxd
    x = tl.load(ptrs, mask=inside, other=0.0).to(tl.float32)
    if SMOOTH:
        mu = tl.load(mean_ptr + b * smb + h * smh + cols)
        x = tl.where(inside, x - mu[None, :], 0.0)
    x = x * mult
    amax = tl.max(tl.max(tl.abs(x), axis=1), axis=0)
    # x * 0 is NaN only for NaN/inf x: such a block gets a NaN scale, as in the reference
    # (clamp_min keeps NaN; tl.maximum on a GPU need not)
    nanflag = tl.sum(tl.sum(x * 0.0, axis=1), axis=0)
    s = tl.maximum(amax, TINY) / 127.0 + nanflag
    q = tl.minimum(tl.maximum(rne(x / s), -127.0), 127.0)
    qp = q_ptr + bh * T * D + rows[:, None] * D + cols[None, :]
    tl.store(qp, q.to(tl.int8), mask=inside)
    tl.store(s_ptr + bh * nblk + pid, s)


@triton.jit
def program_heads(H, REP):
    # (tile index, batch*head, batch, head, the K/V head it reads under grouped-query attention)
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # 64-bit offsets: B*H*T*D may pass 2^31
    b = bh // H
    h = bh % H
    return pid, bh, b, h, b * (H // REP) + h // REP


@triton.jit
def load_q_rows(q_ptr, qs_ptr, bh, start, Tq, nqb, D: tl.constexpr, BM: tl.constexpr,
                QBLK: tl.constexpr):  # fmt: skip
    # BM rows of INT8 Q from ``start`` with their per-row scales (0 beyond Tq)
    rows = start + tl.arange(0, BM)
    cols = tl.arange(0, D)
    in_q = rows < Tq
    q = tl.load(q_ptr + bh * Tq * D + rows[:, None] * D + cols[None, :],
                mask=in_q[:, None], other=0)  # fmt: skip
    qs = tl.load(qs_ptr + bh * nqb + rows // QBLK, mask=in_q, other=0.0)
    return rows, cols, in_q, q, qs


@triton.jit
def load_bwd_rows(q_ptr, qs_ptr, do_ptr, lse_ptr, dlt_ptr, bh, b, h, start, Tq, nqb,
                  sdb, sdh, sdt, sdd, D: tl.constexpr, BM: tl.constexpr, QBLK: tl.constexpr):  # fmt: skip
    # what the backward needs of BM query rows: INT8 Q and scales, 16-bit dO, LSE, rowsum(dO O)
    rows, cols, in_q, q, qs = load_q_rows(q_ptr, qs_ptr, bh, start, Tq, nqb, D, BM, QBLK)
    do16 = tl.load(do_ptr + b * sdb + h * sdh + rows[:, None] * sdt + cols[None, :] * sdd,
                   mask=in_q[:, None], other=0.0)  # fmt: skip
    lse = tl.load(lse_ptr + bh * Tq + rows, mask=in_q, other=float("-inf"))
    dlt = tl.load(dlt_ptr + bh * Tq + rows, mask=in_q, other=0.0)
    return rows, cols, in_q, q, qs, do16, lse, dlt


@triton.jit
def fwd_kernel(
    q_ptr, qs_ptr, k_ptr, ks_ptr, v_ptr, vs_ptr, o_ptr, lse_ptr,
    H, REP, Tq, Tk, off, nqb, nkb,
    sob, soh, sot, sod,
    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, QBLK: tl.constexpr,
    CAUSAL: tl.constexpr, PV: tl.constexpr, EMU: tl.constexpr,
):  # fmt: skip
    # PV: 0 = FP8 (P static 448, V per channel), 1 = INT8 (P per token, V per block),
    # 2 = fp16 P and V
    pid, bh, b, h, hk = program_heads(H, REP)
    rows, cols, in_q, q, qs = load_q_rows(q_ptr, qs_ptr, bh, pid * BM, Tq, nqb, D, BM, QBLK)
    m = tl.full((BM,), float("-inf"), tl.float32)
    l = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    hi = Tk
    if CAUSAL:
        hi = tl.minimum(Tk, pid * BM + BM + off)
    for start in range(0, hi, BN):
        keys = start + tl.arange(0, BN)
        in_k = keys < Tk
        kt = tl.load(k_ptr + hk * Tk * D + keys[None, :] * D + cols[:, None],
                     mask=in_k[None, :], other=0)  # fmt: skip
        ksc = tl.load(ks_ptr + hk * nkb + start // BN)
        s = tl.dot(q, kt, out_dtype=tl.int32).to(tl.float32) * (qs[:, None] * ksc)
        ok = in_k[None, :]
        if CAUSAL:
            ok = ok & (keys[None, :] <= rows[:, None] + off)
        s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m - m_safe)
        l = l * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        vp = v_ptr + hk * Tk * D + keys[:, None] * D + cols[None, :]
        if PV == 0:
            if EMU:
                v = tl.load(vp, mask=in_k[:, None], other=0.0).to(tl.float32)
                p8 = e4m3_grid(p * 448.0)
                acc += tl.dot(p8, v, input_precision="ieee")
            else:
                v = tl.load(vp, mask=in_k[:, None], other=0.0)
                p8 = (p * 448.0).to(tl.float8e4nv)
                acc += tl.dot(p8, v, out_dtype=tl.float32)
        elif PV == 1:
            v = tl.load(vp, mask=in_k[:, None], other=0)
            vsc = tl.load(vs_ptr + hk * nkb + start // BN)
            pmax = tl.max(p, axis=1)
            ps = tl.maximum(pmax, TINY) / 127.0
            pq = rne(p / ps[:, None]).to(tl.int8)
            acc += tl.dot(pq, v, out_dtype=tl.int32).to(tl.float32) * (ps[:, None] * vsc)
        else:
            v = tl.load(vp, mask=in_k[:, None], other=0.0)
            if EMU:
                acc += tl.dot(p.to(tl.float16).to(tl.float32), v.to(tl.float32),
                              input_precision="ieee")  # fmt: skip
            else:
                acc += tl.dot(p.to(tl.float16), v, out_dtype=tl.float32)
        m = m_new
    l_safe = tl.where(l > 0, l, 1.0)
    o = acc / l_safe[:, None]
    if PV == 0:
        vs = tl.load(vs_ptr + hk * D + cols)
        o = o * (vs[None, :] / 448.0)
    lse = tl.where(l > 0, m + tl.log2(l_safe), float("-inf"))
    tl.store(o_ptr + b * sob + h * soh + rows[:, None] * sot + cols[None, :] * sod,
             o.to(o_ptr.dtype.element_ty), mask=in_q[:, None])  # fmt: skip
    tl.store(lse_ptr + bh * Tq + rows, lse, mask=in_q)


@triton.jit
def bwd_tile(
    q, qs, k, ksc, do16, v16, lse, dlt, rows, keys, Tq, Tk, off,
    CAUSAL: tl.constexpr, EMU: tl.constexpr,
):  # fmt: skip
    # one 64x64 tile: P, dS (fp32) and dS in INT8 with its tile scale
    s = tl.dot(q, tl.trans(k), out_dtype=tl.int32).to(tl.float32) * (qs[:, None] * ksc)
    ok = (rows[:, None] < Tq) & (keys[None, :] < Tk)
    if CAUSAL:
        ok = ok & (keys[None, :] <= rows[:, None] + off)
    lse_safe = tl.where(lse == float("-inf"), float("inf"), lse)
    p = tl.where(ok, tl.exp2(s - lse_safe[:, None]), 0.0)
    if EMU:
        dp = tl.dot(do16.to(tl.float32), tl.trans(v16.to(tl.float32)), input_precision="ieee")
    else:
        dp = tl.dot(do16, tl.trans(v16), out_dtype=tl.float32)
    ds = p * (dp - dlt[:, None])
    dmax = tl.max(tl.max(tl.abs(ds), axis=1), axis=0)
    dss = tl.maximum(dmax, TINY) / 127.0
    dsq = tl.minimum(tl.maximum(rne(ds / dss), -127.0), 127.0).to(tl.int8)
    return p, dsq, dss


@triton.jit
def bwd_dkdv_kernel(
    q_ptr, qs_ptr, k_ptr, ks_ptr, v_ptr, do_ptr, doq_ptr, dos_ptr, lse_ptr, dlt_ptr,
    dk_ptr, dv_ptr, H, REP, Tq, Tk, off, nqb, nkb, ndob,
    svb, svh, svt, svd, sdb, sdh, sdt, sdd,
    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, QBLK: tl.constexpr,
    CAUSAL: tl.constexpr, EMU: tl.constexpr,
):  # fmt: skip
    pid, bh, b, h, hk = program_heads(H, REP)
    keys = pid * BN + tl.arange(0, BN)
    cols = tl.arange(0, D)
    in_k = keys < Tk
    k = tl.load(k_ptr + hk * Tk * D + keys[:, None] * D + cols[None, :],
                mask=in_k[:, None], other=0)  # fmt: skip
    ksc = tl.load(ks_ptr + hk * nkb + pid)
    v16 = tl.load(v_ptr + b * svb + (h // REP) * svh + keys[:, None] * svt + cols[None, :] * svd,
                  mask=in_k[:, None], other=0.0)  # fmt: skip
    dk = tl.zeros((BN, D), tl.float32)
    dv = tl.zeros((BN, D), tl.float32)
    lo = 0
    if CAUSAL:
        lo = tl.maximum(pid * BN - off, 0) // BM * BM
    for start in range(lo, Tq, BM):
        rows, cols, in_q, q, qs, do16, lse, dlt = load_bwd_rows(
            q_ptr, qs_ptr, do_ptr, lse_ptr, dlt_ptr, bh, b, h, start, Tq, nqb,
            sdb, sdh, sdt, sdd, D, BM, QBLK)  # fmt: skip
        p, dsq, dss = bwd_tile(q, qs, k, ksc, do16, v16, lse, dlt, rows, keys, Tq, Tk,
                               off, CAUSAL, EMU)  # fmt: skip
        pmax = tl.max(tl.max(p, axis=1), axis=0)
        ps = tl.maximum(pmax, TINY) / 127.0
        pq = rne(p / ps).to(tl.int8)
        doq = tl.load(doq_ptr + bh * Tq * D + rows[:, None] * D + cols[None, :],
                      mask=in_q[:, None], other=0)  # fmt: skip
        dos = tl.load(dos_ptr + bh * ndob + start // BM)
        dv += tl.dot(tl.trans(pq), doq, out_dtype=tl.int32).to(tl.float32) * (ps * dos)
        qsc = tl.load(qs_ptr + bh * nqb + start // QBLK)
        dk += tl.dot(tl.trans(dsq), q, out_dtype=tl.int32).to(tl.float32) * (dss * qsc)
    tl.store(dk_ptr + bh * Tk * D + keys[:, None] * D + cols[None, :], dk, mask=in_k[:, None])
    tl.store(dv_ptr + bh * Tk * D + keys[:, None] * D + cols[None, :], dv, mask=in_k[:, None])


@triton.jit
def bwd_dq_kernel(
    q_ptr, qs_ptr, k_ptr, ks_ptr, v_ptr, do_ptr, lse_ptr, dlt_ptr, dq_ptr,
    H, REP, Tq, Tk, off, nqb, nkb,
    svb, svh, svt, svd, sdb, sdh, sdt, sdd,
    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, QBLK: tl.constexpr,
    CAUSAL: tl.constexpr, EMU: tl.constexpr,
):  # fmt: skip
    pid, bh, b, h, hk = program_heads(H, REP)
    rows, cols, in_q, q, qs, do16, lse, dlt = load_bwd_rows(
        q_ptr, qs_ptr, do_ptr, lse_ptr, dlt_ptr, bh, b, h, pid * BM, Tq, nqb,
        sdb, sdh, sdt, sdd, D, BM, QBLK)  # fmt: skip
    dq = tl.zeros((BM, D), tl.float32)
    hi = Tk
    if CAUSAL:
        hi = tl.minimum(Tk, pid * BM + BM + off)
    for start in range(0, hi, BN):
        keys = start + tl.arange(0, BN)
        in_k = keys < Tk
        k = tl.load(k_ptr + hk * Tk * D + keys[:, None] * D + cols[None, :],
                    mask=in_k[:, None], other=0)  # fmt: skip
        ksc = tl.load(ks_ptr + hk * nkb + start // BN)
        v16 = tl.load(v_ptr + b * svb + (h // REP) * svh + keys[:, None] * svt
                      + cols[None, :] * svd, mask=in_k[:, None], other=0.0)  # fmt: skip
        p, dsq, dss = bwd_tile(q, qs, k, ksc, do16, v16, lse, dlt, rows, keys, Tq, Tk,
                               off, CAUSAL, EMU)  # fmt: skip
        dq += tl.dot(dsq, k, out_dtype=tl.int32).to(tl.float32) * (dss * ksc)
    tl.store(dq_ptr + bh * Tq * D + rows[:, None] * D + cols[None, :], dq, mask=in_q[:, None])
