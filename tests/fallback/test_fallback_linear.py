"""The autograd linear function (forward and both gradients against the spec), the Triton
backend against the reference, apply_ and the statistics."""

import importlib.util

import pytest
import torch
import torch.nn as nn

from tenfold.core.metrics import sqnr
from tenfold.core.models import LM, LMConfig
from tenfold.fallback import (
    SCHEMES,
    FallbackConfig,
    FallbackLinear,
    LayerStats,
    _ref,
    apply_,
    fallback_linear,
    fallback_stats,
    reset_fallback_stats,
)


def _data(M=96, K=64, N=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    x[7, 40] = 300.0  # an activation outlier: block (0, 1)
    w = torch.randn(N, K, generator=g) * 0.1
    dy = torch.randn(M, N, generator=g)
    dy[70, 3] = 50.0  # a gradient outlier: block (2, 0)
    b = torch.randn(N, generator=g)
    return x, w, b, dy


def _run(cfg, x, w, b, dy, stats=None):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    y = fallback_linear(x, w, b, cfg, stats)
    y.backward(dy)
    return y.detach(), x.grad, w.grad, b.grad


def test_forward_and_gradients_follow_the_spec():
    x, w, b, dy = _data()
    cfg = FallbackConfig(rule="relative", threshold=8.0)
    st = LayerStats()
    y, dx, dw, db = _run(cfg, x, w, b, dy, st)
    blk, tb = (32, 32), (32, 32)
    qx = _ref._quantize(x, blk, "relative", 8.0)
    qw = _ref.with_hi(_ref._quantize(w, blk), w)
    qdy = _ref._quantize(dy, blk, "relative", 8.0)
    qw_t = _ref.with_hi(_ref._quantize(w, tb), w)
    y_spec = _ref._mixed_gemm(qx, qw.t()) + b
    dx_spec = _ref._mixed_gemm(qdy, qw_t)
    dw_spec = _ref._mixed_gemm(qdy.t(), qx.compact().expand_hi())
    for got, spec in ((y, y_spec), (dx, dx_spec), (dw, dw_spec)):
        assert (got - spec).abs().max() <= 1e-5 * spec.abs().max()
    assert torch.equal(db, dy.sum(0))
    assert st.x_fallback == 1 and st.x_blocks == 6 and st.dy_fallback == 1 and st.dy_blocks == 6
    assert st.x_col_fallback.tolist() == [0, 1]


def test_schemes_rank_by_accuracy_against_float64():
    x, w, b, dy = _data()
    full = FallbackConfig(forward="full", grad_input="full", grad_weight="full")
    ref = _run(full, x.double(), w.double(), b.double(), dy.double())
    err = {}
    for name in ("int8_tensor", "int8_block", "int8_fallback"):
        out = _run(SCHEMES[name], x, w, b, dy)
        err[name] = [sqnr(r, o.double()) for r, o in zip(ref[:3], out[:3])]
    for i in range(3):  # Y, dX, dW
        assert err["int8_fallback"][i] > err["int8_block"][i] > err["int8_tensor"][i] - 1
    # fallback keeps every GEMM above 33 dB here; per-tensor INT8 loses most of the signal
    assert min(err["int8_fallback"]) > 33
    assert min(err["int8_tensor"]) < 20


def test_full_mode_is_exactly_f_linear_and_everything_falling_back_is_bf16():
    x, w, b, dy = _data()
    full = FallbackConfig(forward="full", grad_input="full", grad_weight="full")
    y, dx, dw, _ = _run(full, x, w, b, dy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    yr = nn.functional.linear(xr, wr, b)
    yr.backward(dy)
    assert torch.allclose(y, yr, atol=1e-5) and torch.allclose(dx, xr.grad, atol=1e-5)
    assert torch.allclose(dw, wr.grad, atol=1e-4)
    every = FallbackConfig(rule="absolute", threshold=1e-30)
    y16, *_ = _run(every, x, w, b, dy)
    bf = x.bfloat16().float() @ w.bfloat16().float().t() + b
    assert (y16 - bf).abs().max() <= 1e-5 * bf.abs().max()


def test_leading_dims_and_errors():
    cfg = FallbackConfig()
    y = fallback_linear(torch.randn(2, 5, 64), torch.randn(32, 64), None, cfg)
    assert y.shape == (2, 5, 32)
    with pytest.raises(ValueError, match="features"):
        fallback_linear(torch.randn(4, 63), torch.randn(32, 64), None, cfg)
    with pytest.raises(TypeError, match="floating-point"):
        fallback_linear(torch.ones(4, 64, dtype=torch.long), torch.randn(32, 64), None, cfg)


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(forward="int4"), "FallbackConfig.forward must be one of .*int4"),
        (dict(rule="median"), "FallbackConfig.rule must be one of .*median"),
        (dict(block=(32,)), "FallbackConfig.block must hold 2 values"),
        (dict(block=(24, 32)), "block sides must be one of 32, 64, 128"),
        (dict(block=(16, 32)), "INT8 tensor cores need K >= 32"),
        (dict(block=(48, 48)), "powers of two >= 32"),
        (dict(threshold=0.0), "threshold"),
        (dict(rule="topk", threshold=2.0), r"\[0, 1\]"),
        (dict(granularity="tensor"), "per-tensor"),
        (dict(sixteen_bit="fp8"), "sixteen_bit"),
    ],
)
def test_config_is_validated(kw, match):
    with pytest.raises(ValueError, match=match):
        FallbackConfig(**kw)


def _lm():
    torch.manual_seed(0)
    return LM(LMConfig(vocab_size=128, block_size=32, n_layer=2, n_heads=2, head_dim=32))


