"""The mixed INT8/16-bit GEMM: the exact spec, its fast form, and the Triton kernels, which
run here under the Triton interpreter (TRITON_INTERPRET=1) at small shapes."""

import importlib.util

import pytest
import torch

from tenfold.core.metrics import sqnr
from tenfold.fallback import _ref

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="Triton is not installed"
)


@pytest.fixture
def interpret(monkeypatch):
    """Kernels on the CPU run in the interpreter; with a GPU they run on it for real."""
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    from tenfold.fallback import kernels

    return kernels


def _operands(M=70, K=96, N=48, outliers=True, seed=0, rule="relative"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    if outliers:
        x[5, 3], x[M - 30, K - 26] = 300.0, -500.0
    w = torch.randn(N, K, generator=g) * 0.1
    qx = _ref._quantize(x, (32, 32), rule, 8.0)
    qw = _ref.with_hi(_ref._quantize(w, (32, 32)), w)
    return x, w, qx, qw.t()


def test_spec_accuracy_int8_vs_fallback():
    x, w, qx, qwt = _operands()
    ref = x.double() @ w.double().t()
    exact_fb = _ref._mixed_gemm(qx, qwt)
    no_fb = _ref._mixed_gemm(_ref.replace(qx, mask=None, hi=None), qwt)
    assert qx.fallback_rate == pytest.approx(2 / 9)
    # INT8 on both sides with per-block scales: ~30 dB on Gaussian data. The two outliers
    # crush their blocks' other values to zero; fallback restores them (bf16: ~45 dB+).
    assert sqnr(ref, no_fb) < 30
    assert sqnr(ref, exact_fb) > 35
    assert sqnr(ref, exact_fb) > sqnr(ref, no_fb) + 8


def test_fast_form_equals_the_spec_up_to_fp32_rounding():
    for outliers in (False, True):
        x, w, qx, qwt = _operands(outliers=outliers)
        a, b = _ref._mixed_gemm(qx, qwt), _ref._mixed_gemm_fast(qx, qwt)
        # same products, other fp32 summation order: ~1e-7 relative
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()
    # both operands marked (the weight-gradient GEMM dY^T X): the OR rule
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(70, 48, generator=g)
    dy[10, 7] = 80.0
    qd = _ref._quantize(dy, (32, 32), "relative", 8.0)
    assert qd.mask.any()
    qx = _ref._quantize(_operands()[0], (32, 32), "relative", 8.0).compact().expand_hi()
    a, b = _ref._mixed_gemm(qd.t(), qx), _ref._mixed_gemm_fast(qd.t(), qx)
    assert (a - b).abs().max() <= 1e-5 * a.abs().max()


def test_spec_refuses_mismatched_operands():
    x, w, qx, qwt = _operands()
    with pytest.raises(ValueError, match="do not match"):
        _ref._mixed_gemm(qx, qx)
    q16 = _ref._quantize(w.t().contiguous(), (16, 32))
    with pytest.raises(ValueError, match="reduction step"):
        _ref._mixed_gemm(qx, q16)
    with pytest.raises(ValueError, match="16-bit copies"):
        _ref._mixed_gemm(qx, _ref.replace(qwt, hi=None))


@needs_triton
@pytest.mark.parametrize("shape", [(70, 96, 48), (64, 64, 64), (33, 160, 17)])
def test_quantize_kernel_equals_reference(interpret, shape):
    M, K, _ = shape
    x = torch.randn(M, K) * 3
    x[M // 2, K // 3] = 400.0
    for rule in ("relative", "crest"):
        k = interpret.quantize(x, (32, 32), rule, 8.0)
        r = _ref._quantize(x, (32, 32), rule, 8.0)
        # same fp32 operations in the same order: bit-identical
        assert torch.equal(k.q, r.q) and torch.equal(k.scale, r.scale)
        assert torch.equal(k.mask, r.mask) and torch.equal(k.hi, r.hi)


@needs_triton
@pytest.mark.parametrize("shape", [(70, 96, 48), (33, 160, 17)])
@pytest.mark.parametrize("outliers", [False, True])
def test_gemm_kernel_equals_reference(interpret, shape, outliers):
    x, w, qx, qwt = _operands(*shape, outliers=outliers)
    k, r = interpret.mixed_gemm(qx, qwt), _ref._mixed_gemm(qx, qwt)
    if not outliers:
        # INT8 steps: exact integer dots times the same fp32 scales, summed in the same
        # order: bit-identical
        assert torch.equal(k, r)
    else:
        # 16-bit steps: fp32 dots of bf16 values in another order: ~1e-7 relative. Both are
        # far closer to each other than to float64 (see the dB figures in the spec test).
        assert (k - r).abs().max() <= 1e-5 * r.abs().max()
        assert sqnr(r.double(), k.double()) > 100


@needs_triton
def test_gemm_kernel_or_rule_per_tensor_and_transposed_views(interpret):
    g = torch.Generator().manual_seed(2)
    dy = torch.randn(70, 48, generator=g)
    dy[10, 7] = 80.0
    qd = _ref._quantize(dy, (32, 32), "relative", 8.0)
    qx = _ref._quantize(_operands()[0], (32, 32), "relative", 8.0).compact().expand_hi()
    k, r = interpret.mixed_gemm(qd.t(), qx), _ref._mixed_gemm(qd.t(), qx)  # strided A
    assert (k - r).abs().max() <= 1e-5 * r.abs().max()
    x, w = torch.randn(40, 72), torch.randn(72, 24)
    a, b = _ref._quantize(x, None), _ref._quantize(w, None)
    assert torch.equal(interpret.mixed_gemm(a, b), _ref._mixed_gemm(a, b))


@needs_triton
def test_kernel_wrappers_check_their_inputs(interpret):
    x, w, qx, qwt = _operands()
    with pytest.raises(ValueError, match="2-D"):
        interpret.quantize(torch.randn(2, 3, 4), (32, 32))
    with pytest.raises(TypeError, match="fp32/fp16/bf16"):
        interpret.quantize(torch.ones(4, 4, dtype=torch.int32), (32, 32))
    with pytest.raises(ValueError, match="power-of-two"):
        interpret.quantize(x, (48, 32))
    with pytest.raises(TypeError, match="int8"):
        interpret.mixed_gemm(_ref.replace(qx, q=qx.q.float()), qwt)


@needs_triton
def test_kernels_refuse_cpu_tensors_outside_the_interpreter(monkeypatch):
    from tenfold.fallback import kernels

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kernels.available()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.quantize(torch.randn(32, 32), (32, 32))


@needs_triton
def test_ops_pass_torch_library_opcheck(interpret):
    """Schema, fake (meta) implementations and dispatch of the registered ops are consistent,
    so torch.compile can trace them."""
    x = torch.randn(40, 64)
    torch.library.opcheck(torch.ops.tenfold.fallback_quantize.default, (x, 32, 32))
    _, _, qx, qwt = _operands(M=40, K=64, N=32)
    args = (qx.q, qx.scale, qx.mask.to(torch.uint8), qx.hi, qwt.q, qwt.scale, None, qwt.hi)
    torch.library.opcheck(
        torch.ops.tenfold.fallback_mixed_gemm.default, (*args, 40, 32, 32, 32, 32)
    )


@needs_triton
@pytest.mark.parametrize("view", ["transposed", "sliced", "sliced-transposed"])
def test_quantize_kernel_on_strided_inputs_equals_reference(interpret, view):
    """The quantize kernel reads its input through strides: views must give what their
    contiguous copies give -- the same scales and masks bit for bit, the same INT8 values
    except where x * (127 / absmax) lands within an fp32 ulp of a rounding tie (the
    interpreter evaluates ``floor(v + 0.5)`` in float64, the reference in fp32)."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(140, 200, generator=g) * 2
    base[17, 33] = 300.0
    x = {
        "transposed": base.t(),
        "sliced": base[3:100, 5:170:2],
        "sliced-transposed": base[::2, 1::3].t(),
    }[view]
    assert not x.is_contiguous()
    for block in ((32, 32), (64, 32)):
        k = interpret.quantize(x, block, "relative", 8.0)
        r = _ref._quantize(x.contiguous(), block, "relative", 8.0)
        assert torch.equal(k.scale, r.scale) and torch.equal(k.mask, r.mask)
        off = (k.q.int() - r.q.int()).abs()
        assert off.max() <= 1 and (off > 0).sum() <= 2  # a tie or two, never a wrong stride


@needs_triton
def test_fallback_linear_kernels_on_sliced_operands_match_reference(interpret):
    """fallback_linear through the kernels on a sliced activation and a transposed weight
    view, forward and backward, against the reference backend."""
    from tenfold.fallback import FallbackConfig, fallback_linear

    g = torch.Generator().manual_seed(5)
    big = torch.randn(80, 192, generator=g)
    big[9, 11] = 90.0
    wt = torch.randn(96, 48, generator=g) * 0.1  # stored (in, out): W is a transposed view
    out = {}
    for backend in ("triton", "reference"):
        x = big[:, ::2].clone().requires_grad_() if backend == "reference" else None
        xs = big.clone().requires_grad_()
        xin = xs[:, ::2] if backend == "triton" else x
        w = wt.clone().requires_grad_()
        y = fallback_linear(xin, w.t(), None, FallbackConfig(backend=backend))
        y.backward(torch.ones_like(y))
        gx = xs.grad[:, ::2] if backend == "triton" else x.grad
        out[backend] = (y.detach(), gx, w.grad)
    for a, b in zip(out["triton"], out["reference"]):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()
