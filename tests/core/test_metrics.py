import math

import numpy as np
import pytest
import torch

from tenfold.core.metrics import (
    cosine,
    density_coverage,
    energy_distance,
    frechet_distance,
    mixture_log_density,
    mmd,
    off_mode_mask,
    off_mode_share,
    precision_recall,
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


# -- sample quality beyond FD: hand-made cases whose answers are counted by hand --------------

LINE = torch.tensor([[0.0], [1.0], [2.0], [3.0]])  # k = 1 radii: 1, 1, 1, 1


def test_precision_recall_by_hand():
    # fake: one point on the real manifold, one far off it; the fake pair's k = 1 radii are
    # 9.5, so its manifold covers every real point
    pr = precision_recall(LINE, torch.tensor([[0.5], [10.0]]), k=1)
    assert pr == {"precision": 0.5, "recall": 1.0}
    # identical sets: both 1; the closed ball keeps a point at exactly the radius
    assert precision_recall(LINE, LINE.clone(), k=1) == {"precision": 1.0, "recall": 1.0}
    # mode dropping: two far clusters of real data, samples on one only -> recall 1/2
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 50
    pr = precision_recall(torch.cat([a, b]), a + 0.01 * torch.randn(200, 2, generator=g), k=3)
    assert pr["precision"] > 0.95 and pr["recall"] == pytest.approx(0.5, abs=0.03)


def test_density_coverage_by_hand():
    # identical: point 0 lies in the balls of 0 and 1, point 1 in those of 0, 1, 2, ...
    dc = density_coverage(LINE, LINE.clone(), k=1)
    assert dc == {"density": 2.5, "coverage": 1.0}
    # one sample at 0: inside 2 balls; the real points within radius 1 of it: 0 and 1
    dc = density_coverage(LINE, torch.tensor([[0.0]]), k=1)
    assert dc == {"density": 2.0, "coverage": 0.5}
    # samples collapsed onto one spot: they are on the data (density near its matched
    # value), but they cover little of it
    g = torch.Generator().manual_seed(1)
    real = torch.randn(500, 2, generator=g)
    piled = density_coverage(real, 0.05 * torch.randn(500, 2, generator=g), k=5)
    fair = density_coverage(real, torch.randn(500, 2, generator=g), k=5)
    assert piled["density"] > 0.3 and piled["coverage"] < 0.2 and fair["coverage"] > 0.8
    assert 0.7 < fair["density"] < 1.3  # about 1 for matched distributions


def test_mmd_and_energy_by_hand():
    x = torch.tensor([[0.0], [1.0]])
    # unbiased MMD^2 with h = 1: k_xx = k_yy = e^-1/2 off the diagonal, k_xy mean (2 + 2e^-1/2)/4
    assert mmd(x, x.clone(), bandwidth=1.0) == pytest.approx(math.exp(-0.5) - 1, rel=1e-12)
    # energy: 2 * mean|x - y| (= 2) - mean|x - x'| (= 1) - mean|y - y'| (= 1)
    assert energy_distance(x, torch.tensor([[2.0], [3.0]])) == pytest.approx(2.0, rel=1e-12)
    g = torch.Generator().manual_seed(2)
    p, q = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    shifted = torch.randn(400, 2, generator=g) + torch.tensor([1.0, 0.0])
    for f in (mmd, energy_distance):
        same, diff = f(p, q), f(p, shifted)
        assert abs(same) < 0.2 * diff and diff > 0, (f.__name__, same, diff)


def test_mixture_metrics_by_hand():
    means = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    s = torch.tensor([[0.0, 0.5], [5.0, 0.0], [10.0, -2.0]])
    assert off_mode_share(s, means, radius=1.0) == pytest.approx(2 / 3)
    assert off_mode_mask(s, means, radius=1.0).tolist() == [False, True, True]
    assert off_mode_mask(s, means, radius=5.5).tolist() == [False, False, False]
    assert off_mode_mask(torch.full((2, 2), math.nan), means, 1.0) is None
    # one 1-D component at 0, std 1: log N(0; 0, 1) = -log(2 pi) / 2
    lp = mixture_log_density(torch.zeros(3, 1), torch.zeros(1, 1), std=1.0)
    assert lp == pytest.approx(-0.5 * math.log(2 * math.pi), rel=1e-12)
    # a mixture of two coincident components is the component itself, whatever the weights
    lp2 = mixture_log_density(torch.zeros(3, 1), torch.zeros(2, 1), 1.0, torch.tensor([0.2, 0.8]))
    assert lp2 == pytest.approx(lp, rel=1e-12)
    # samples between the modes score far lower than samples on them
    on = mixture_log_density(means + 0.1, means, 0.5)
    assert mixture_log_density(s[1:2], means, 0.5) < on - 10


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: precision_recall(LINE, torch.zeros(3, 2)), ValueError, "same feature dimension"),
        (lambda: precision_recall(LINE, LINE, k=4), ValueError, "needs more than k points in real"),
        (lambda: precision_recall(LINE, LINE, k=0), ValueError, "k"),
        (lambda: density_coverage(LINE.long(), LINE), TypeError, "floating-point"),
        (lambda: density_coverage(LINE[0], LINE), ValueError, "2 dimensions"),
        (lambda: mmd(LINE[:1], LINE), ValueError, "at least 2 samples"),
        (lambda: mmd(LINE, LINE, bandwidth=0.0), ValueError, "bandwidth"),
        (lambda: energy_distance(LINE, torch.empty(0, 1)), ValueError, "empty"),
        (lambda: off_mode_share(LINE, LINE, radius=-1.0), ValueError, "radius"),
        (
            lambda: mixture_log_density(LINE, LINE, 1.0, torch.ones(3)),
            ValueError,
            "weights must be 4",
        ),
        (lambda: mixture_log_density(LINE, LINE, 1.0, -torch.ones(4)), ValueError, "non-negative"),
    ],
)
def test_sample_metrics_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_sample_metrics_return_nan_on_nan_samples():
    bad = LINE.clone()
    bad[1, 0] = math.nan
    assert all(math.isnan(v) for v in precision_recall(LINE, bad, k=1).values())
    assert all(math.isnan(v) for v in density_coverage(bad, LINE, k=1).values())
    assert math.isnan(mmd(LINE, bad)) and math.isnan(energy_distance(bad, LINE))
    assert math.isnan(off_mode_share(bad, LINE, 1.0))
    assert math.isnan(mixture_log_density(bad, LINE, 1.0))
