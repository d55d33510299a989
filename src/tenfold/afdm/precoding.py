"""Multi-user downlink precoding: regularised zero forcing ``W = H^H (H H^H + xi I)^{-1}``
by a direct solve (the reference) and by randomized Kaczmarz (rKA; Boroujerdi,
Haghighatshoar, Caire 2018), vectorised over a batch of channels (subcarriers, frames)."""

from __future__ import annotations

import numpy as np

from ..core.validate import check_array, check_int, check_number

__all__ = [
    "normalize_power",
    "rzf_direct_precode",
    "rka_convergence",
    "rka_precode",
    "rzf_direct",
    "rzf_flops",
    "rzf_rka",
]


def _check(H: np.ndarray, xi: float) -> np.ndarray:
    H = check_array("H", H)
    if H.ndim < 2:
        raise ValueError(f"H must be (..., K, M), got shape {H.shape}")
    check_number("the regularisation xi", xi, ">=0")
    return H.astype(np.complex128, copy=False)


def rzf_direct(H: np.ndarray, xi: float) -> np.ndarray:
    """Regularised ZF precoder (..., M, K) of channels (..., K, M): a K x K solve per channel."""
    H = _check(H, xi)
    K = H.shape[-2]
    Hh = np.conj(np.swapaxes(H, -1, -2))  # (..., M, K)
    G = H @ Hh + xi * np.eye(K)
    return Hh @ np.linalg.solve(G, np.broadcast_to(np.eye(K), G.shape))


def rzf_direct_precode(H: np.ndarray, s: np.ndarray, xi: float) -> np.ndarray:
    """Precoded vectors ``x = H^H (H H^H + xi I)^{-1} s`` by a direct solve per channel,
    without forming W: H (..., K, M), s (..., K) -> (..., M). The reference of
    :func:`rka_precode`."""
    H = _check(H, xi)
    K = H.shape[-2]
    G = H @ np.conj(np.swapaxes(H, -1, -2)) + xi * np.eye(K)
    z = np.linalg.solve(G, np.asarray(s, dtype=np.complex128)[..., None])[..., 0]
    return np.einsum("...km,...k->...m", np.conj(H), z)


def rzf_rka(
    H: np.ndarray,
    xi: float,
    iters: int,
    rng: np.random.Generator,
    tol: float | None = None,
    history: list | None = None,
) -> np.ndarray:
    """RZF precoder by randomized Kaczmarz: for each user's column e_j, solve
    ``(H H^H + xi I) z = e_j`` row by row with ``u = H^H z`` kept explicitly. Row r is drawn
    with probability ``(||h_r||^2 + xi) / (||H||_F^2 + K xi)``; then ``eta = (e_r - h_r u -
    xi z_r) / (||h_r||^2 + xi)``, ``u += eta conj(h_r)``, ``z_r += eta``. Returns U (..., M, K)
    after ``iters`` sweeps of one row each, or earlier once every system's relative
    residual ``||(H H^H + xi I) z - e|| / ||e||`` is below ``tol`` (checked every K steps).
    ``history`` collects (iteration, U) snapshots every K iterations when given."""
    H = _check(H, xi)
    iters = check_int("iters", iters, ">=1")
    if tol is not None:
        check_number("tol", tol, ">0")
    batch, (K, M) = H.shape[:-2], H.shape[-2:]
    Hb = H.reshape(-1, K, M)  # (F, K, M)
    F = Hb.shape[0]
    row_norm = (np.abs(Hb) ** 2).sum(-1) + xi  # (F, K)
    cdf = np.cumsum(row_norm / row_norm.sum(-1, keepdims=True), -1)  # (F, K)
    U = np.zeros((F, K, M), np.complex128)  # one u (M,) per right-hand side j
    Z = np.zeros((F, K, K), np.complex128)  # Z[f, j, r]
    fi = np.arange(F)[:, None]
    ji = np.arange(K)[None, :]
    for t in range(iters):
        draw = rng.random((F, K))
        r = (cdf[:, None, :] < draw[..., None]).sum(-1).clip(max=K - 1)  # (F, K)
        h = Hb[fi, r]  # (F, K, M): the drawn row for each system
        e_r = (r == ji).astype(np.float64)
        resid = e_r - (h * U).sum(-1) - xi * Z[fi, ji, r]
        eta = resid / row_norm[fi, r]
        U += eta[..., None] * np.conj(h)
        Z[fi, ji, r] += eta
        if (t + 1) % K == 0:
            if history is not None:
                history.append((t + 1, np.swapaxes(U, -1, -2).reshape(*batch, M, K).copy()))
            if tol is not None and _residual(Hb, xi, Z).max() < tol:
                break
    return np.swapaxes(U, -1, -2).reshape(*batch, M, K)


