import math

import numpy as np
import pytest
import torch

from tenfold.core.data import GaussianMixture2D, load_digits, load_image_npz


def test_digits_split_is_fixed_disjoint_and_stratified():
    tr, va, al = load_digits("train"), load_digits("val"), load_digits("all")
    assert (len(tr), len(va), len(al)) == (1438, 359, 1797)
    assert tr.images.shape[1:] == (1, 8, 8) and tr.images.dtype == torch.float32
    assert tr.images.min() >= -1 and tr.images.max() <= 1
    # disjoint and complete: every image of `all` is in exactly one split
    key = lambda d: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(d.images, d.labels)}  # noqa: E731
    assert key(tr) | key(va) == key(al)
    counts = torch.bincount(va.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 37  # ~20% of each class
    assert torch.equal(load_digits("val").labels, va.labels)  # same split every call


def test_digits_upsampled():
    d = load_digits("val", size=16)
    assert d.images.shape == (359, 1, 16, 16) and d.images.min() >= -1 and d.images.max() <= 1
    with pytest.raises(ValueError, match="split"):
        load_digits("test")


def test_image_npz_loader(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", images=imgs, labels=np.arange(5))
    d = load_image_npz(tmp_path / "mine.npz", size=8)
    assert d.images.shape == (5, 1, 8, 8) and d.num_classes == 5
    assert load_image_npz(tmp_path / "mine.npz").images[0, 0, 0, 0].item() == pytest.approx(
        imgs[0, 0, 0] / 127.5 - 1
    )
    np.savez(tmp_path / "nolabels.npz", images=imgs)
    with pytest.raises(ValueError, match="missing arrays"):
        load_image_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "range.npz", images=imgs.astype(np.float32), labels=np.arange(5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_image_npz(tmp_path / "range.npz")
    with pytest.raises(FileNotFoundError):
        load_image_npz(tmp_path / "none.npz")


def test_gaussian_mixture_sampler_and_density():
    gm = GaussianMixture2D(n_modes=8, radius=2.0, std=0.1)
    x, k = gm.sample(8000, torch.Generator().manual_seed(0))
    assert x.shape == (8000, 2) and k.shape == (8000,)
    # every point lies near its mode; modes equally used
    assert (x - gm.means[k]).norm(dim=1).max() < 0.6
    assert torch.bincount(k).min() > 800
    # the log density integrates to one (grid quadrature)
    g = torch.linspace(-3, 3, 401)
    grid = torch.cartesian_prod(g, g)
    mass = gm.log_prob(grid).exp().sum().item() * (6 / 400) ** 2
    assert mass == pytest.approx(1.0, abs=1e-3)
    assert GaussianMixture2D(n_modes=9, layout="grid").means.shape == (9, 2)
    with pytest.raises(ValueError, match="square"):
        GaussianMixture2D(n_modes=8, layout="grid")
    assert math.isfinite(gm.log_prob(torch.tensor([[100.0, 100.0]])).item())
