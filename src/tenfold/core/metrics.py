"""Accuracy and sample-quality metrics.

Error metrics compare an approximation ``out`` with a reference ``ref`` (torchao's
``compute_error`` habit): :func:`sqnr` (dB), :func:`cosine`, :func:`rel_l1`, :func:`psnr`.

Sample quality: :func:`frechet_distance` between Gaussians fitted to features (the digits
reproductions use the features of :class:`tenfold.core.tasks.DigitsClassifier`);
:func:`sliced_wasserstein` for 2-D point clouds.

Pure functions: nothing here trains, caches or reads a dataset.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .validate import check_int, check_number, check_tensor

__all__ = [
    "sqnr",
    "cosine",
    "rel_l1",
    "psnr",
    "frechet_distance",
    "gaussian_stats",
    "sliced_wasserstein",
]


def _pair(ref: Tensor, out: Tensor) -> tuple[Tensor, Tensor]:
    check_tensor("ref", ref)
    check_tensor("out", out)
    if ref.is_complex() or out.is_complex():
        raise TypeError("error metrics take real tensors")
    if ref.shape != out.shape:
        raise ValueError(f"shape mismatch: ref {tuple(ref.shape)} vs out {tuple(out.shape)}")
    return ref.detach().double(), out.detach().double()


def sqnr(ref: Tensor, out: Tensor) -> float:
    """Signal-to-quantisation-noise ratio in dB: 10 log10(||ref||^2 / ||ref - out||^2).
    ``inf`` when out equals ref."""
    r, o = _pair(ref, out)
    noise, signal = (r - o).pow(2).sum().item(), r.pow(2).sum().item()
    if math.isnan(noise) or math.isnan(signal):
        return math.nan  # NaN in, NaN out
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf  # a zero reference: all of ``out`` is noise
    return 10 * math.log10(signal / noise)


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
    check_number("data_range", data_range, ">0")
    r, o = _pair(ref, out)
    mse = (r - o).pow(2).mean().item()
    if math.isnan(mse):
        return math.nan
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
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(s1, np.float64), np.asarray(s2, np.float64)
    D = mu1.shape[0] if mu1.ndim == 1 else -1
    if D < 1 or mu2.shape != (D,) or s1.shape != (D, D) or s2.shape != (D, D):
        raise ValueError(
            f"need means (D,) and covariances (D, D) of one D, got {mu1.shape}, {s1.shape}, "
            f"{mu2.shape}, {s2.shape}"
        )
    if not all(np.isfinite(a).all() for a in (mu1, mu2, s1, s2)):
        return math.nan  # NaN in, NaN out (eigh would raise)
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(d, 0.0)


def sliced_wasserstein(x: Tensor, y: Tensor, n_proj: int = 256, p: int = 2, seed: int = 0) -> float:
    """Sliced p-Wasserstein distance between point clouds x (n, d) and y (m, d): the p-th root
    of the mean over ``n_proj`` random directions of W_p^p of the 1-D projections (quantiles
    matched on a common grid when n != m)."""
    check_tensor("x", x, ndim=2)
    check_tensor("y", y, ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"need two (n, d) clouds with equal d, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    check_int("n_proj", n_proj, ">=1")
    check_number("p", p, ">=1")
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
