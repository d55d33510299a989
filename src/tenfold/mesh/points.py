"""Point clouds with normals: the generator's condition.

pts, nrm = sample_surface(v, f, 2048, seed=0)    # area-weighted, face normals
nrm = estimate_normals(pts)                      # a user's scan without normals (#29)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.validate import check_array, check_int

__all__ = ["estimate_normals", "normalize_cloud", "sample_surface"]


def sample_surface(
    vertices: Any, faces: Any, n: int, seed: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniformly on the surface (faces chosen by area, a uniform point in each)
    with their face normals. Returns (points (n, 3), normals (n, 3)) float64."""
    n = check_int("n", n, ">=1")
    v = check_array("vertices", vertices, ndim=2).astype(np.float64)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        raise ValueError("sample_surface needs at least one face")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cr = np.cross(b - a, c - a)  # (F, 3)
    area = np.linalg.norm(cr, axis=1)
    if not area.sum() > 0:
        raise ValueError("every face has zero area; nothing to sample")
    idx = rng.choice(len(f), size=n, p=area / area.sum())
    r1 = np.sqrt(rng.random(n))[:, None]
    r2 = rng.random(n)[:, None]
    pts = (1 - r1) * a[idx] + r1 * (1 - r2) * b[idx] + r1 * r2 * c[idx]
    nrm = cr[idx] / np.maximum(area[idx, None], 1e-300)
    return pts, nrm


def estimate_normals(points: Any, k: int = 16) -> np.ndarray:
    """Unit normals of a cloud without them: the smallest principal axis of each point's
    ``k`` nearest neighbours, oriented away from the cloud's centroid (consistent for the
    closed, roughly star-shaped objects a generator is conditioned on; flip a normal for
    other shapes as your data needs)."""
    from scipy.spatial import cKDTree

    p = check_array("points", points, ndim=2).astype(np.float64)
    if p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    if len(p) < 3:
        raise ValueError(f"estimate_normals needs at least 3 points, got {len(p)}")
    k = min(check_int("k", k, ">=3"), len(p))
    _, nb = cKDTree(p).query(p, k=k)  # (N, k)
    q = p[nb] - p[nb].mean(1, keepdims=True)  # (N, k, 3)
    cov = np.einsum("nki,nkj->nij", q, q)  # (N, 3, 3)
    _, vec = np.linalg.eigh(cov)
    nrm = vec[:, :, 0]  # eigenvector of the smallest eigenvalue
    out = p - p.mean(0)
    flip = (nrm * out).sum(1) < 0
    nrm[flip] *= -1
    return nrm / np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-300)


def normalize_cloud(points: Any) -> tuple[np.ndarray, np.ndarray, float]:
    """The mesh tokenizer's normalisation applied to a cloud: bounding box centred, longest
    axis spanning +-0.95. Returns (points, centre, scale)."""
    from .tokenizer import normalize_vertices

    return normalize_vertices(points)
