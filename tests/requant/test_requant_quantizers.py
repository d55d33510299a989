"""The base quantizers (RTN, GPTQ, AWQ) on one layer: GPTQ and AWQ beat RTN where they
should, by construction or by a wide margin, and bad inputs get clear errors."""

import pytest
import torch

from tenfold.requant import InputStats, awq_quantize, gptq_quantize, rtn_quantize


def _layer(seed, out_f=48, in_f=64, n=512):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out_f, in_f, generator=g) * 0.1
    # correlated inputs with a few strong channels, as real activations have
    mix = torch.randn(in_f, in_f, generator=g) / in_f**0.5
    x = torch.randn(n, in_f, generator=g) @ mix
    x[:, :4] *= 8.0
    stats = InputStats(in_f)
    for chunk in x.split(128):
        stats.add(chunk)
    return w, x, stats


def _out_err(x, w, qw):
    return float(((x @ w.T - x @ qw.dequantize().T) ** 2).sum())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_gptq_beats_rtn_on_the_layer_output_error(seed, bits):
    """GPTQ minimises the output error that RTN ignores; on correlated inputs the gap is
    large (RTN 2.5-4.7x GPTQ over these cases), so the test asks only for 20 %."""
    w, x, stats = _layer(seed)
    rtn = _out_err(x, w, rtn_quantize(w, bits, 32))
    for act_order in (False, True):
        gptq = _out_err(x, w, gptq_quantize(w, stats.hessian, bits, 32, act_order=act_order))
        assert gptq < 0.8 * rtn, (act_order, gptq, rtn)


def test_awq_never_does_worse_than_rtn_on_its_own_calibration_rows():
    """alpha = 0 (no scaling) is RTN and is on AWQ's grid, so AWQ's search can only match
    or beat it on the rows it searches with."""
    for seed in range(3):
        w, x, stats = _layer(seed)
        X = stats.sample
        assert _out_err(X, w, awq_quantize(w, stats, 3, 32)) <= _out_err(
            X, w, rtn_quantize(w, 3, 32)
        )


def test_gptq_with_dead_inputs_and_whole_row_groups():
    w, x, stats = _layer(0)
    x[:, 5] = 0.0
    s = InputStats(64)
    s.add(x)
    qw = gptq_quantize(w, s.hessian, 4, 64, block=16)
    assert qw.scale.shape == (48, 1)
    assert torch.equal(qw.dequantize()[:, 5], torch.zeros(48))  # a dead input's weight -> 0
    assert qw.codes.min() >= 0 and qw.codes.max() <= 15


def test_gptq_blocks_do_not_change_the_result():
    w, _, stats = _layer(1)
    a = gptq_quantize(w, stats.hessian, 3, 32, block=8)
    b = gptq_quantize(w, stats.hessian, 3, 32, block=64)
    assert (a.codes != b.codes).float().mean() < 0.01  # float64 sums in another order


def test_gptq_and_awq_refuse_missing_or_wrong_calibration():
    w, _, stats = _layer(0)
    with pytest.raises(ValueError, match=r"Hessian must be \(64, 64\)"):
        gptq_quantize(w, torch.eye(32), 4, 32)
    with pytest.raises(ValueError, match="no calibration inputs reached"):
        _ = InputStats(64).hessian
    with pytest.raises(ValueError, match="AWQ needs calibration inputs"):
        awq_quantize(w, InputStats(64), 4, 32)
    with pytest.raises(ValueError, match="not positive definite"):
        gptq_quantize(w, -torch.eye(64, dtype=torch.float64), 4, 32, damp=0.0)


def test_squeezellm_kmeans_lowers_the_fisher_weighted_error_below_its_uniform_start():
    """Lloyd iterations never raise the weighted squared error of their start, a uniform
    grid over each row's range (fp16 rounding of the codebook aside)."""
    from tenfold.requant import squeezellm_quantize

    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 128, generator=g)
    f = torch.rand(16, 128, generator=g) ** 4
    qw = squeezellm_quantize(w, f, 3)
    assert qw.codebook.shape == (16, 8) and (qw.codebook.diff(dim=1) >= 0).all()
    lo, hi = w.min(1, keepdim=True).values, w.max(1, keepdim=True).values
    grid = lo + (hi - lo) * torch.linspace(0, 1, 8)[None, :]
    start = torch.gather(grid, 1, (w[..., None] - grid[:, None, :]).abs().argmin(-1))
    err = float((f * (w - qw.dequantize()) ** 2).sum())
    assert err < 0.9 * float((f * (w - start) ** 2).sum())


def test_squeezellm_keeps_a_weight_the_fisher_says_matters():
    from tenfold.requant import squeezellm_quantize

    w = torch.linspace(-1, 1, 64).repeat(2, 1)
    f = torch.full_like(w, 1e-6)
    f[0, 17] = 1e6
    qw = squeezellm_quantize(w, f, 2)
    assert abs(float(qw.dequantize()[0, 17] - w[0, 17])) < 1e-3  # its own centroid (fp16)
    with pytest.raises(ValueError, match="Fisher diagonal must have the weight's shape"):
        squeezellm_quantize(w, f[:1], 2)
