"""The number formats of the low-bit attention reference (tenfold.attention._ref)."""

import itertools

import pytest
import torch

from tenfold.attention import _ref

GRID = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])


def _nearest_even(v: float) -> float:
    """Brute force: nearest E2M1 magnitude, ties to the even code (index), saturating."""
    a = min(abs(v), 6.0)
    d = (GRID - a).abs()
    best = [i for i in range(8) if d[i] == d.min()]
    i = next((j for j in best if j % 2 == 0), best[0])
    return float(GRID[i]) * (1 if v >= 0 else -1)


def test_e2m1_matches_brute_force_including_every_tie():
    mids = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    vals = torch.tensor(
        [
            s * v
            for s, v in itertools.product((1, -1), mids + GRID.tolist() + [0.1, 2.2, 5.9, 7, 100])
        ]
    )
    got = _ref.e2m1(vals)
    want = torch.tensor([_nearest_even(v) for v in vals.tolist()])
    assert torch.equal(got, want)
    # the ties, spelled out
    assert _ref.e2m1(torch.tensor(mids)).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4096, generator=g) * 3
    assert torch.equal(_ref.e2m1(r), torch.tensor([_nearest_even(v) for v in r.tolist()]))


def test_e4m3_grid_and_saturation():
    x = torch.tensor([0.0, 1.0, 1.0625, 1.1, 448.0, 500.0, -1e6, 2.0**-9, 2.0**-10])
    y = _ref.e4m3(x)
    # 1.0625 is the tie between 1 and 1.125: even mantissa -> 1.0; 2^-9 is the smallest
    # subnormal; 2^-10 ties between 0 and 2^-9 -> 0
    assert y.tolist() == [0.0, 1.0, 1.0, 1.125, 448.0, 448.0, -448.0, 2.0**-9, 0.0]
    with pytest.raises(TypeError, match="floating-point"):
        _ref.e4m3(torch.ones(3, dtype=torch.int32))


def test_nvfp4_and_mxfp4_scales_and_error():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 128, generator=g)
    x[0, 5] = 40.0  # an outlier in group 0 of row 0
    dq, s = _ref.quant_nvfp4(x)
    assert dq.shape == x.shape and s.shape == (8, 8)
    assert torch.equal(s, _ref.e4m3(s))  # the scales are E4M3 numbers
    # every group's absmax maps to (about) the top of the grid: |x| / s <= 6 up to E4M3's
    # rounding of the scale (relative step 2^-3)
    ratio = x.reshape(8, 8, 16).abs().amax(-1) / s
    assert bool((ratio <= 6 * (1 + 2**-3)).all()) and bool((ratio >= 6 / (1 + 2**-3)).all())
    mq, ms = _ref.quant_mxfp4(x)
    assert ms.shape == (8, 4) and torch.equal(ms, torch.exp2(torch.log2(ms).round()))
    # E8M0 scales waste up to a factor 2 of range; per-16 E4M3 scales do not: NVFP4 is the
    # more accurate of the two on Gaussian data (the paper's ordering)
    err_nv = (dq - x).pow(2).mean() / x.pow(2).mean()
    err_mx = (mq - x).pow(2).mean() / x.pow(2).mean()
    assert err_nv < err_mx < 0.05
    with pytest.raises(ValueError, match="multiple of the group size"):
        _ref.quant_nvfp4(torch.randn(4, 20))


def test_int8_token_blocks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 200, 64, generator=g)  # (B, H, T, D)
    dq, s = _ref.quant_int8_blocks(x, 64)
    assert s.shape == (2, 3, 4) and dq.shape == x.shape
    step = s.repeat_interleave(64, -1)[..., :200, None]
    assert bool(((dq - x).abs() <= step / 2 + 1e-6).all())
    dq2, s2 = _ref.quant_int8_blocks(x.transpose(1, 2), 64, dim=1)  # (B, T, H, D) layout
    assert torch.equal(dq2.transpose(1, 2), dq) and torch.equal(s2, s)
