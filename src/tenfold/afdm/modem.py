"""AFDM modem: the discrete affine Fourier transform (DAFT), chirp-periodic prefix, QAM, and
LMMSE detection in the DAFT domain. NumPy, batched over leading axes; OFDM is the same code
path at ``c1 = c2 = 0`` (the DAFT is then the unitary DFT and the prefix a cyclic prefix).

Conventions (Bemani, Ksairi, Kountouris, IEEE TWC 2023): ``A = L(c2) F L(c1)`` with
``L(c) = diag(exp(-j 2 pi c n^2))`` and ``F`` the unitary DFT; transmit ``s = A^H x``,
receive ``y = A r``. All transforms are O(N log N): chirp, FFT, chirp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.validate import check_array, check_config, check_int, check_number

__all__ = [
    "AFDMParams",
    "add_prefix",
    "afdm_params",
    "daft",
    "idaft",
    "lmmse_detect",
    "ofdm_params",
    "qam_constellation",
    "qam_demap_hard",
    "qam_llr",
    "qam_map",
    "remove_prefix",
]


def _chirp(N: int, c: float) -> np.ndarray:
    n = np.arange(N, dtype=np.float64)
    # (c n^2) mod 1 first: exact phases even for large n
    return np.exp(-2j * np.pi * np.mod(c * n * n, 1.0))


def daft(x: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """``A x`` along the last axis: chirp(c1), unitary FFT, chirp(c2)."""
    x = np.asarray(x)
    check_number("c1", c1), check_number("c2", c2)
    if x.ndim < 1 or x.shape[-1] < 1:
        raise ValueError(f"x must be (..., N) with N >= 1, got shape {x.shape}")
    N = x.shape[-1]
    return _chirp(N, c2) * np.fft.fft(_chirp(N, c1) * x, norm="ortho")


def idaft(y: np.ndarray, c1: float, c2: float) -> np.ndarray:
    """``A^H y`` along the last axis (the inverse: A is unitary)."""
    y = np.asarray(y)
    check_number("c1", c1), check_number("c2", c2)
    if y.ndim < 1 or y.shape[-1] < 1:
        raise ValueError(f"y must be (..., N) with N >= 1, got shape {y.shape}")
    N = y.shape[-1]
    return np.conj(_chirp(N, c1)) * np.fft.ifft(np.conj(_chirp(N, c2)) * y, norm="ortho")


@dataclass(frozen=True)
class AFDMParams:
    """One AFDM (or OFDM) frame: ``N`` chirp subcarriers, chirp rates ``c1``, ``c2``, a
    prefix of ``cp_len`` samples; ``max_delay`` and ``max_doppler`` (integer part, in
    subcarrier spacings) with the fractional-Doppler guard ``k_nu`` are what ``c1`` was
    chosen for."""

    N: int
    c1: float
    c2: float
    cp_len: int
    max_delay: int = 0
    max_doppler: int = 0
    k_nu: int = 0

    def __post_init__(self):
        check_config(self, N=">=2", cp_len=">=0", max_delay=">=0", max_doppler=">=0", k_nu=">=0")
        if self.N < 2:
            raise ValueError(f"N must be >= 2, got {self.N}")
        if not 0 <= self.cp_len < self.N:
            raise ValueError(f"cp_len must be in [0, N), got {self.cp_len}")
        if self.cp_len < self.max_delay:
            raise ValueError(
                f"the prefix ({self.cp_len} samples) is shorter than the max delay "
                f"({self.max_delay}): raise cp_len"
            )

    @property
    def is_ofdm(self) -> bool:
        return self.c1 == 0 and self.c2 == 0

    def path_location(self, delay: int, doppler: int) -> int:
        """DAFT-domain diagonal on which a path with integer ``delay`` and ``doppler`` lands:
        y[p] picks up x[(p + loc) mod N] with ``loc = (doppler + 2 N c1 delay) mod N`` (for
        integer 2 N c1; the sign follows the channel's ``exp(-j 2 pi nu n / N)``)."""
        return int(round(doppler + 2 * self.N * self.c1 * delay)) % self.N


def afdm_params(
    N: int,
    max_delay: int,
    max_doppler: float,
    k_nu: int = 0,
    c2: float | None = None,
    cp_len: int | None = None,
) -> AFDMParams:
    """Choose ``c1 = (2 (alpha_max + k_nu) + 1) / (2N)`` for a channel with integer delays
    up to ``max_delay`` and Doppler up to ``max_doppler`` subcarrier spacings (alpha_max is
    its ceiling), and check that the paths separate in the DAFT domain:
    ``2 (alpha_max + k_nu) (max_delay + 1) + max_delay <= N``. ``c2`` defaults to
    ``1 / (N^2 pi)`` (irrational, small); the prefix to ``max_delay`` samples."""
    N = check_int("N", N, ">=2")
    max_delay, k_nu = check_int("max_delay", max_delay, ">=0"), check_int("k_nu", k_nu, ">=0")
    max_doppler = check_number("max_doppler", max_doppler, ">=0")
    if c2 is not None:
        check_number("c2", c2)
    if cp_len is not None:
        cp_len = check_int("cp_len", cp_len, ">=0")
    a = math.ceil(max_doppler)
    need = 2 * (a + k_nu) * (max_delay + 1) + max_delay
    if need > N:
        raise ValueError(
            f"AFDM orthogonality fails: 2 (alpha_max + k_nu) (l_max + 1) + l_max = {need} > "
            f"N = {N} (alpha_max={a}, k_nu={k_nu}, l_max={max_delay}); use more subcarriers "
            "or a smaller Doppler guard"
        )
    c1 = (2 * (a + k_nu) + 1) / (2 * N)
    c2 = 1.0 / (N * N * math.pi) if c2 is None else c2
    cp = max_delay if cp_len is None else cp_len
    return AFDMParams(N, c1, c2, cp, max_delay, a, k_nu)


def ofdm_params(N: int, cp_len: int, max_delay: int = 0) -> AFDMParams:
    """OFDM as the AFDM special case ``c1 = c2 = 0`` (cyclic prefix)."""
    return AFDMParams(
        check_int("N", N, ">=2"), 0.0, 0.0, check_int("cp_len", cp_len, ">=0"), max_delay
    )


def add_prefix(s: np.ndarray, p: AFDMParams) -> np.ndarray:
    """Chirp-periodic prefix along the last axis: ``s[n] = s[N + n] exp(-j 2 pi c1 (N^2 +
    2 N n))`` for ``n = -cp_len .. -1`` (a cyclic prefix when c1 = 0)."""
    if s.shape[-1] != p.N:
        raise ValueError(f"frame length {s.shape[-1]} != N = {p.N}")
    if p.cp_len == 0:
        return s
    n = np.arange(-p.cp_len, 0, dtype=np.float64)
    phase = np.exp(-2j * np.pi * np.mod(p.c1 * (p.N * p.N + 2 * p.N * n), 1.0))
    return np.concatenate([s[..., p.N + n.astype(int)] * phase, s], axis=-1)


def remove_prefix(r: np.ndarray, p: AFDMParams) -> np.ndarray:
    if r.shape[-1] != p.N + p.cp_len:
        raise ValueError(f"received length {r.shape[-1]} != N + cp_len = {p.N + p.cp_len}")
    return r[..., p.cp_len :]


# --------------------------------------------------------------------------------------
# QAM
# --------------------------------------------------------------------------------------


def _gray(n: int) -> np.ndarray:
    i = np.arange(n)
    return i ^ (i >> 1)


def qam_constellation(M: int) -> np.ndarray:
    """Gray-mapped square M-QAM (M = 4, 16, 64, 256) of unit average energy; index = the
    integer whose bits (MSB first) are the symbol's bits."""
    M = check_int("M", M, ">=4")
    k = int(round(math.log2(M)))
    if 2**k != M or k % 2:
        raise ValueError(f"M must be a square power of two >= 4 (4, 16, 64, 256), got {M}")
    m = 2 ** (k // 2)
    levels = 2 * np.arange(m) - (m - 1)  # -(m-1) .. m-1
    g = _gray(m)
    pam = np.empty(m)
    pam[g] = levels  # Gray code g[i] sits at level i
    idx = np.arange(M)
    hi, lo = idx >> (k // 2), idx & (m - 1)
    pts = pam[hi] + 1j * pam[lo]
    return pts / np.sqrt(np.mean(np.abs(pts) ** 2))


def qam_map(bits: np.ndarray, M: int) -> np.ndarray:
    """Bits (..., n * log2 M) of 0/1 -> symbols (..., n)."""
    qam_constellation(M)  # checks M
    k = int(round(math.log2(M)))
    bits = check_array("bits", bits)
    if bits.ndim < 1 or not np.isin(bits, (0, 1)).all():
        raise ValueError("bits must be an array of 0s and 1s")
    if bits.shape[-1] % k:
        raise ValueError(f"the bit count {bits.shape[-1]} is not a multiple of log2(M) = {k}")
    b = bits.reshape(*bits.shape[:-1], -1, k).astype(np.int64)
    idx = (b << np.arange(k - 1, -1, -1)).sum(-1)
    return qam_constellation(M)[idx]


def _bits_of(idx: np.ndarray, k: int) -> np.ndarray:
    return ((idx[..., None] >> np.arange(k - 1, -1, -1)) & 1).reshape(*idx.shape[:-1], -1)


def qam_demap_hard(y: np.ndarray, M: int) -> np.ndarray:
    """Nearest-symbol decisions -> bits (..., n * log2 M)."""
    c = qam_constellation(M)
    idx = np.abs(np.asarray(y)[..., None] - c).argmin(-1)
    return _bits_of(idx, int(round(math.log2(M))))


def qam_llr(y: np.ndarray, M: int, noise_var: float | np.ndarray) -> np.ndarray:
    """Max-log LLRs log P(b=0)/P(b=1) -> (..., n * log2 M); positive means bit 0."""
    c = qam_constellation(M)
    k = int(round(math.log2(M)))
    nvar = check_array("noise_var", noise_var)
    if (nvar <= 0).any():
        raise ValueError("noise_var must be > 0")
    d = np.abs(np.asarray(y)[..., None] - c) ** 2 / np.asarray(noise_var)[..., None]
    bits = _bits_of(np.arange(M)[None], k).reshape(M, k)
    out = []
    for j in range(k):
        d0 = np.where(bits[:, j] == 0, d, np.inf).min(-1)
        d1 = np.where(bits[:, j] == 1, d, np.inf).min(-1)
        out.append(d1 - d0)
    return np.stack(out, -1).reshape(*np.shape(y)[:-1], -1)


# --------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------


def lmmse_detect(
    H: np.ndarray, y: np.ndarray, noise_var: float, sparse_tol: float | None = None
) -> np.ndarray:
    """LMMSE estimate of unit-energy symbols x from ``y = H x + w`` (w of variance
    ``noise_var``): ``(H^H H + noise_var I)^{-1} H^H y``; H (..., N, N), y (..., N).

    With ``sparse_tol`` the DAFT-domain channel is treated as sparse (entries below
    ``sparse_tol`` x its largest dropped): AFDM with separable paths gives a few cyclic
    diagonals per path, so ``H^H H + noise_var I`` is banded and a sparse LU solves it in
    about O(N b^2) instead of O(N^3)."""
    H = np.asarray(H)
    y = np.asarray(y)
    check_number("noise_var", noise_var, ">=0")
    if sparse_tol is not None:
        check_number("sparse_tol", sparse_tol, "(0,1)")
    if H.ndim < 2 or y.ndim < 1 or H.shape[-1] != H.shape[-2] or H.shape[-1] != y.shape[-1]:
        raise ValueError(f"H must be (..., N, N) and y (..., N); got {H.shape} and {y.shape}")
    N = H.shape[-1]
    if sparse_tol is None:
        G = np.conj(np.swapaxes(H, -1, -2)) @ H + noise_var * np.eye(N)
        rhs = np.conj(np.swapaxes(H, -1, -2)) @ y[..., None]
        return np.linalg.solve(G, rhs)[..., 0]
    from scipy import sparse
    from scipy.sparse.linalg import splu

    Hs = H.reshape(-1, N, N)
    ys = y.reshape(-1, N)
    out = np.empty_like(ys, dtype=np.complex128)
    for b in range(Hs.shape[0]):
        h = Hs[b]
        h = np.where(np.abs(h) >= sparse_tol * np.abs(h).max(), h, 0)
        hs = sparse.csc_matrix(h)
        G = (hs.conj().T @ hs + noise_var * sparse.identity(N, format="csc")).tocsc()
        out[b] = splu(G).solve(hs.conj().T @ ys[b])
    return out.reshape(y.shape)
