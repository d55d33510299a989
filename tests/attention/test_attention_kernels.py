"""Triton kernels against the reference, on the CPU through the Triton interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 before triton is imported)."""

import pytest
import torch

from tenfold.attention import _ref as R
from tenfold.attention import sageattn

kernels = pytest.importorskip("tenfold.attention.kernels")
pytestmark = pytest.mark.skipif(not kernels.available(), reason="needs Triton (interpreter or GPU)")

# Thresholds (relative L2 error). Kernel and reference quantize identically and differ only
# by fp32 summation order and the fp16 rounding of the output (~2e-4 measured), so they must
# agree to KERNEL_TOL; each agrees with float64 only to >= 1e-2 (the quantization error),
# which the tests check too, so KERNEL_TOL is at least 10x tighter than the numerics.
KERNEL_TOL = 1e-3
NUMERICS_MIN = 5e-3
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter runs CPU tensors


def _rl2(a, b):
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _qkv(B, H, Hk, Tq, Tk, D, dtype=torch.float16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Tq, D, generator=g)
    k = torch.randn(B, Hk, Tk, D, generator=g) + 1.5
    v = torch.randn(B, Hk, Tk, D, generator=g)
    return q.to(DEV, dtype), k.to(DEV, dtype), v.to(DEV, dtype)


