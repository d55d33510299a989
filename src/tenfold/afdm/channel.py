"""Channels: doubly dispersive multipath (integer and fractional delay and Doppler) applied
in the time domain, its effective DAFT-domain matrix, user speed to Doppler, and the
near-field XL-MIMO multi-user channel of an M-antenna uniform linear array."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.validate import check_array, check_int, check_number
from .modem import AFDMParams, add_prefix, daft, idaft, remove_prefix

__all__ = [
    "C_LIGHT",
    "Paths",
    "apply_channel",
    "doppler_from_speed",
    "effective_matrix",
    "near_field_response",
    "random_paths",
    "xlmimo_channel",
]

C_LIGHT = 299_792_458.0


@dataclass(frozen=True)
class Paths:
    """P propagation paths: complex ``gains`` (P,), ``delays`` in samples (P,; fractional
    allowed) and ``dopplers`` in subcarrier spacings (P,; fractional allowed)."""

    gains: np.ndarray
    delays: np.ndarray
    dopplers: np.ndarray

    def __post_init__(self):
        g, d, v = (
            np.atleast_1d(check_array(n, a))
            for n, a in (
                ("gains", self.gains),
                ("delays", self.delays),
                ("dopplers", self.dopplers),
            )
        )
        if np.iscomplexobj(d) or np.iscomplexobj(v):
            raise ValueError("delays and dopplers must be real")
        if not (g.shape == d.shape == v.shape) or g.ndim != 1:
            raise ValueError(
                f"gains, delays and dopplers must be 1-D of one length; got {g.shape}, "
                f"{d.shape}, {v.shape}"
            )
        if (d < 0).any():
            raise ValueError("delays must be >= 0 (causal paths)")
        object.__setattr__(self, "gains", g.astype(np.complex128))
        object.__setattr__(self, "delays", d.astype(np.float64))
        object.__setattr__(self, "dopplers", v.astype(np.float64))

    def taps(self, sinc_span: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Integer taps (gains, delays, dopplers) of the band-limited channel: an integer delay
        is one tap; a fractional delay tau spreads over taps l = floor(tau) - span + 1 ..
        floor(tau) + span (>= 0) with weights sinc(l - tau)."""
        G, L, V = [], [], []
        for g, d, v in zip(self.gains, self.delays, self.dopplers):
            if float(d).is_integer():
                G.append(g), L.append(int(d)), V.append(v)
                continue
            base = math.floor(d)
            for lt in range(max(0, base - sinc_span + 1), base + sinc_span + 1):
                G.append(g * np.sinc(lt - d)), L.append(lt), V.append(v)
        return np.array(G), np.array(L, dtype=np.int64), np.array(V)

    def max_tap_delay(self, sinc_span: int = 4) -> int:
        return int(self.taps(sinc_span)[1].max())


def doppler_from_speed(speed_kmh: float, carrier_hz: float, subcarrier_hz: float) -> float:
    """Maximum Doppler of a user moving at ``speed_kmh``, in subcarrier spacings:
    ``v f_c / c / delta_f``."""
    check_number("speed_kmh", speed_kmh, ">=0")
    check_number("carrier_hz", carrier_hz, ">0")
    check_number("subcarrier_hz", subcarrier_hz, ">0")
    nu = speed_kmh / 3.6 * carrier_hz / C_LIGHT / subcarrier_hz
    if not math.isfinite(nu):
        raise ValueError(f"the Doppler of {speed_kmh} km/h at {carrier_hz} Hz overflows")
    return nu


def random_paths(
    rng: np.random.Generator,
    n_paths: int,
    max_delay: int,
    max_doppler: float,
    fractional_doppler: bool = True,
) -> Paths:
    """``n_paths`` paths with distinct integer delays in [0, max_delay] (path 0 at delay 0),
    equal average power (Rayleigh gains, total power 1) and Jakes Doppler
    ``max_doppler cos(theta)``, theta uniform (rounded to integers unless
    ``fractional_doppler``)."""
    n_paths = check_int("n_paths", n_paths, ">=1")
    max_delay = check_int("max_delay", max_delay, ">=0")
    check_number("max_doppler", max_doppler, ">=0")
    if n_paths > max_delay + 1:
        raise ValueError(f"need 1 <= n_paths <= max_delay + 1, got {n_paths}, {max_delay}")
    delays = np.concatenate([[0], rng.choice(np.arange(1, max_delay + 1), n_paths - 1, False)])
    gains = (rng.standard_normal(n_paths) + 1j * rng.standard_normal(n_paths)) / np.sqrt(
        2 * n_paths
    )
    nu = max_doppler * np.cos(rng.uniform(-np.pi, np.pi, n_paths))
    if not fractional_doppler:
        nu = np.round(nu)
    return Paths(gains, delays, nu)


