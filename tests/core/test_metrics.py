import math

import numpy as np
import pytest
import torch

from tenfold.core.metrics import (
    cosine,
    frechet_distance,
    psnr,
    rel_l1,
    sliced_wasserstein,
    sqnr,
)


def test_error_metrics_against_hand_computed_values():
    ref = torch.tensor([3.0, 4.0])
    out = torch.tensor([3.0, 5.0])
    # ||ref||^2 = 25, ||err||^2 = 1 -> 10 log10 25
    assert sqnr(ref, out) == pytest.approx(10 * math.log10(25))
    assert sqnr(ref, ref) == math.inf
    # cos = (9 + 20) / (5 * sqrt 34)
    assert cosine(ref, out) == pytest.approx(29 / (5 * math.sqrt(34)))
    assert rel_l1(ref, out) == pytest.approx(1 / 7)
    # mse = 0.5, range 1 -> 10 log10 2
    assert psnr(ref, out) == pytest.approx(10 * math.log10(2))
    assert psnr(ref, out, data_range=255) == pytest.approx(10 * math.log10(255**2 / 0.5))
    with pytest.raises(ValueError, match="shape mismatch"):
        sqnr(ref, torch.zeros(3))


def test_frechet_distance_closed_form():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([1.0, 1.0])
    s1, s2 = np.diag([1.0, 4.0]), np.diag([4.0, 1.0])
    # diagonal covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2 = 1 + 1 + 1
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(3.0)
    rot = np.array([[0.6, -0.8], [0.8, 0.6]])
    s = rot @ np.diag([2.0, 0.5]) @ rot.T
    assert frechet_distance(mu1, s, mu1, s) == pytest.approx(0.0, abs=1e-9)


def test_sliced_wasserstein():
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(x, x) == 0.0
    # a shift by v moves every 1-D projection by <v, theta>: SW2^2 = E[<v, theta>^2] = |v|^2 / 2 in 2-D
    v = torch.tensor([3.0, 0.0])
    assert sliced_wasserstein(x, x + v, n_proj=4000) == pytest.approx(3 / math.sqrt(2), rel=0.03)
    assert sliced_wasserstein(x, x[:300] + v, n_proj=2000) == pytest.approx(
        3 / math.sqrt(2), rel=0.06
    )
    with pytest.raises(ValueError):
        sliced_wasserstein(x, torch.zeros(4, 3))
