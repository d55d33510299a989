"""Precoding and the XL-MIMO channel: rKA converges to the direct RZF solution, RZF removes
multi-user interference, the near-field response tends to the plane wave far away."""

import numpy as np
import pytest

from tenfold.afdm.channel import near_field_response, xlmimo_channel
from tenfold.afdm.precoding import (
    normalize_power,
    rka_convergence,
    rka_precode,
    rzf_direct,
    rzf_flops,
    rzf_rka,
)


@pytest.mark.parametrize("visibility", [None, 0.5])
def test_rka_converges_to_direct_rzf(visibility):
    rng = np.random.default_rng(0)
    H = np.stack([xlmimo_channel(rng, 128, 8, visibility=visibility)[0] for _ in range(3)])
    xi = 0.8
    its, err = rka_convergence(H, xi, 8 * 60, np.random.default_rng(1))
    assert err[0] > 0.1 and err[-1] < 1e-3  # from far to the direct solution
    assert np.all(np.diff(np.log(err))[::4] < 0.5)  # no blow-up on the way
    W = rzf_rka(H, xi, 8 * 60, np.random.default_rng(2), tol=1e-8)
    np.testing.assert_allclose(W, rzf_direct(H, xi), atol=1e-5 * np.abs(W).max())


def test_rka_precode_matches_the_direct_precoded_vectors():
    rng = np.random.default_rng(3)
    H, _ = xlmimo_channel(rng, 256, 16)
    s = (rng.standard_normal((50, 16)) + 1j * rng.standard_normal((50, 16))) / np.sqrt(2)
    x = s @ rzf_direct(H, 1.6).T
    xr = rka_precode(H, s, 1.6, 400, np.random.default_rng(4))
    assert np.linalg.norm(xr - x) / np.linalg.norm(x) < 1e-4


def test_rzf_removes_interference_as_xi_goes_to_zero():
    rng = np.random.default_rng(5)
    H, _ = xlmimo_channel(rng, 64, 4)
    G = H @ rzf_direct(H, 1e-9)
    np.testing.assert_allclose(G, np.eye(4), atol=1e-6)
    W = normalize_power(rzf_direct(H, 0.5), total=4.0)
    assert np.isclose(np.linalg.norm(W) ** 2, 4.0)
    assert rzf_flops(512, 16, "rka", 32) < rzf_flops(512, 16, "direct") / 4  # per vector
    assert rzf_flops(512, 16, "rka", 32, per="precoder") > rzf_flops(
        512, 16, "direct", per="precoder"
    )
    with pytest.raises(ValueError, match="xi must be >= 0"):
        rzf_direct(H, -1.0)


def test_near_field_response_tends_to_the_plane_wave():
    M, f, lam = 256, 28e9, 299_792_458.0 / 28e9
    a = near_field_response(M, np.array([1e6]), np.array([0.3]), f, lam / 2)[0]
    d = (np.arange(M) - (M - 1) / 2) * lam / 2
    plane = np.exp(2j * np.pi * d * np.sin(0.3) / lam) / np.sqrt(M)
    assert abs(np.vdot(plane, a)) > 0.999  # far away: the planar steering vector
    near = near_field_response(M, np.array([3.0]), np.array([0.3]), f, lam / 2)[0]
    assert abs(np.vdot(plane, near)) < 0.5  # in the near field: not planar
    assert np.isclose(np.linalg.norm(near), 1.0)


def test_visibility_regions_limit_each_user_to_part_of_the_array():
    H, pos = xlmimo_channel(np.random.default_rng(6), 100, 5, visibility=0.3)
    assert ((np.abs(H) > 0).sum(1) == 30).all()
    np.testing.assert_allclose(np.linalg.norm(H, axis=1), 10.0)
    assert pos.shape == (5, 2)
    with pytest.raises(ValueError, match="visibility"):
        xlmimo_channel(np.random.default_rng(0), 10, 2, visibility=1.5)
