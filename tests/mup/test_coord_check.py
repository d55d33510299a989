"""tenfold.mup.coord_check on a small DiT: the records, the slopes, muP flatter than SP."""

import numpy as np
import pytest
import torch

from tenfold.core.models import BACKBONES
from tenfold.mup import MuPConfig
from tenfold.mup.coord import coord_check, log_slope

WIDTHS = [32, 64, 128]


def make(width):
    return BACKBONES["dit"].build("DiT-Digits/2", n_heads=width // 32, depth=2)


def loss_fn(model, step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 1, 8, 8, generator=g)
    t = torch.randn(16, generator=g)
    return (model(x, t, torch.arange(16) % 10) - x).square().mean()


@pytest.fixture(scope="module")
def checks():
    kw = dict(lr=2**-7, steps=3, seeds=(0, 1))
    return (
        coord_check(make, WIDTHS, loss_fn, **kw),
        coord_check(make, WIDTHS, loss_fn, config=MuPConfig(base_width=32), **kw),
    )


def test_records_every_layer_at_every_step(checks):
    sp, mu = checks
    assert sp.values.shape == (3, 2, 4, len(sp.layers))
    assert "final_layer.linear" in sp.layers and "blocks.0.attn" in sp.layers
    assert np.isfinite(sp.values).all()
    # muP's readout starts at zero: its output is exactly 0 at t=0 and its slope undefined
    i = mu.layers.index("final_layer.linear")
    assert (mu.values[:, :, 0, i] == 0).all() and np.isnan(mu.slopes(0)["final_layer.linear"])


def test_muP_is_flatter_than_SP(checks):
    sp, mu = checks
    s_sp = [v for v in sp.slopes().values() if np.isfinite(v)]
    s_mu = [abs(v) for v in mu.slopes().values() if np.isfinite(v)]
    assert max(s_sp) > 0.5  # SP + Adam at a fixed LR: some layer grows with width
    assert max(s_mu) < max(s_sp) / 2


def test_log_slope():
    assert log_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert log_slope([1, 2, 4], [5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(log_slope([1, 2], [0.0, 1.0]))


def test_bad_arguments():
    with pytest.raises(ValueError, match="at least two widths"):
        coord_check(make, [32], loss_fn, lr=1e-3)
    with pytest.raises(ValueError, match="lr must be"):
        coord_check(make, WIDTHS, loss_fn, lr=0.0)
