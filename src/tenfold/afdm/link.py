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

from .channel import Paths, apply_channel, effective_matrix
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

__all__ = ["BER", "ber_awgn", "simulate_ber", "transmit_frame", "wilson"]


def _q(x):
    return 0.5 * erfc(np.asarray(x) / math.sqrt(2))


def ber_awgn(M: int, esn0_db: float | np.ndarray) -> np.ndarray:
    """Exact bit error rate of Gray-mapped QPSK (M=4) or 16-QAM (M=16) on AWGN at Es/N0."""
    g = 10 ** (np.asarray(esn0_db, dtype=np.float64) / 10)
    if M == 4:
        return _q(np.sqrt(g))
    if M == 16:
        a = np.sqrt(g / 5)  # half the level spacing over the noise std per dimension
        return (3 * _q(a) + 2 * _q(3 * a) - _q(5 * a)) / 4
    raise ValueError(f"closed form for M = 4 or 16 only, got {M}")


def wilson(errors: int, n: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
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
    if not 2 <= M <= 256:
        raise ValueError(f"M must be a QAM order in 4..256, got {M}")
    k = int(round(math.log2(M)))
    nv = 10 ** (-esn0_db / 10)
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
