"""Accuracy and sample-quality metrics.

Error metrics compare an approximation ``out`` with a reference ``ref`` (torchao's
``compute_error`` habit): :func:`sqnr` (dB), :func:`cosine`, :func:`rel_l1`, :func:`psnr`.

Sample quality: :func:`frechet_distance` between Gaussians fitted to features (the digits
reproductions use the features of :class:`tenfold.core.tasks.DigitsClassifier`);
:func:`sliced_wasserstein` for 2-D point clouds. Beyond one number for fidelity and
diversity together: :func:`precision_recall` (k-NN manifolds, Kynkaanniemi et al. 2019) and
:func:`density_coverage` (Naeem et al. 2020) separate them; :func:`mmd` and
:func:`energy_distance` are two-sample distances without a Gaussian assumption; for data of
known modes (a 2-D mixture), :func:`off_mode_share` and :func:`mixture_log_density` see the
mass between modes that FD cannot.

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
    "precision_recall",
    "density_coverage",
    "mmd",
    "energy_distance",
    "off_mode_share",
    "off_mode_mask",
    "mixture_log_density",
    "mixture_log_prob",
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


def _clouds(real: Tensor, fake: Tensor, names=("real", "fake")) -> tuple[Tensor, Tensor] | None:
    """Two (n, d) point sets of one d as float64; None when either holds a non-finite value
    (the caller returns NaN: a NaN sample is never counted as near or far)."""
    check_tensor(names[0], real, ndim=2, floating=True)
    check_tensor(names[1], fake, ndim=2, floating=True)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same feature dimension, got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )
    r, f = real.detach().cpu().double(), fake.detach().cpu().double()
    if not (torch.isfinite(r).all() and torch.isfinite(f).all()):
        return None
    return r, f


def _cdist(a: Tensor, b: Tensor) -> Tensor:
    # the direct difference form, not the matmul expansion: exact zeros for equal points and
    # the same distances on every CPU (ties at a ball's radius must not flip between CPUs)
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _kth_radius(x: Tensor, k: int, name: str) -> Tensor:
    """Distance from each point of x to its k-th nearest other point of x (self excluded)."""
    if k >= x.shape[0]:
        raise ValueError(f"k = {k} needs more than k points in {name}, got {x.shape[0]}")
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(0, x.shape[0], 1024):  # (1024, n) distance blocks: bounded memory
        d = _cdist(x[i : i + 1024], x)
        out[i : i + 1024] = d.kthvalue(k + 1, dim=1).values  # +1: the zero self-distance
    return out


def _inside_counts(points: Tensor, centres: Tensor, radii: Tensor) -> Tensor:
    """For each point, how many balls B(centre_i, radius_i) contain it (closed balls)."""
    out = torch.empty(points.shape[0], dtype=torch.long)
    for i in range(0, points.shape[0], 1024):
        d = _cdist(points[i : i + 1024], centres)
        out[i : i + 1024] = (d <= radii[None, :]).sum(1)
    return out


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of samples ``fake`` (m, d)
    against data ``real`` (n, d), in whatever feature space the rows live in.

    Each set's manifold is the union of balls around its points with radius the distance to
    the point's k-th nearest neighbour in the same set. Precision is the share of fake points
    inside the real manifold (fidelity), recall the share of real points inside the fake one
    (diversity). NaN when either set holds a non-finite value."""
    check_int("k", k, ">=1")
    pair = _clouds(real, fake)
    if pair is None:
        return {"precision": math.nan, "recall": math.nan}
    r, f = pair
    rr, rf = _kth_radius(r, k, "real"), _kth_radius(f, k, "fake")
    return {
        "precision": (_inside_counts(f, r, rr) > 0).double().mean().item(),
        "recall": (_inside_counts(r, f, rf) > 0).double().mean().item(),
    }


