"""Link-level Monte Carlo: random bits -> QAM -> AFDM/OFDM frame -> prefix -> doubly
dispersive channel -> noise -> DAFT -> LMMSE -> bits, vectorised over frames, stopping at a
target number of bit errors, with a confidence interval; and the closed-form AWGN BER."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc
from scipy.stats import norm

from ..core.validate import check_array, check_int, check_number
from .channel import Paths, apply_channel, effective_matrix, random_paths
from .modem import (
    AFDMParams,
    add_prefix,
    daft,
    idaft,
    lmmse_detect,
    qam_demap_hard,
    qam_map,
    remove_prefix,
)

__all__ = ["BER", "ber_awgn", "simulate_ber", "simulate_mu_ber", "transmit_frame", "wilson"]


def _q(x):
    return 0.5 * erfc(np.asarray(x) / math.sqrt(2))


def ber_awgn(M: int, esn0_db: float | np.ndarray) -> np.ndarray:
    """Exact bit error rate of Gray-mapped QPSK (M=4) or 16-QAM (M=16) on AWGN at Es/N0."""
    g = 10 ** (check_array("esn0_db", esn0_db).astype(np.float64) / 10)
    if M == 4:
        return _q(np.sqrt(g))
    if M == 16:
        a = np.sqrt(g / 5)  # half the level spacing over the noise std per dimension
        return (3 * _q(a) + 2 * _q(3 * a) - _q(5 * a)) / 4
    raise ValueError(f"closed form for M = 4 or 16 only, got {M}")


def wilson(errors: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    n, errors = check_int("n", n, ">=0"), check_int("errors", errors, ">=0")
    check_number("conf", conf, "(0,1)")
    if errors > n:
        raise ValueError(f"errors ({errors}) cannot exceed the trials ({n})")
    if n == 0:
        return 0.0, 1.0
    z = norm.ppf(0.5 + conf / 2)
    p = errors / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, c - h), min(1.0, c + h)


@dataclass(frozen=True)
class BER:
    ber: float
    low: float
    high: float
    errors: int
    bits: int
    frames: int


def transmit_frame(x: np.ndarray, p: AFDMParams) -> np.ndarray:
    """DAFT-domain symbols (..., N) -> prefixed time-domain frame (..., cp_len + N)."""
    return add_prefix(idaft(x, p.c1, p.c2), p)


def receive_frame(r: np.ndarray, p: AFDMParams) -> np.ndarray:
    return daft(remove_prefix(r, p), p.c1, p.c2)


def _check_budget(target_errors, max_frames, min_frames) -> None:
    check_int("target_errors", target_errors, ">=1")
    if check_int("max_frames", max_frames, ">=1") < check_int("min_frames", min_frames, ">=0"):
        raise ValueError(f"max_frames ({max_frames}) must be >= min_frames ({min_frames})")


def simulate_ber(
    p: AFDMParams,
    M: int,
    esn0_db: float,
    channel: Callable[[np.random.Generator], Paths],
    rng: np.random.Generator,
    target_errors: int = 200,
    max_frames: int = 20_000,
    min_frames: int = 20,
    batch: int = 16,
    sparse_tol: float | None = None,
) -> BER:
    """BER of one waveform at one Es/N0 (signal power = average received power of unit-energy
    symbols through a channel of unit average power): frames in batches until
    ``target_errors`` bit errors (and ``min_frames``) or ``max_frames``. Each frame draws
    its channel from ``channel(rng)``; the receiver knows it (perfect CSI) and detects by
    LMMSE in the DAFT domain."""
    M = check_int("M", M)
    if M not in (4, 16, 64, 256):
        raise ValueError(f"M must be a QAM order (4, 16, 64, 256), got {M}")
    k = int(round(math.log2(M)))
    nv = 10 ** (-check_number("esn0_db", esn0_db, "[-100,200]") / 10)
    _check_budget(target_errors, max_frames, min_frames)
    check_int("batch", batch, ">=1")
    if sparse_tol is not None:
        check_number("sparse_tol", sparse_tol, "(0,1)")
    if not callable(channel):
        raise TypeError("channel must be a function rng -> Paths")
    errors = bits = frames = 0
    while frames < max_frames and (errors < target_errors or frames < min_frames):
        nb = min(batch, max_frames - frames)
        b = rng.integers(0, 2, (nb, p.N * k))
        x = qam_map(b, M)
        tx = transmit_frame(x, p)
        H = np.empty((nb, p.N, p.N), np.complex128)
        rx = np.empty_like(tx)
        for i in range(nb):
            paths = channel(rng)
            rx[i] = apply_channel(tx[i], paths, p)
            H[i] = effective_matrix(paths, p)
        noise = (rng.standard_normal(rx.shape) + 1j * rng.standard_normal(rx.shape)) * math.sqrt(
            nv / 2
        )
        y = receive_frame(rx + noise, p)
        xh = lmmse_detect(H, y, nv, sparse_tol)
        errors += int((qam_demap_hard(xh, M) != b).sum())
        bits += b.size
        frames += nb
    lo, hi = wilson(errors, bits)
    return BER(errors / bits, lo, hi, errors, bits, frames)


def simulate_mu_ber(
    p: AFDMParams,
    M_qam: int,
    esn0_db: float,
    n_antennas: int,
    n_users: int,
    max_doppler: float,
    n_paths: int,
    max_delay: int,
    precoder: Callable[[np.ndarray, float, np.random.Generator], np.ndarray],
    rng: np.random.Generator,
    target_errors: int = 200,
    max_frames: int = 2000,
    min_frames: int = 10,
    visibility: float | None = None,
) -> BER:
    """Multi-user XL-MIMO downlink BER (mean over users). Per frame: a near-field channel
    of ``n_users`` users (rows scaled to unit norm) on ``n_antennas`` antennas, a precoder
    ``W = precoder(H, xi, rng)`` (xi = noise variance: the MMSE regularisation at total
    power K) scaled to ``||W||_F^2 = K``, time-domain precoding of the users' prefixed
    frames, then each user's own doubly dispersive channel (local scattering: its paths
    share its spatial signature) and noise. User k knows its temporal channel and its gain
    ``(H W)_kk`` and detects by LMMSE; residual multi-user interference is not known to it."""
    from .channel import xlmimo_channel

    M_qam = check_int("M_qam", M_qam)
    if M_qam not in (4, 16, 64, 256):
        raise ValueError(f"M_qam must be a QAM order (4, 16, 64, 256), got {M_qam}")
    k_bits = int(round(math.log2(M_qam)))
    nv = 10 ** (-check_number("esn0_db", esn0_db, "[-100,200]") / 10)
    _check_budget(target_errors, max_frames, min_frames)
    n_users = check_int("n_users", n_users, ">=1")
    if check_int("n_antennas", n_antennas, ">=1") < n_users:
        raise ValueError(f"n_antennas ({n_antennas}) must be >= n_users ({n_users})")
    check_number("max_doppler", max_doppler, ">=0")
    check_int("n_paths", n_paths, ">=1"), check_int("max_delay", max_delay, ">=0")
    if not callable(precoder):
        raise TypeError("precoder must be a function (H, xi, rng) -> W")
    K = n_users
    errors = bits = frames = 0
    while frames < max_frames and (errors < target_errors or frames < min_frames):
        H, _ = xlmimo_channel(rng, n_antennas, K, visibility=visibility)
        H = H / np.sqrt(n_antennas)
        # the precoder draws from its own stream, so that every precoder sees the same
        # channels, bits and noise (common random numbers: tight comparisons)
        W = precoder(H, nv, np.random.default_rng(rng.integers(0, 2**62)))
        W = W * np.sqrt(K) / np.linalg.norm(W)
        G = H @ W  # (K, K): what each user receives of each stream
        b = rng.integers(0, 2, (K, p.N * k_bits))
        S = transmit_frame(qam_map(b, M_qam), p)  # (K, cp + N)
        Z = G @ S  # = H (W S): the time-domain precoded antenna signals seen by the users
        for k in range(K):
            paths = random_paths(rng, n_paths, max_delay, max_doppler)
            r = apply_channel(Z[k], paths, p)
            r = r + (rng.standard_normal(r.shape) + 1j * rng.standard_normal(r.shape)) * (
                math.sqrt(nv / 2)
            )
            Hk = effective_matrix(paths, p) * G[k, k]
            xh = lmmse_detect(Hk, receive_frame(r, p), nv)
            errors += int((qam_demap_hard(xh, M_qam) != b[k]).sum())
        bits += b.size
        frames += 1
    lo, hi = wilson(errors, bits)
    return BER(errors / bits, lo, hi, errors, bits, frames)
