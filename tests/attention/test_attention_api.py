"""sageattn's dispatch, layouts, GQA, causal alignment and errors; apply_ and sdpa_routed."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from tenfold.attention import (
    AttentionConfig,
    UnsupportedAttention,
    api,
    apply_,
    remove_,
    sageattn,
    sdpa_routed,
)
from tenfold.attention import _ref as R
from tenfold.core.metrics import cosine
from tenfold.core.models import LM, LMConfig


def _qkv(B=2, H=4, Hk=2, Tq=50, Tk=70, D=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, Tq, D, generator=g),
        torch.randn(B, Hk, Tk, D, generator=g),
        torch.randn(B, Hk, Tk, D, generator=g),
    )


def test_layouts_gqa_and_bottom_right_causal():
    q, k, v = _qkv()
    o = sageattn(q, k, v, is_causal=True, variant="qk_int8_pv_fp8")
    rep = q.shape[1] // k.shape[1]
    ke, ve = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    ref = R._attention(q, ke, ve, R.VARIANTS["qk_int8_pv_fp8"], causal="bottom_right")
    torch.testing.assert_close(o, ref)  # GQA is the expanded computation
    t = [x.transpose(1, 2) for x in (q, k, v)]
    o2 = sageattn(*t, is_causal=True, variant="qk_int8_pv_fp8", layout="bthd")
    torch.testing.assert_close(o2.transpose(1, 2), o)
    # bottom-right: the last query sees every key (KV cache); top-left matches SDPA's
    ex = R.attention_exact(q, ke, ve, causal="bottom_right")
    assert float(cosine(o.double(), ex)) > 0.999
    o3 = sageattn(q, k, v, is_causal=True, variant="qk_int8_pv_fp16", causal_align="top_left")
    sd = F.scaled_dot_product_attention(q, ke, ve, is_causal=True)
    assert float(cosine(o3, sd)) > 0.9999


def test_auto_on_cpu_falls_back_to_sdpa_with_one_warning():
    api._warned.clear()
    q, k, v = _qkv(Hk=4)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        o = sageattn(q, k, v)
        sageattn(q, k, v)
    assert len(w) == 1 and "using PyTorch SDPA" in str(w[0].message)
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v))
    with pytest.raises(UnsupportedAttention, match="no low-bit attention kernel"):
        sageattn(q, k, v, on_unsupported="error")


def test_unsupported_inputs_fall_back_or_raise():
    api._warned.clear()
    q, k, v = _qkv(D=24)  # FP4 needs head dims in multiples of 16
    with pytest.warns(UserWarning, match="head dim 24"):
        o = sageattn(q, k, v, variant="fp4_nvfp4")
    assert o.shape == q.shape
    with pytest.raises(UnsupportedAttention, match="head dim 24"):
        sageattn(q, k, v, variant="fp4_nvfp4", on_unsupported="error")
    q, k, v = _qkv()
    with pytest.warns(UserWarning, match="dropout_p"):
        sageattn(q, k, v, dropout_p=0.1, variant="qk_int8_pv_fp8")
    with pytest.raises(UnsupportedAttention, match="inference-only"):
        sageattn(q.requires_grad_(), k, v, variant="qk_int8_pv_fp8")


def test_bad_inputs_say_what_to_fix():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="4-D"):
        sageattn(q[0], k, v, variant="qk_int8_pv_fp8")
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        sageattn(q[:, :3], k, v, variant="qk_int8_pv_fp8")
    with pytest.raises(TypeError, match="dtypes differ"):
        sageattn(q.half(), k, v, variant="qk_int8_pv_fp8")
    with pytest.raises(TypeError, match="floating point"):
        sageattn(q.long(), k, v, variant="qk_int8_pv_fp8")
    with pytest.raises(ValueError, match="variant="):
        sageattn(q, k, v, variant="int4")
    with pytest.raises(ValueError, match="either attn_mask or is_causal"):
        sageattn(q, k, v, attn_mask=torch.ones(50, 70, dtype=torch.bool), is_causal=True)
    with pytest.raises(ValueError, match="on_unsupported"):
        AttentionConfig(on_unsupported="ignore")


def _lm():
    torch.manual_seed(0)
    return LM(
        LMConfig(vocab_size=64, block_size=64, n_layer=2, n_heads=2, n_kv_heads=1, head_dim=64)
    )


def test_apply_swaps_core_models_and_trains_with_int8_train():
    lm = _lm()
    idx = torch.randint(0, 64, (2, 64))
    ref = lm(idx)[0].detach()
    assert apply_(lm, AttentionConfig("int8_train")) == ["blocks.0.attn", "blocks.1.attn"]
    out = lm(idx)[0]
    assert float(cosine(out.detach(), ref)) > 0.999
    out.float().pow(2).mean().backward()
    g = lm.blocks[0].attn.q.weight.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    assert remove_(lm) == ["blocks.0.attn", "blocks.1.attn"]
    torch.testing.assert_close(lm(idx)[0].detach(), ref)
    with pytest.raises(ValueError, match="sdpa_routed"):
        apply_(torch.nn.Linear(2, 2), AttentionConfig("int8_train"))


def test_sdpa_routed_reaches_any_model_and_restores():
    class Plain(torch.nn.Module):  # a model that knows nothing of tenfold
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    q, k, v = _qkv(Hk=4, Tq=40, Tk=40)
    ref = Plain()(q, k, v)
    with sdpa_routed(AttentionConfig("qk_int8_pv_fp8")) as fn:
        assert F.scaled_dot_product_attention is fn
        out = Plain()(q, k, v)
        lm = _lm()
        with pytest.raises(UnsupportedAttention, match="inference-only"):
            lm(torch.randint(0, 64, (1, 16)))  # a model with gradients needs int8_train
        with torch.no_grad():
            lm_out = lm(torch.randint(0, 64, (1, 16)))[0]  # core models route too
    assert F.scaled_dot_product_attention is api._SDPA
    expect = R._attention(q, k, v, R.VARIANTS["qk_int8_pv_fp8"], causal="top_left")
    torch.testing.assert_close(out, expect)
    assert not torch.equal(out, ref) and float(cosine(out, ref)) > 0.999
    assert torch.isfinite(lm_out).all()


def test_docs_usage_runs_as_written():
    """The usage block of docs/attention.md runs as written."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "attention.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    ns: dict = {}
    exec(compile(code, "docs/attention.md", "exec"), ns)
    assert ns["out"].shape == (2, 8, 256, 64)
    assert ns["model"].blocks[0].attn.q.weight.grad is not None
    assert torch.isfinite(ns["logits"]).all()
