"""Block-wise INT8 quantization and the fallback rule (tenfold.fallback._ref)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tenfold.fallback import _ref


@settings(max_examples=40, deadline=None)
@given(
    r=st.integers(1, 80),
    c=st.integers(1, 80),
    br=st.sampled_from([16, 32]),
    bc=st.sampled_from([16, 32, 64]),
    log_scale=st.floats(-6, 6),
    seed=st.integers(0, 2**16),
)
def test_round_trip_error_is_at_most_half_a_step_per_block(r, c, br, bc, log_scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(r, c, generator=g) * 10.0**log_scale
    qt = _ref._quantize(x, (br, bc))
    assert qt.q.dtype == torch.int8 and qt.q.abs().max() <= 127
    assert qt.scale.shape == (-(-r // br), -(-c // bc))
    step = _ref._expand(qt.scale, (br, bc))[:r, :c]
    err = (qt.dequantize() - x).abs()
    # round-to-nearest: half a quantization step, plus fp32 rounding of x * (127 / absmax)
    assert bool((err <= step * (0.5 + 1e-5)).all())
    # each block's absmax maps to +-127 exactly
    amax = _ref._blocks(_ref._pad2d(x, (br, bc)), (br, bc)).abs().amax((2, 3))
    assert torch.allclose(qt.scale * 127, amax)


def test_zero_blocks_padding_and_per_tensor():
    x = torch.zeros(40, 40)
    x[:32, :32] = torch.randn(32, 32)
    qt = _ref._quantize(x, (32, 32))
    assert qt.q.shape == (64, 64)  # padded
    assert torch.equal(qt.scale[1:, :], torch.ones(1, 2) / 127)  # all-zero blocks: scale 1/127
    assert torch.equal(qt.dequantize()[32:, :], torch.zeros(8, 40))
    t = _ref._quantize(x, None)
    assert t.scale.shape == (1, 1) and t.scale.item() == pytest.approx(x.abs().max().item() / 127)


def _outlier_tensor(outlier=200.0):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 128, generator=g)
    x[40, 70] = outlier  # block (1, 2)
    return x


@pytest.mark.parametrize("rule,threshold", [("relative", 8.0), ("crest", 12.0), ("absolute", 50.0)])
def test_rules_mark_the_outlier_block_and_nothing_else(rule, threshold):
    qt = _ref._quantize(_outlier_tensor(), (32, 32), rule, threshold)
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[1, 2] = True
    assert torch.equal(qt.mask, expect)
    assert qt.fallback_rate == pytest.approx(1 / 16)
    # without the outlier, Gaussian blocks (absmax ~ 3.5 sigma) never fall back
    clean = _ref._quantize(_outlier_tensor(0.0), (32, 32), rule, threshold)
    assert not clean.mask.any() and clean.hi is None


def test_rule_thresholds_are_exact_boundaries():
    x = torch.ones(32, 64)
    x[0, 40] = 8.0  # block (0, 1) has absmax 8, block (0, 0) absmax 1
    a, m = _ref._block_stats(x, (32, 32))
    assert a.tolist() == [[1.0, 8.0]]
    # torch's median of an even count is the lower middle value: 1
    assert _ref.fallback_mask(a, m, "relative", 7.99).tolist() == [[False, True]]
    assert _ref.fallback_mask(a, m, "relative", 8.0).tolist() == [[False, False]]
    rms = m.sqrt()
    crest = (a / rms)[0, 1].item()
    assert _ref.fallback_mask(a, m, "crest", crest * 0.999).tolist() == [[False, True]]
    assert _ref.fallback_mask(a, m, "crest", crest * 1.001).tolist() == [[False, False]]
    assert _ref.fallback_mask(a, m, "topk", 0.5).tolist() == [[False, True]]
    assert _ref.fallback_mask(a, m, "topk", 0.0).tolist() == [[False, False]]
    with pytest.raises(ValueError, match="unknown fallback rule"):
        _ref.fallback_mask(a, m, "median", 1.0)


def test_fallback_blocks_keep_16_bit_values_and_compact_saves_memory():
    x = _outlier_tensor()
    qt = _ref._quantize(x, (32, 32), "relative", 8.0)
    v = qt.value()
    blk = (slice(32, 64), slice(64, 96))
    assert torch.equal(v[blk], x[blk].bfloat16().float())  # the outlier block: bf16 values
    # elsewhere the INT8 values
    assert torch.equal(v[:32], qt.dequantize()[:32])
    c = qt.compact()
    assert c.hi.shape == (1, 32, 32)
    e = c.expand_hi()
    assert torch.equal(e.hi[blk], qt.hi[blk])
    assert torch.equal(e.hi[:32].float(), qt.dequantize()[:32].bfloat16().float())
    # kept for backward: int8 + scales + mask + one bf16 block, vs the whole tensor in BF16
    assert qt.nbytes() == 128 * 128 + 4 * 16 + 16 + 32 * 32 * 2
    assert qt.nbytes() / (2 * 128 * 128) < 0.57