def _residual(Hb: np.ndarray, xi: float, Z: np.ndarray) -> np.ndarray:
    # Z[f, j, :] solves (H H^H + xi I) z = e_j; relative residual per (f, j)
    K = Hb.shape[-2]
    G = Hb @ np.conj(np.swapaxes(Hb, -1, -2)) + xi * np.eye(K)  # (F, K, K)
    R = np.einsum("fkl,fjl->fjk", G, Z) - np.eye(K)[None]
    return np.linalg.norm(R, axis=-1)


def rka_convergence(
    H: np.ndarray, xi: float, iters: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Relative error ``||W_rka - W_direct||_F / ||W_direct||_F`` (mean over the batch)
    every K iterations of :func:`rzf_rka` -> (iterations, errors)."""
    check_int("iters", iters, ">=1")
    W = rzf_direct(H, xi)
    hist: list = []
    rzf_rka(H, xi, iters, rng, history=hist)
    its = np.array([t for t, _ in hist])
    err = np.array(
        [
            np.mean(np.linalg.norm(U - W, axis=(-2, -1)) / np.linalg.norm(W, axis=(-2, -1)))
            for _, U in hist
        ]
    )
    return its, err


def normalize_power(W: np.ndarray, total: float = 1.0) -> np.ndarray:
    """Scale each precoder (..., M, K) to Frobenius norm^2 = ``total`` (transmit power)."""
    check_number("total", total, ">0")
    W = check_array("W", W, finite=False)  # NaN in, NaN out
    if W.ndim < 2:
        raise ValueError(f"W must be (..., M, K), got shape {W.shape}")
    n = np.linalg.norm(W, axis=(-2, -1), keepdims=True)
    return W * np.sqrt(total) / np.where(n > 0, n, 1.0)


def rzf_flops(M: int, K: int, method: str, iters: int = 0, per: str = "vector") -> float:
    """Complex multiply-adds to precode with RZF for a K x M channel.

    ``per="vector"`` (one symbol vector per channel, as when the channel changes per
    subcarrier): direct = Gram ``K^2 M`` + Cholesky ``K^3 / 3`` + two triangular solves
    ``K^2`` + ``H^H z`` ``M K``; rKA = ``iters (2 M + 3)``. ``per="precoder"`` (the matrix
    W for K right-hand sides): direct = ``2 K^2 M + 4 K^3 / 3``; rKA = ``iters K (2 M + 3)``."""
    check_int("M", M, ">=1"), check_int("K", K, ">=1"), check_int("iters", iters, ">=0")
    if per not in ("vector", "precoder"):
        raise ValueError(f"per must be 'vector' or 'precoder', got {per!r}")
    if method == "direct":
        if per == "vector":
            return K * K * M + K**3 / 3 + K * K + M * K
        return 2 * K * K * M + 4 * K**3 / 3
    if method == "rka":
        return iters * (2 * M + 3) * (1 if per == "vector" else K)
    raise ValueError(f"method must be 'direct' or 'rka', got {method!r}")


def rka_precode(
    H: np.ndarray, s: np.ndarray, xi: float, iters: int, rng: np.random.Generator
) -> np.ndarray:
    """Precoded transmit vectors ``x = H^H (H H^H + xi I)^{-1} s`` by randomized Kaczmarz,
    one right-hand side per symbol vector, without forming the precoder: H (..., K, M),
    s (..., K) -> x (..., M), ``iters`` row steps each. This is how rKA saves work when
    the channel changes per subcarrier: cost iters x (2M + 3) per vector, against
    ``K^2 M`` and more for a direct precoder."""
    H = _check(H, xi)
    iters = check_int("iters", iters, ">=1")
    K, M = H.shape[-2:]
    s = check_array("s", s).astype(np.complex128)
    if s.shape[-1] != K:
        raise ValueError(f"s must be (..., K={K}), got {s.shape}")
    batch = np.broadcast_shapes(H.shape[:-2], s.shape[:-1])
    H = np.broadcast_to(H, (*batch, K, M))
    s = np.broadcast_to(s, (*batch, K))
    Hb = H.reshape(-1, K, M)
    sb = s.reshape(-1, K)
    F = Hb.shape[0]
    row_norm = (np.abs(Hb) ** 2).sum(-1) + xi
    cdf = np.cumsum(row_norm / row_norm.sum(-1, keepdims=True), -1)
    u = np.zeros((F, M), np.complex128)
    z = np.zeros((F, K), np.complex128)
    fi = np.arange(F)
    for _ in range(iters):
        r = (cdf < rng.random(F)[:, None]).sum(-1).clip(max=K - 1)
        h = Hb[fi, r]  # (F, M)
        eta = (sb[fi, r] - (h * u).sum(-1) - xi * z[fi, r]) / row_norm[fi, r]
        u += eta[:, None] * np.conj(h)
        z[fi, r] += eta
    return u.reshape(*batch, M)