def apply_channel(s_ext: np.ndarray, paths: Paths, p: AFDMParams, sinc_span: int = 4) -> np.ndarray:
    """Pass prefixed frames (..., cp_len + N) through the doubly dispersive channel:
    ``r[n] = sum_i h_i exp(-j 2 pi nu_i n / N) s[n - l_i]`` with n counted from the frame's
    first sample after the prefix. Raises when a tap's delay exceeds the prefix (the
    receiver would see inter-frame interference, i.e. wrong bits)."""
    if not isinstance(paths, Paths):
        raise TypeError(f"paths must be a Paths, got {type(paths).__name__}")
    s_ext = np.asarray(s_ext)
    if s_ext.ndim < 1 or s_ext.shape[-1] != p.cp_len + p.N:
        raise ValueError(
            f"frames must be (..., cp_len + N = {p.cp_len + p.N}), got shape {s_ext.shape}"
        )
    G, L, V = paths.taps(check_int("sinc_span", sinc_span, ">=1"))
    if L.max() > p.cp_len:
        raise ValueError(
            f"a path delay ({int(L.max())} samples, with the fractional-delay taps) exceeds "
            f"the prefix ({p.cp_len}): raise cp_len or shorten the channel"
        )
    N, cp = p.N, p.cp_len
    n = np.arange(-cp, N, dtype=np.float64)
    r = np.zeros_like(s_ext, dtype=np.complex128)
    for g, lt, v in zip(G, L, V):
        shifted = np.zeros_like(r)
        shifted[..., lt:] = s_ext[..., : s_ext.shape[-1] - lt]
        r += g * np.exp(-2j * np.pi * v * n / N) * shifted
    return r


def effective_matrix(paths: Paths, p: AFDMParams, sinc_span: int = 4) -> np.ndarray:
    """The N x N DAFT-domain channel ``H_eff = A H_t A^H`` (y = H_eff x + noise)."""
    eye = np.eye(p.N, dtype=np.complex128)
    cols = add_prefix(idaft(eye, p.c1, p.c2), p)  # rows are the transmitted unit frames
    y = daft(remove_prefix(apply_channel(cols, paths, p, sinc_span), p), p.c1, p.c2)
    return y.T


# --------------------------------------------------------------------------------------
# XL-MIMO near field
# --------------------------------------------------------------------------------------


def near_field_response(
    M: int, r: np.ndarray, theta: np.ndarray, freq: float, spacing: float
) -> np.ndarray:
    """Array response of an M-antenna ULA centred at the origin to sources at distance ``r``
    (m) and angle ``theta`` (rad from broadside), spherical wavefront:
    ``a_m = exp(-j 2 pi f (r_m - r) / c) / sqrt(M)``, ``r_m = sqrt(r^2 + d_m^2 - 2 r d_m
    sin theta)``. r, theta (...,) -> (..., M)."""
    check_int("M", M, ">=1")
    check_number("freq", freq, ">0")
    check_number("spacing", spacing, ">0")
    r = check_array("r", r).astype(np.float64)[..., None]
    th = check_array("theta", theta).astype(np.float64)[..., None]
    if (r <= 0).any():
        raise ValueError("distances r must be > 0 (metres from the array centre)")
    d = (np.arange(M) - (M - 1) / 2) * spacing
    rm = np.sqrt(r**2 + d**2 - 2 * r * d * np.sin(th))
    return np.exp(-2j * np.pi * freq * (rm - r) / C_LIGHT) / np.sqrt(M)


def xlmimo_channel(
    rng: np.random.Generator,
    M: int,
    K: int,
    carrier_hz: float = 28e9,
    r_range: tuple[float, float] = (5.0, 50.0),
    visibility: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial channels of K users in the near field of a half-wavelength ULA of M antennas:
    users at distances uniform in ``r_range`` (m) and angles uniform in (-60, 60) degrees.
    With ``visibility`` (0..1] each user sees only a contiguous region of that fraction of
    the array (spatial non-stationarity); the rest of its row is 0 and the row is
    renormalised to unit norm. Returns (H (K, M), user positions (K, 2) as (r, theta))."""
    M, K = check_int("M", M, ">=1"), check_int("K", K, ">=1")
    check_number("carrier_hz", carrier_hz, ">0")
    lo, hi = (check_number(f"r_range[{i}]", v, ">0") for i, v in enumerate(tuple(r_range)))
    if lo > hi:
        raise ValueError(f"r_range must be (near, far) with near <= far, got {r_range}")
    lam = C_LIGHT / carrier_hz
    r = rng.uniform(*r_range, K)
    th = rng.uniform(-np.pi / 3, np.pi / 3, K)
    H = near_field_response(M, r, th, carrier_hz, lam / 2) * np.sqrt(M)  # unit-modulus entries
    if visibility is not None:
        if not 0 < visibility <= 1:
            raise ValueError(f"visibility must be in (0, 1], got {visibility}")
        w = max(1, int(round(visibility * M)))
        starts = rng.integers(0, M - w + 1, K)
        mask = (np.arange(M)[None] >= starts[:, None]) & (np.arange(M)[None] < starts[:, None] + w)
        H = H * mask
    H = H / np.linalg.norm(H, axis=1, keepdims=True) * np.sqrt(M)
    return H, np.stack([r, th], 1)
