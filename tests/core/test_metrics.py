import math

import numpy as np
import pytest
import torch

from tenfold.core.data import load_digits
from tenfold.core.metrics import (
    cosine,
    digits_classifier,
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


def test_digits_classifier_is_accurate_cached_and_deterministic(tmp_path, monkeypatch):
    net, acc = digits_classifier(8)
    assert acc > 0.97  # measured 0.994 on the 359 validation digits
    net2, acc2 = digits_classifier(8)  # from the cache
    assert acc2 == acc
    assert all(
        torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values())
    )
    va, tr = load_digits("val"), load_digits("train")
    fd_real = net.fd(va.images, tr.images)
    fd_noise = net.fd(torch.rand_like(va.images) * 2 - 1, tr.images)
    assert fd_real < 0.1 * fd_noise


def test_damaged_classifier_cache_is_retrained(monkeypatch, tmp_path):
    monkeypatch.setenv("TENFOLD_CACHE", str(tmp_path))
    from tenfold.core import metrics

    calls = []
    real = metrics._train_classifier

    def counting(size, **kw):
        calls.append(size)
        return real(size, epochs=1)

    monkeypatch.setattr(metrics, "_train_classifier", counting)
    digits_classifier(8)
    path = next(tmp_path.glob("digits-classifier-*.safetensors"))
    path.write_bytes(path.read_bytes()[:100])
    digits_classifier(8)
    assert calls == [8, 8]