def density_coverage(real: Tensor, fake: Tensor, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020) of ``fake`` (m, d) against ``real`` (n, d).

    With r_i the distance from real point i to its k-th nearest real neighbour: density is
    the mean over fake points of how many real balls B(real_i, r_i) contain it, divided by k
    (about 1 when fake and real match; unbounded above, so it rewards samples piled onto
    dense regions); coverage is the share of real points whose ball holds at least one fake
    point (in [0, 1]; robust to outliers among the real points). NaN on non-finite input."""
    check_int("k", k, ">=1")
    pair = _clouds(real, fake)
    if pair is None:
        return {"density": math.nan, "coverage": math.nan}
    r, f = pair
    rr = _kth_radius(r, k, "real")
    density = _inside_counts(f, r, rr).double().mean().item() / k
    nearest_fake = torch.empty(r.shape[0], dtype=torch.float64)
    for i in range(0, r.shape[0], 1024):
        nearest_fake[i : i + 1024] = _cdist(r[i : i + 1024], f).min(1).values
    return {"density": density, "coverage": (nearest_fake <= rr).double().mean().item()}


def _mean_dist(x: Tensor, y: Tensor, fn, same: bool) -> float:
    total = 0.0
    for i in range(0, x.shape[0], 1024):
        d = fn(_cdist(x[i : i + 1024], y))
        if same:  # drop the diagonal (i == j): the unbiased estimate
            idx = torch.arange(d.shape[0])
            d[idx, idx + i] = 0.0
        total += d.sum().item()
    n = x.shape[0] * (y.shape[0] - 1 if same else y.shape[0])
    return total / n


def _two_samples(x: Tensor, y: Tensor, what: str) -> tuple[Tensor, Tensor] | None:
    pair = _clouds(x, y, ("x", "y"))
    if pair is not None and (pair[0].shape[0] < 2 or pair[1].shape[0] < 2):
        raise ValueError(
            f"{what} needs at least 2 samples in each set, got {x.shape[0]} and {y.shape[0]}"
        )
    return pair


def _discrepancy(a: Tensor, b: Tensor, fn) -> float:
    """E fn(a, a') + E fn(b, b') - 2 E fn(a, b) of the pairwise distances, unbiased."""
    return _mean_dist(a, a, fn, True) + _mean_dist(b, b, fn, True) - 2 * _mean_dist(a, b, fn, False)


def mmd(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased squared maximum mean discrepancy between samples x (n, d) and y (m, d) with
    the Gaussian kernel exp(-||a - b||^2 / (2 h^2)). ``bandwidth`` h defaults to the median
    pairwise distance of the pooled samples (the median heuristic). It can be slightly
    negative when the two sets come from one distribution. NaN on non-finite input."""
    pair = _two_samples(x, y, "mmd")
    if pair is None:
        return math.nan
    a, b = pair
    if bandwidth is None:
        pool = torch.cat([a, b])
        g = torch.Generator().manual_seed(0)
        h = torch.pdist(pool[torch.randperm(len(pool), generator=g)[:2048]]).median().item()
        if h == 0:
            h = 1.0  # every sample identical: any bandwidth gives the same (zero) answer
    else:
        h = check_number("bandwidth", bandwidth, ">0")
    return _discrepancy(a, b, lambda d: torch.exp(-(d * d) / (2 * h * h)))


def energy_distance(x: Tensor, y: Tensor) -> float:
    """Energy distance 2 E||X - Y|| - E||X - X'|| - E||Y - Y'|| between samples x (n, d) and
    y (m, d) (Szekely and Rizzo), with the unbiased within-set terms: zero in expectation for
    one distribution, positive otherwise. NaN on non-finite input."""
    pair = _two_samples(x, y, "energy_distance")
    return math.nan if pair is None else -_discrepancy(*pair, lambda d: d)


def off_mode_share(samples: Tensor, means: Tensor, radius: float) -> float:
    """The share of ``samples`` (n, d) farther than ``radius`` from every mode centre in
    ``means`` (K, d): the mass a model puts between the modes of a mixture (for isotropic
    modes of std sigma, a radius of 3 sigma keeps ~99 % of true 2-D samples on their mode).
    NaN on non-finite input."""
    mask = off_mode_mask(samples, means, radius)
    return math.nan if mask is None else mask.double().mean().item()


def off_mode_mask(samples: Tensor, means: Tensor, radius: float) -> Tensor | None:
    """Which of ``samples`` (n, d) lie off every mode (see :func:`off_mode_share`) -> (n,)
    bool, e.g. for the paired difference of two models sampled from the same noise. None on
    non-finite input."""
    radius = check_number("radius", radius, ">0")
    pair = _clouds(means, samples, ("means", "samples"))
    if pair is None:
        return None
    m, s = pair
    return _cdist(s, m).min(1).values > radius


def mixture_log_prob(
    samples: Tensor, means: Tensor, std: float, weights: Tensor | None = None
) -> Tensor:
    """Log-density (n,) float64 of each of ``samples`` (n, d) under the isotropic Gaussian
    mixture with centres ``means`` (K, d), per-component std ``std`` and mixing ``weights``
    (K,) (uniform by default). Non-finite samples give NaN."""
    std = check_number("std", std, ">0")
    check_tensor("samples", samples, ndim=2, floating=True)
    check_tensor("means", means, ndim=2, floating=True)
    if samples.shape[1] != means.shape[1]:
        raise ValueError(
            f"means and samples must have the same feature dimension, got "
            f"{tuple(means.shape)} and {tuple(samples.shape)}"
        )
    s, m = samples.detach().cpu().double(), means.detach().cpu().double()
    K, d = m.shape
    if weights is None:
        logw = torch.full((K,), -math.log(K), dtype=torch.float64)
    else:
        check_tensor("weights", weights, ndim=1, floating=True)
        w = weights.detach().cpu().double()
        if w.shape[0] != K or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(
                f"weights must be {K} finite non-negative numbers with a positive sum, "
                f"got {w.tolist()}"
            )
        logw = (w / w.sum()).log()
    sq = _cdist(s, m).pow(2)  # (n, K)
    logp = logw[None] - sq / (2 * std * std) - d * math.log(std * math.sqrt(2 * math.pi))
    return torch.logsumexp(logp, 1)


def mixture_log_density(
    samples: Tensor, means: Tensor, std: float, weights: Tensor | None = None
) -> float:
    """Mean log-density of ``samples`` under the mixture of :func:`mixture_log_prob`: how
    well samples sit on the true density. NaN on non-finite samples."""
    return mixture_log_prob(samples, means, std, weights).mean().item()