def _expand(x, H):
    return x.repeat_interleave(H // x.shape[1], 1)


def test_quant_kernel_is_bit_exact():
    x = torch.randn(2, 3, 200, 64).half().to(DEV)
    mean = x.float().mean(-2)
    q, s = kernels.quant_int8(x, 64, mean=mean, mult=0.37)
    deq = q.float() * s.repeat_interleave(64, -1)[..., :200, None]  # (2, 3, 200, 64)
    ref, ref_s = R.quant_int8_blocks((x.float() - mean[..., None, :]) * 0.37, 64)
    torch.testing.assert_close(s, ref_s, rtol=0, atol=0)
    torch.testing.assert_close(deq, ref, rtol=0, atol=0)


CASES = [  # B, H, Hk, Tq, Tk, D, causal
    (1, 2, 1, 100, 150, 64, "bottom_right"),  # GQA, KV cache (Tq < Tk), ragged tiles
    (1, 2, 2, 130, 70, 64, None),
    (2, 2, 2, 80, 48, 64, "bottom_right"),  # Tq > Tk: the first queries see no key
    (1, 2, 2, 96, 96, 128, "top_left"),
]


@pytest.mark.parametrize("variant", ["qk_int8_pv_fp8", "qk_int8_pv_fp16", "int8_train"])
@pytest.mark.parametrize("case", CASES)
def test_forward_matches_reference(variant, case):
    B, H, Hk, Tq, Tk, D, causal = case
    q, k, v = _qkv(B, H, Hk, Tq, Tk, D)
    o = kernels.attention(q, k, v, variant, causal=causal)
    assert o.dtype == q.dtype and o.shape == q.shape
    ke, ve = _expand(k, H), _expand(v, H)
    ref = R.attention_fwd(q, ke, ve, R.VARIANTS[variant], causal=causal)[0]
    ex = R.attention_exact(q, ke, ve, causal=causal)
    assert _rl2(o, ref) < KERNEL_TOL
    assert _rl2(ref, ex) > NUMERICS_MIN  # the numerics are really quantized


@pytest.mark.parametrize("case", CASES[:3])
def test_int8_train_gradients_match_reference(case):
    B, H, Hk, Tq, Tk, D, causal = case
    q, k, v = _qkv(B, H, Hk, Tq, Tk, D, dtype=torch.bfloat16)
    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    o = kernels.attention(*xs, "int8_train", causal=causal)
    do = torch.randn_like(o)
    o.backward(do)
    rs = [t.clone().requires_grad_() for t in (q, k, v)]
    num = R.VARIANTS["int8_train"]
    R._attention(rs[0], _expand(rs[1], H), _expand(rs[2], H), num, causal=causal).backward(do)
    es = [t.double().requires_grad_() for t in (q, k, v)]
    R.attention_exact(es[0], _expand(es[1], H), _expand(es[2], H), causal=causal).backward(
        do.double()
    )
    for name, a, r, e in zip("qkv", xs, rs, es):
        assert a.grad.dtype == torch.bfloat16, name
        # bf16 gradients (the reference sums GQA heads in bf16, the kernel in fp32): ~3e-3
        assert _rl2(a.grad, r.grad) < 5 * KERNEL_TOL, name
        assert _rl2(r.grad, e.grad) > NUMERICS_MIN, name


def test_sageattn_triton_backend_and_its_errors():
    q, k, v = _qkv(1, 2, 2, 64, 64, 64)
    o = sageattn(q, k, v, is_causal=True, variant="qk_int8_pv_fp8", backend="triton")
    ref = R.attention_fwd(q, k, v, R.VARIANTS["qk_int8_pv_fp8"], causal="bottom_right")[0]
    assert _rl2(o, ref) < KERNEL_TOL
    from tenfold.attention import UnsupportedAttention

    with pytest.raises(UnsupportedAttention, match="fp16/bf16"):
        sageattn(q.float(), k.float(), v.float(), variant="int8_train", backend="triton")
    with pytest.raises(UnsupportedAttention, match="head dim"):
        sageattn(q[..., :32], k[..., :32], v[..., :32], variant="int8_train", backend="triton")
    with pytest.raises(UnsupportedAttention, match="Blackwell"):
        sageattn(q, k, v, variant="fp4_nvfp4", backend="triton")
    with pytest.raises(ValueError, match="no kernel for variant"):
        kernels.attention(q, k, v, "fp4_mxfp4")


def test_ops_pass_opcheck():
    q, k, v = _qkv(1, 2, 1, 64, 64, 64)
    qi, qs = kernels.quant_int8(q, 128, mult=0.2)
    ki, ks = kernels.quant_int8(k, 64, mean=k.float().mean(-2))
    vi, vs = kernels.quant_int8(v, 64)
    torch.library.opcheck(torch.ops.tenfold.sage_quant_int8, (q, None, 0.2, 128))
    args = (qi, qs, ki, ks, vi, vs, torch.float16, 0, True, 1, 128)
    torch.library.opcheck(torch.ops.tenfold.sage_fwd, args)
    o, lse = torch.ops.tenfold.sage_fwd(*args)
    do = torch.randn_like(o)
    doi, dos = kernels.quant_int8(do, 64)
    delta = (do.float() * o.float()).sum(-1)
    bwd = (qi, qs, ki, ks, v, do, doi, dos, lse, delta, 0, True, 128)
    torch.library.opcheck(torch.ops.tenfold.sage_bwd, bwd)


def test_kernels_refuse_cpu_tensors_outside_the_interpreter(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kernels.available()
    q, k, v = _qkv(1, 1, 1, 64, 64, 64)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.attention(q, k, v, "int8_train")


def test_int8_train_kernel_under_torch_compile():
    # the ops' fake implementations let dynamo trace the autograd function around them
    q, k, v = _qkv(1, 2, 1, 64, 64, 64, dtype=torch.bfloat16)

    def f(q, k, v):
        return kernels.attention(q, k, v, "int8_train", causal="bottom_right")

    xs = [t.clone().requires_grad_() for t in (q, k, v)]
    f(*xs).float().square().sum().backward()
    cs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(*cs)
    out.float().square().sum().backward()
    torch.testing.assert_close(out, f(q, k, v))
    for a, c in zip(xs, cs):
        torch.testing.assert_close(a.grad, c.grad)


@pytest.mark.parametrize("D", [32, 256])
def test_reference_covers_head_dims_the_kernels_do_not(D):
    q, k, v = _qkv(1, 2, 2, 70, 70, D, dtype=torch.float32)
    o = sageattn(q, k, v, variant="qk_int8_pv_fp8", backend="reference")
    ex = R.attention_exact(q, k, v)
    assert (
        float(torch.nn.functional.cosine_similarity(o.double().flatten(), ex.flatten(), 0)) > 0.999
    )


# ---------------------------------------------------------------- strided and odd inputs
# Every kernel variant on inputs that are not contiguous (B, H, T, D) tensors: the BTHD layout
# (the kernels' default for many models), sliced and transposed views, GQA with 4 query
# heads per K/V head, lengths that are not multiples of the tiles, causal with Tq != Tk.
# Each against the reference on the same (materialised) values.

VARIANTS_K = ["qk_int8_pv_fp8", "qk_int8_pv_fp16", "int8_train"]


def _views(kind, B, H, Hk, Tq, Tk, D, seed=0):
    """q, k, v as ``kind`` views (B, H, T, D) of bigger or permuted storage."""
    g = torch.Generator().manual_seed(seed)

    def mk(h, t):
        if kind == "bthd":  # (B, T, H, D) storage seen as (B, H, T, D)
            return torch.randn(B, t, h, D, generator=g).to(DEV, torch.float16).transpose(1, 2)
        if kind == "sliced":  # every other token of a longer sequence, a slice of heads
            return torch.randn(B, h + 1, 2 * t, D, generator=g).to(DEV, torch.float16)[:, 1:, ::2]
        if kind == "transposed":  # (B, H, D, T) storage transposed to (B, H, T, D)
            return torch.randn(B, h, D, t, generator=g).to(DEV, torch.float16).transpose(2, 3)
        return torch.randn(B, h, t, D, generator=g).to(DEV, torch.float16)

    q, k, v = mk(H, Tq), mk(Hk, Tk) + 1.5, mk(Hk, Tk)
    assert kind == "contiguous" or not q.is_contiguous()  # (V is too unless Hk == 1)
    return q, k, v


ODD = [  # kind, B, H, Hk, Tq, Tk, D, causal
    ("bthd", 1, 2, 2, 65, 65, 64, None),
    ("bthd", 1, 4, 1, 63, 130, 128, "bottom_right"),  # GQA 4:1, KV cache
    ("sliced", 1, 2, 2, 70, 70, 64, "top_left"),
    ("transposed", 1, 2, 2, 33, 97, 64, None),
    ("sliced", 2, 8, 2, 1, 65, 64, "bottom_right"),  # one query (decoding), GQA 4:1
    ("contiguous", 1, 1, 1, 1000, 1000, 64, "top_left"),  # many ragged tiles
]


@pytest.mark.parametrize("variant", VARIANTS_K)
@pytest.mark.parametrize("case", ODD, ids=lambda c: "-".join(map(str, c)))
def test_strided_and_odd_inputs_match_reference(variant, case):
    kind, B, H, Hk, Tq, Tk, D, causal = case
    q, k, v = _views(kind, B, H, Hk, Tq, Tk, D)
    o = kernels.attention(q, k, v, variant, causal=causal)
    qc, kc, vc = (t.contiguous() for t in (q, k, v))
    ref = R.attention_fwd(qc, _expand(kc, H), _expand(vc, H), R.VARIANTS[variant], causal=causal)[0]
    assert _rl2(o, ref) < KERNEL_TOL, f"{variant} on {kind} inputs"


@pytest.mark.parametrize("variant", VARIANTS_K)
def test_sageattn_bthd_layout_through_the_kernels(variant):
    """layout='bthd' end to end: the FP8 P.V path once read V's strides wrongly (error 1.29)."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 80, 2, 64, generator=g).to(DEV, torch.float16) for _ in range(3))
    o = sageattn(q, k, v, variant=variant, backend="triton", layout="bthd")
    ref = R.attention_fwd(
        *(t.transpose(1, 2).contiguous() for t in (q, k, v)), R.VARIANTS[variant]
    )[0].transpose(1, 2)
    assert o.shape == q.shape and _rl2(o, ref) < KERNEL_TOL


@pytest.mark.parametrize("kind", ["bthd", "sliced"])
def test_int8_train_gradients_on_strided_inputs(kind):
    q, k, v = _views(kind, 1, 4, 1, 65, 70, 64)
    q, k, v = (t.to(torch.bfloat16) for t in (q, k, v))
    xs = [t.detach().requires_grad_() for t in (q, k, v)]
    o = kernels.attention(*xs, "int8_train", causal="bottom_right")
    do = torch.randn_like(o)
    o.backward(do)
    rs = [t.detach().contiguous().requires_grad_() for t in (q, k, v)]
    R._attention(
        rs[0], _expand(rs[1], 4), _expand(rs[2], 4), R.VARIANTS["int8_train"], causal="bottom_right"
    ).backward(do)
    for name, a, r in zip("qkv", xs, rs):
        assert _rl2(a.grad, r.grad) < 5 * KERNEL_TOL, name


def test_quant_kernel_propagates_non_finite_input():
    x = torch.randn(1, 2, 100, 64).half().to(DEV)
    x[0, 1, 5, 3] = float("nan")
    x[0, 0, 70, 0] = float("inf")
    _, s = kernels.quant_int8(x, 64)
    assert torch.isnan(s[0, 1, 0]) and torch.isnan(s[0, 0, 1])  # the blocks that hold them
    assert torch.isfinite(s[0, 1, 1]) and torch.isfinite(s[0, 0, 0])