def test_apply_swaps_only_the_selected_layers_and_keeps_parameters():
    model = _lm()
    params = {n: p for n, p in model.named_parameters()}
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    names = apply_(
        model,
        FallbackConfig(),
        filter_fn=lambda m, n: not n.endswith("attn.q"),
        skip=("lm_head",),
    )
    assert "lm_head" not in names and not any(n.endswith("attn.q") for n in names)
    assert "blocks.0.mlp.down" in names
    assert type(model.lm_head) is nn.Linear and type(model.blocks[0].attn.q) is nn.Linear
    assert isinstance(model.blocks[1].mlp.gate, FallbackLinear)
    assert model.lm_head.weight is model.tok_emb.weight  # the tie holds
    for n, p in model.named_parameters():
        assert p is params[n]  # an existing optimizer keeps working
    # state_dict: same keys and values; loads into a fresh model and back
    after = model.state_dict()
    assert list(after) == list(sd) and all(torch.equal(after[k], sd[k]) for k in sd)
    fresh = _lm()
    fresh.load_state_dict(after)
    # a checkpoint of a plain model loads into a swapped one and gives the same function
    torch.manual_seed(1)
    other = LM(LMConfig(vocab_size=128, block_size=32, n_layer=2, n_heads=2, head_dim=32))
    swapped = _lm()
    apply_(swapped, FallbackConfig(), skip=("lm_head",))
    swapped.load_state_dict(other.state_dict())
    apply_(other, FallbackConfig(), skip=("lm_head",))
    idx = torch.randint(0, 128, (2, 32))
    other.eval(), swapped.eval()
    assert torch.equal(other(idx)[0], swapped(idx)[0])
    assert not torch.equal(other(idx)[0], model.eval()(idx)[0])
    with pytest.raises(ValueError, match="no nn.Linear"):
        apply_(nn.Sequential(nn.ReLU()), FallbackConfig())
    with pytest.raises(TypeError, match="FallbackConfig"):
        apply_(model, {"block": (32, 32)})


def test_training_step_records_statistics_and_reapply_changes_config():
    model = _lm()
    apply_(model, FallbackConfig(rule="topk", threshold=0.25), skip=("lm_head",))
    idx = torch.randint(0, 128, (4, 32))
    loss = model(idx, idx)[1]
    loss.backward()
    stats = fallback_stats(model)
    assert len(stats) == 12  # 2 blocks x (q, kv, proj, gate, up, down)
    for s in stats.values():  # topk 0.25 marks a quarter of the blocks of every tensor
        assert s.x_blocks > 0 and s.x_rate == pytest.approx(0.25, abs=0.13)
        assert s.dy_blocks > 0 and s.saved_bytes < s.bf16_bytes
    assert all(p.grad is not None for p in model.parameters())
    reset_fallback_stats(model)
    assert all(s.x_blocks == 0 for s in fallback_stats(model).values())
    apply_(model, SCHEMES["int8_block"], skip=("lm_head",))
    assert model.blocks[0].mlp.up.fallback_config == SCHEMES["int8_block"]
    model.eval()
    with torch.no_grad():
        model(idx)
    assert all(s.calls == 0 for s in fallback_stats(model).values())  # eval is not counted


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_triton_backend_matches_reference_through_autograd(monkeypatch):
    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, w, b, dy = _data()
    ref = _run(FallbackConfig(backend="reference"), x, w, b, dy)
    tri = _run(FallbackConfig(backend="triton"), x, w, b, dy)
    for r, t in zip(ref, tri):
        assert (r - t).abs().max() <= 1e-5 * r.abs().max()


def test_docs_usage_block_runs(capsys):
    """The usage block of docs/fallback.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "fallback.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 11
    exec(compile(code, "docs/fallback.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 * 6 and out[0].startswith("blocks.0.attn.q: X ")  # 4 layers x 6 linears


def test_capture_and_gemm_sqnr_on_a_real_model():
    from tenfold.fallback import capture_linear_io, gemm_sqnr

    model = _lm()
    idx = torch.randint(0, 128, (4, 32))
    io = capture_linear_io(model, lambda m: m(idx, idx)[1], skip=("lm_head",))
    assert len(io) == 12 and all(p.grad is None for p in model.parameters())
    x, w, dy = io["blocks.1.mlp.down"]
    assert x.shape == (128, w.shape[1]) and dy.shape == (128, w.shape[0])
    blk = gemm_sqnr(x, w, dy, SCHEMES["int8_block"])
    ten = gemm_sqnr(x, w, dy, SCHEMES["int8_tensor"])
    full = gemm_sqnr(
        x, w, dy, FallbackConfig(forward="full", grad_input="full", grad_weight="full")
    )
    assert set(blk) == {"Y", "dX", "dW", "rate"}
    for k in ("Y", "dX", "dW"):
        # fp32 GEMMs are ~140 dB from float64; INT8 on both operands is ~30-40 dB
        assert full[k] > 100 and 25 < blk[k] < 60 and ten[k] <= blk[k] + 1


def test_torch_compile_trains_like_eager():
    """torch.compile (aot_eager: no C++ toolchain needed) traces a swapped model; the
    data-dependent fallback checks become graph breaks, the numbers stay the same."""
    model = _lm()
    apply_(model, FallbackConfig(), skip=("lm_head",))
    idx = torch.randint(0, 128, (4, 32))
    ref = model(idx, idx)[1]
    ref.backward()
    g_ref = model.blocks[0].mlp.down.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    out = torch.compile(model, backend="aot_eager")(idx, idx)[1]
    out.backward()
    assert torch.allclose(out, ref, rtol=1e-6)
    assert torch.allclose(model.blocks[0].mlp.down.weight.grad, g_ref, rtol=1e-4, atol=1e-8)
