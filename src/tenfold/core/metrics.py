"""Accuracy and sample-quality metrics.

Error metrics compare an approximation ``out`` with a reference ``ref`` (torchao's
``compute_error`` habit): :func:`sqnr` (dB), :func:`cosine`, :func:`rel_l1`, :func:`psnr`.

Sample quality: :func:`frechet_distance` between Gaussians fitted to features, computed in
the feature space of :class:`DigitsClassifier`, a small CNN that this module trains
deterministically on the digits training split and caches (see :func:`digits_classifier`);
:func:`sliced_wasserstein` for 2-D point clouds.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "sqnr",
    "cosine",
    "rel_l1",
    "psnr",
    "frechet_distance",
    "gaussian_stats",
    "sliced_wasserstein",
    "DigitsClassifier",
    "digits_classifier",
    "cache_dir",
]

log = logging.getLogger(__name__)


def _pair(ref: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: ref {tuple(ref.shape)} vs out {tuple(out.shape)}")
    return ref.detach().double(), out.detach().double()


def sqnr(ref: Tensor, out: Tensor) -> float:
    """Signal-to-quantisation-noise ratio in dB: 10 log10(||ref||^2 / ||ref - out||^2).
    ``inf`` when out equals ref."""
    r, o = _pair(ref, out)
    noise = (r - o).pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(r.pow(2).sum().item() / noise)


def cosine(ref: Tensor, out: Tensor) -> float:
    """Cosine similarity of the two tensors, flattened."""
    r, o = _pair(ref, out)
    return F.cosine_similarity(r.flatten(), o.flatten(), dim=0, eps=1e-30).item()


def rel_l1(ref: Tensor, out: Tensor) -> float:
    """Relative L1 error: sum|ref - out| / sum|ref|."""
    r, o = _pair(ref, out)
    return ((r - o).abs().sum() / r.abs().sum().clamp_min(1e-30)).item()


def psnr(ref: Tensor, out: Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB for signals of peak-to-peak ``data_range``."""
    r, o = _pair(ref, out)
    mse = (r - o).pow(2).mean().item()
    if mse == 0:
        return math.inf
    return 10 * math.log10(data_range**2 / mse)


def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64."""
    f = np.asarray(
        features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64
    )
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Frechet distance between N(mu1, s1) and N(mu2, s2):
    ||mu1 - mu2||^2 + tr(s1 + s2 - 2 (s1^1/2 s2 s1^1/2)^1/2)."""
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(d, 0.0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between point clouds x (n, d) and y (m, d): the p-th root
    of the mean over ``n_proj`` random directions of W_p^p of the 1-D projections (quantiles
    matched on a common grid when n != m)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"need two (n, d) clouds with equal d, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    px, py = x.double() @ dirs, y.double() @ dirs  # (n, P), (m, P)
    if px.shape[0] == py.shape[0]:
        qx, qy = px.sort(0).values, py.sort(0).values
    else:
        q = (torch.arange(min(len(px), len(py)), dtype=torch.float64) + 0.5) / min(len(px), len(py))
        qx, qy = torch.quantile(px, q, dim=0), torch.quantile(py, q, dim=0)
    return (qx - qy).abs().pow(p).mean().pow(1 / p).item()


# --------------------------------------------------------------------------------------
# The digits feature network
# --------------------------------------------------------------------------------------

_CLASSIFIER_VERSION = "v1"


def cache_dir() -> Path:
    """Where tenfold caches what it trains or builds: ``$TENFOLD_CACHE`` or ~/.cache/tenfold."""
    return Path(os.environ.get("TENFOLD_CACHE") or Path.home() / ".cache" / "tenfold")


class DigitsClassifier(nn.Module):
    """Small CNN on (N, 1, S, S) digits in [-1, 1]; ``features`` is its 64-d penultimate layer."""

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(64 * 16, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 10)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1:] != (1, self.size, self.size):
            raise ValueError(
                f"expected digits of shape (N, 1, {self.size}, {self.size}), got {tuple(x.shape)}"
            )
        return self.body(x)  # (N, 64)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, 10)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        return self(x).argmax(-1)

    @torch.no_grad()
    def fd(self, samples: Tensor, reference: Tensor) -> float:
        """Frechet distance between samples and reference images in this net's feature space."""
        fs = self.features(samples.float().clamp(-1, 1))
        fr = self.features(reference.float())
        return frechet_distance(*gaussian_stats(fs), *gaussian_stats(fr))


def _train_classifier(size: int, seed: int = 0, epochs: int = 60) -> tuple[DigitsClassifier, float]:
    from .data import load_digits
    from .train import batch_indices

    tr, va = load_digits("train", size), load_digits("val", size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = DigitsClassifier(size)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    bs = 64
    steps = epochs * math.ceil(len(tr) / bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    net.train()
    for step in range(steps):
        idx = batch_indices(len(tr), bs, step, seed)
        x, y = tr.images[idx], tr.labels[idx]
        # random shifts by up to one pixel (padding with background): +1% validation accuracy
        g = torch.Generator().manual_seed(seed * 7 + step)
        dy, dx = (1 + torch.randint(-1, 2, (2,), generator=g)).tolist()
        x = F.pad(x, (1, 1, 1, 1), value=-1.0)[:, :, dy : dy + size, dx : dx + size]
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    acc = (net.predict(va.images) == va.labels).float().mean().item()
    return net, acc


def digits_classifier(size: int = 8, retrain: bool = False) -> tuple[DigitsClassifier, float]:
    """The digits feature network for ``size`` x ``size`` images and its validation accuracy.

    Trained deterministically (seed 0) on first use and cached in :func:`cache_dir`; a
    damaged cache file is retrained and replaced, with a warning.
    """
    from .io import CheckpointError, load_tensors, save_tensors

    path = cache_dir() / f"digits-classifier-{_CLASSIFIER_VERSION}-{size}px.safetensors"
    if path.exists() and not retrain:
        try:
            tensors, meta = load_tensors(path)
            net = DigitsClassifier(size)
            net.load_state_dict(tensors)
            return net.eval(), float(meta["val_acc"])
        except (CheckpointError, RuntimeError, KeyError) as e:
            log.warning("retraining the digits classifier: cached %s is unusable (%s)", path, e)
    net, acc = _train_classifier(size)
    save_tensors(
        path, net.state_dict(), {"val_acc": acc, "size": size, "version": _CLASSIFIER_VERSION}
    )
    return net, acc
