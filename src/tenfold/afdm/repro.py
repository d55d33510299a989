"""Reproductions of arXiv 2503.10525 (AFDM for XL-MIMO) at link level.

* ``afdm/ber-mobility`` -- uncoded BER vs Es/N0 of AFDM and OFDM (same modem code, same
  LMMSE detector with perfect CSI, same channels) for users at several speeds in a doubly
  dispersive multipath channel with Jakes Doppler; Monte Carlo to a target error count with
  95% Wilson intervals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..core.experiment import Claim, Result, RunContext, experiment
from ..core.tasks.plotting import pyplot
from ..core.validate import check_config
from .channel import doppler_from_speed, random_paths
from .link import simulate_ber
from .modem import afdm_params, ofdm_params

WAVEFORMS = ("afdm", "ofdm")


@dataclass(frozen=True)
class BerMobilityConfig:
    N: int = 128
    qam: int = 4
    speeds_kmh: tuple[float, ...] = (0.0, 120.0, 500.0)
    esn0_db: tuple[float, ...] = (0.0, 4.0, 8.0, 12.0, 16.0, 20.0, 24.0)
    carrier_hz: float = 28e9
    subcarrier_hz: float = 15e3
    n_paths: int = 4
    max_delay: int = 8
    k_nu: int = 1
    target_errors: int = 300
    max_frames: int = 4000
    min_frames: int = 20

    def __post_init__(self):
        check_config(
            self,
            N=">=16",
            qam=(4, 16, 64),
            speeds_kmh=">=0",
            esn0_db="[-50,100]",
            carrier_hz=">0",
            subcarrier_hz=">0",
            n_paths=">=1",
            max_delay=">=0",
            k_nu=">=0",
            target_errors=">=1",
            max_frames=">=1",
            min_frames=">=1",
        )
        if self.N < 16:
            raise ValueError(f"N must be >= 16, got {self.N}")
        if self.qam not in (4, 16, 64):
            raise ValueError(f"qam must be 4, 16 or 64, got {self.qam}")
        if not self.speeds_kmh or min(self.speeds_kmh) < 0:
            raise ValueError("speeds_kmh must be non-empty and >= 0")
        if not self.esn0_db:
            raise ValueError("esn0_db must be non-empty")
        if not 1 <= self.n_paths <= self.max_delay + 1:
            raise ValueError(f"need 1 <= n_paths <= max_delay + 1, got {self.n_paths}")
        if self.target_errors < 1 or self.max_frames < self.min_frames:
            raise ValueError("target_errors must be >= 1 and max_frames >= min_frames")
        # the fastest user fixes c1; afdm_params raises if the paths cannot separate
        afdm_params(self.N, self.max_delay, self.doppler(max(self.speeds_kmh)), self.k_nu)

    def doppler(self, speed_kmh: float) -> float:
        return doppler_from_speed(speed_kmh, self.carrier_hz, self.subcarrier_hz)


def _curves_figure(ctx, cfg, res):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(cfg.speeds_kmh), figsize=(4.6 * len(cfg.speeds_kmh), 4),
                             squeeze=False, sharey=True)  # fmt: skip
    for ax, v in zip(axes[0], cfg.speeds_kmh):
        for w, style in zip(WAVEFORMS, ("o-", "s--")):
            pts = [(s, res[(v, w, s)]) for s in cfg.esn0_db if res[(v, w, s)].errors > 0]
            if not pts:
                continue
            x = np.array([s for s, _ in pts])
            y = np.array([b.ber for _, b in pts])
            err = np.array([[b.ber - b.low, b.high - b.ber] for _, b in pts]).T
            ax.errorbar(x, y, yerr=err, fmt=style, ms=4, capsize=2, label=w.upper())
        ax.set_yscale("log")
        ax.set_title(f"{v:g} km/h (Doppler {cfg.doppler(v):.2f} subcarriers)")
        ax.set_xlabel("Es/N0 (dB)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel(f"uncoded BER ({cfg.qam}-QAM, LMMSE)")
    fig.tight_layout()
    return ctx.figure(fig, "ber_mobility")


ABSTRACT = "abstract"
FACTOR_2 = math.log10(2.0)  # "beats" = at least half the BER: 0.301 decades


def _decades(a, o) -> tuple[float, float]:
    """How many decades AFDM's BER ``a`` sits below OFDM's ``o`` (log10(o / a)), and the noise
    of that difference: the two 95% Wilson intervals' half-widths in log10, combined in
    quadrature. A point with no error counts at its interval's upper bound (conservative)."""

    def side(b):
        if b.errors == 0:
            return math.log10(b.high), 0.0
        return math.log10(b.ber), (math.log10(b.high) - math.log10(max(b.low, 1e-300))) / 2

    (la, ha), (lo, ho) = side(a), side(o)
    return lo - la, math.hypot(ha, ho)


@experiment(
    "afdm/ber-mobility",
    BerMobilityConfig,
    presets={
        "quick": dict(
            N=64,
            max_delay=6,
            esn0_db=(0.0, 5.0, 10.0, 15.0, 20.0),
            target_errors=200,
            max_frames=2000,
        ),
        "full": dict(),
    },
    summary="Uncoded BER vs SNR of AFDM and OFDM for users at 0, 120 and 500 km/h in a doubly dispersive channel.",
)
def ber_mobility(cfg: BerMobilityConfig, ctx: RunContext) -> Result:
    nu_max = cfg.doppler(max(cfg.speeds_kmh))
    pa = afdm_params(cfg.N, cfg.max_delay, nu_max, cfg.k_nu)
    po = ofdm_params(cfg.N, cfg.max_delay, cfg.max_delay)
    res = {}
    t0 = time.perf_counter()
    for i, v in enumerate(cfg.speeds_kmh):
        nu = cfg.doppler(v)
        for w, p in (("afdm", pa), ("ofdm", po)):
            for s in cfg.esn0_db:
                # the same channel and noise draws for both waveforms at each point
                rng = np.random.default_rng([ctx.seed, i, int(s * 10)])

                def channel(r, nu=nu):
                    return random_paths(r, cfg.n_paths, cfg.max_delay, nu)

                res[(v, w, s)] = simulate_ber(
                    p, cfg.qam, s, channel, rng, cfg.target_errors, cfg.max_frames,
                    cfg.min_frames,
                )  # fmt: skip
        ctx.log(f"{v:g} km/h done ({time.perf_counter() - t0:.0f} s)")
    metrics = {"seconds": time.perf_counter() - t0, "c1": pa.c1, "c2": pa.c2}
    for (v, w, s), b in res.items():
        metrics[f"ber_{w}_{v:g}kmh_{s:g}dB"] = b.ber
    vmax = max(cfg.speeds_kmh)

    def fmt(v, s):
        a, o = res[(v, "afdm", s)], res[(v, "ofdm", s)]
        return f"{s:g} dB: AFDM {a.ber:.2e} vs OFDM {o.ber:.2e}"

    hi = max(cfg.esn0_db)
    eff_hi, noise_hi = _decades(res[(vmax, "afdm", hi)], res[(vmax, "ofdm", hi)])
    claims = [
        Claim.judge(
            "high-doppler",
            '"the robustness of AFDM to Doppler shift is enhanced in user mobility scenarios": '
            f"at {vmax:g} km/h AFDM's BER is at most half of OFDM's (same channels, same "
            "receiver), at the highest Es/N0",
            source=ABSTRACT,
            values=eff_hi,
            margin=FACTOR_2,
            noise=noise_hi,
            noise_from="95% Wilson intervals of both BERs, in log10, combined in quadrature",
            unit="decades of BER",
            measured="; ".join(fmt(vmax, s) for s in cfg.esn0_db),
            note="margin log10(2) = AFDM at least halves the BER",
        ),
    ]
    rows = []
    for v in cfg.speeds_kmh:
        for s in cfg.esn0_db:
            a, o = res[(v, "afdm", s)], res[(v, "ofdm", s)]
            rows.append({
                "speed km/h": v, "Doppler (subcarriers)": round(cfg.doppler(v), 3),
                "Es/N0 dB": s, "AFDM BER [95% CI]": f"{a.ber:.2e} [{a.low:.1e}, {a.high:.1e}]",
                "OFDM BER [95% CI]": f"{o.ber:.2e} [{o.low:.1e}, {o.high:.1e}]",
                "frames": f"{a.frames} / {o.frames}",
            })  # fmt: skip
    notes = (
        f"N = {cfg.N} subcarriers, {cfg.qam}-QAM, uncoded; {cfg.n_paths} paths with distinct "
        f"integer delays up to {cfg.max_delay} samples, equal average power, Rayleigh gains and "
        f"Jakes Doppler nu_max cos(theta) (fractional); carrier {cfg.carrier_hz / 1e9:g} GHz, "
        f"subcarrier spacing {cfg.subcarrier_hz / 1e3:g} kHz. AFDM c1 = {pa.c1:.5f} (for "
        f"{nu_max:.2f} subcarriers of Doppler, guard k_nu = {cfg.k_nu}), c2 = 1/(N^2 pi); "
        f"prefix {cfg.max_delay} samples for both. Receiver: LMMSE on the full N x N effective "
        "channel with perfect CSI (for OFDM too, so it also undoes inter-carrier "
        "interference). Monte Carlo per point until "
        f"{cfg.target_errors} bit errors or {cfg.max_frames} frames; 95% Wilson intervals."
    )
    return Result(metrics=metrics, claims=claims, tables={"BER": rows},
                  figures=[_curves_figure(ctx, cfg, res)], notes=notes)  # fmt: skip


# --------------------------------------------------------------------------------------
# afdm/xlmimo-rka
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XLMIMOConfig:
    N: int = 64
    qam: int = 4
    antennas: int = 512
    users: int = 16
    speed_kmh: float = 500.0
    esn0_db: tuple[float, ...] = (0.0, 5.0, 10.0, 15.0, 20.0)
    sweeps: tuple[int, ...] = (2, 4, 8, 16, 32)  # rKA budgets, in row steps per user (x K)
    carrier_hz: float = 28e9
    subcarrier_hz: float = 15e3
    n_paths: int = 4
    max_delay: int = 6
    k_nu: int = 1
    visibility: float = 0.0  # 0: every user sees the whole array
    target_ber: float = 1e-2  # where the SNR gap to direct RZF is read
    target_errors: int = 300
    max_frames: int = 400
    complexity_antennas: tuple[int, ...] = (64, 128, 256, 512, 1024)
    convergence_tol: float = 1e-2
    timing_repeats: int = 5

    def __post_init__(self):
        check_config(
            self,
            N=">=16",
            qam=(4, 16, 64),
            antennas=">=1",
            users=">=1",
            speed_kmh=">=0",
            esn0_db="[-50,100]",
            sweeps=">=1",
            carrier_hz=">0",
            subcarrier_hz=">0",
            n_paths=">=1",
            max_delay=">=0",
            k_nu=">=0",
            visibility="[0,1]",
            target_ber="(0,0.5)",
            target_errors=">=1",
            max_frames=">=1",
            complexity_antennas=">=1",
            convergence_tol=">0",
            timing_repeats=">=1",
        )
        if self.N < 16 or self.users < 1 or self.antennas < self.users:
            raise ValueError("need N >= 16 and antennas >= users >= 1")
        if not self.sweeps or min(self.sweeps) < 1:
            raise ValueError("sweeps must be non-empty and >= 1")
        if not 0 <= self.visibility <= 1:
            raise ValueError(f"visibility must be in [0, 1], got {self.visibility}")
        if not 0 < self.target_ber < 0.5:
            raise ValueError(f"target_ber must be in (0, 0.5), got {self.target_ber}")
        if self.qam not in (4, 16, 64):
            raise ValueError(f"qam must be 4, 16 or 64, got {self.qam}")
        nu = doppler_from_speed(self.speed_kmh, self.carrier_hz, self.subcarrier_hz)
        afdm_params(self.N, self.max_delay, nu, self.k_nu)


def _snr_at(curve: list[tuple[float, float]], target: float) -> float | None:
    """Es/N0 where log10(BER) crosses log10(target), by linear interpolation."""
    pts = [(s, b) for s, b in curve if b > 0]
    for (s0, b0), (s1, b1) in zip(pts, pts[1:]):
        if b0 >= target >= b1 and b0 != b1:
            f = (np.log10(b0) - np.log10(target)) / (np.log10(b0) - np.log10(b1))
            return s0 + f * (s1 - s0)
    return None


def _iters_to(H, xi, tol, rng, max_sweeps=64) -> int | None:
    from .precoding import rka_convergence

    its, err = rka_convergence(H, xi, H.shape[-2] * max_sweeps, rng)
    ok = np.nonzero(err <= tol)[0]
    return int(its[ok[0]]) if len(ok) else None


@experiment(
    "afdm/xlmimo-rka",
    XLMIMOConfig,
    presets={
        "quick": dict(
            antennas=256,
            users=8,
            sweeps=(2, 4, 8, 16),
            esn0_db=(0.0, 5.0, 10.0, 15.0),
            target_errors=150,
            max_frames=60,
            complexity_antennas=(64, 128, 256, 512),
            timing_repeats=3,
        ),
        "full": dict(),
    },
    summary="Multi-user near-field XL-MIMO downlink: AFDM vs OFDM with RZF precoding, direct vs randomized Kaczmarz at several budgets, and precoding cost vs antennas.",
)
def xlmimo_rka(cfg: XLMIMOConfig, ctx: RunContext) -> Result:
    from .link import simulate_mu_ber
    from .precoding import rzf_direct, rzf_flops, rzf_rka

    K, M = cfg.users, cfg.antennas
    nu = doppler_from_speed(cfg.speed_kmh, cfg.carrier_hz, cfg.subcarrier_hz)
    pa = afdm_params(cfg.N, cfg.max_delay, nu, cfg.k_nu)
    po = ofdm_params(cfg.N, cfg.max_delay, cfg.max_delay)
    vis = cfg.visibility or None
    schemes = [("AFDM", pa, "direct", None), ("OFDM", po, "direct", None)] + [
        ("AFDM", pa, f"rKA {s}K", s) for s in cfg.sweeps
    ]
    t0 = time.perf_counter()
    res: dict = {}
    for i, s in enumerate(cfg.esn0_db):
        for wf, p, name, sweeps in schemes:
            if sweeps is None:

                def pre(H, xi, r):
                    return rzf_direct(H, xi)
            else:

                def pre(H, xi, r, T=sweeps * K):
                    return rzf_rka(H, xi, T, r)

            rng = np.random.default_rng([ctx.seed, i])  # same channels and bits per point
            res[(wf, name, s)] = simulate_mu_ber(
                p, cfg.qam, s, M, K, nu, cfg.n_paths, cfg.max_delay, pre, rng,
                cfg.target_errors, cfg.max_frames, 10, vis,
            )  # fmt: skip
        ctx.log(f"Es/N0 {s:g} dB done ({time.perf_counter() - t0:.0f} s)")
    sim_s = time.perf_counter() - t0

    def curve(wf, name):
        return [(s, res[(wf, name, s)].ber) for s in cfg.esn0_db]

    snr_direct = _snr_at(curve("AFDM", "direct"), cfg.target_ber)
    gaps = {}
    for s in cfg.sweeps:
        x = _snr_at(curve("AFDM", f"rKA {s}K"), cfg.target_ber)
        gaps[s] = None if x is None or snr_direct is None else x - snr_direct
    within = [s for s in cfg.sweeps if gaps[s] is not None and gaps[s] <= 0.5]
    best = min(within) if within else None

    # cost against the number of antennas: flops, iterations to a fixed accuracy, wall time
    rng = np.random.default_rng([ctx.seed, 99])
    xi = 10 ** (-np.median(cfg.esn0_db) / 10)
    comp = []
    for Mi in cfg.complexity_antennas:
        from .channel import xlmimo_channel

        H = np.stack(
            [xlmimo_channel(rng, Mi, K, visibility=vis)[0] / np.sqrt(Mi) for _ in range(8)]
        )
        T = _iters_to(H, xi, cfg.convergence_tol, rng)
        td = _timeit(lambda H=H: rzf_direct(H[0], xi), cfg.timing_repeats)
        Tb = (best or max(cfg.sweeps)) * K
        tr = _timeit(lambda H=H, Tb=Tb: rzf_rka(H[0], xi, Tb, rng), cfg.timing_repeats)
        comp.append({
            "M": Mi,
            "rKA steps to rel. error <= tol": T if T is not None else "> 64K",
            "flops direct (precoder)": rzf_flops(Mi, K, "direct", per="precoder"),
            "flops rKA (precoder, tol)": rzf_flops(Mi, K, "rka", T or 64 * K, per="precoder"),
            "flops direct (per vector)": rzf_flops(Mi, K, "direct"),
            "flops rKA (per vector, tol)": rzf_flops(Mi, K, "rka", T or 64 * K),
            "ms direct": round(td * 1e3, 3),
            f"ms rKA ({Tb} steps)": round(tr * 1e3, 3),
        })  # fmt: skip
    metrics = {"simulation_seconds": sim_s, "snr_direct_at_target": snr_direct or float("nan")}
    for s, g in gaps.items():
        metrics[f"gap_db_rka_{s}K"] = g if g is not None else float("nan")
    for (wf, name, s), b in res.items():
        metrics[f"ber_{wf}_{name.replace(' ', '_')}_{s:g}dB"] = b.ber
    claims = []
    rka_quote = (
        '"we employ efficient precoding randomized Kaczmarz (rKA) to reduce the complexity '
        'overhead"'
    )
    if best is not None:
        fr = rzf_flops(M, K, "rka", best * K, per="precoder")
        fd = rzf_flops(M, K, "direct", per="precoder")
        vr = rzf_flops(M, K, "rka", best * K)
        vd = rzf_flops(M, K, "direct")
        saving = min(fd / fr, vd / vr)
        measured = (
            f"smallest budget within 0.5 dB at BER {cfg.target_ber:g}: {best} sweeps ({best * K} "
            f"steps; gap {gaps[best]:+.2f} dB); direct/rKA flops at M = {M}, K = {K}: "
            f"{fd / fr:.2f} for the precoder matrix, {vd / vr:.2f} per precoded vector"
        )
    else:
        saving = 0.0  # no budget on the grid reached the direct solve's BER: no saving shown
        measured = "no budget reached within 0.5 dB: gaps " + ", ".join(
            f"{s}K: {'-' if g is None else f'{g:+.2f} dB'}" for s, g in gaps.items()
        )
    claims.append(Claim.judge(
        "rka-budget",
        rka_quote + ": at a budget within 0.5 dB of direct RZF, rKA costs at most half the "
        "direct solve's flops, for the precoder matrix and per precoded vector",
        source=ABSTRACT, values=saving, margin=2.0, noise=0.0, unit="x fewer flops",
        noise_from="exact flop counts at the smallest budget on the sweep grid within 0.5 dB "
        "(the grid makes it a conservative bound; the 0.5 dB test itself rests on the "
        "Monte-Carlo BER)",
        measured=measured,
    ))  # fmt: skip
    conv = [r for r in comp if isinstance(r["rKA steps to rel. error <= tol"], int)]
    if len(conv) >= 2:
        first, last = conv[0], conv[-1]
        t0_, t1_ = (r["rKA steps to rel. error <= tol"] for r in (first, last))
        grow_d = last["flops direct (per vector)"] / first["flops direct (per vector)"]

        def ratio(ta, tb):  # direct's growth over rKA's, for steps-to-tolerance ta -> tb
            fa = rzf_flops(first["M"], K, "rka", max(ta, 1))
            return grow_d / (rzf_flops(last["M"], K, "rka", max(tb, 1)) / fa)

        eff = ratio(t0_, t1_)
        # steps to tolerance are read every K steps: +/- K at each end
        spread = max(abs(ratio(t0_ + a * K, t1_ + b * K) - eff) for a in (-1, 1) for b in (-1, 1))
        claims.append(Claim.judge(
            "rka-cost-scaling",
            rka_quote + ": as the array grows, rKA's precoding cost grows at most half as fast "
            "as the direct solve's (our reading of 'reduce the complexity overhead' for XL-MIMO)",
            source=ABSTRACT, values=eff, margin=2.0, noise=spread,
            unit="x (direct growth / rKA growth)",
            noise_from="the resolution of the steps to tolerance (checked every K steps: +/- K "
            "at each end); 8 channel draws averaged per M",
            measured=f"M {first['M']} -> {last['M']}: rKA steps to rel. error "
            f"{cfg.convergence_tol:g} {t0_} -> {t1_}; flops x{grow_d / eff:.2f} (rKA) vs "
            f"x{grow_d:.2f} (direct)",
        ))  # fmt: skip
    hi = max(cfg.esn0_db)
    a, o = res[("AFDM", "direct", hi)], res[("OFDM", "direct", hi)]
    eff, noise = _decades(a, o)
    claims.append(Claim.judge(
        "xlmimo-mobility",
        "\"we compare the performance of XL-MIMO-AFDM and XL-MIMO-OFDM in mobile scenarios, "
        "and the results show that our proposed AFDM-based XL-MIMO precoding design can be "
        f"more efficient\": at {cfg.speed_kmh:g} km/h, AFDM's BER with RZF is at most half of "
        "OFDM's at the highest Es/N0",
        source=ABSTRACT, values=eff, margin=FACTOR_2, noise=noise, unit="decades of BER",
        noise_from="95% Wilson intervals of both BERs, in log10, combined in quadrature",
        measured=f"BER at {hi:g} dB with direct RZF: AFDM {a.ber:.2e} [{a.low:.1e}, "
        f"{a.high:.1e}] vs OFDM {o.ber:.2e} [{o.low:.1e}, {o.high:.1e}]",
    ))  # fmt: skip
    rows = [
        {"Es/N0 dB": s}
        | {f"{wf} {name}": f"{res[(wf, name, s)].ber:.2e}" for wf, _, name, _ in schemes}
        for s in cfg.esn0_db
    ]
    figs = [_mu_figure(ctx, cfg, res, schemes), _cost_figure(ctx, comp)]
    notes = (
        f"M = {M} antennas (half-wavelength ULA at {cfg.carrier_hz / 1e9:g} GHz), K = {K} "
        f"users in the near field (5-50 m, -60..60 deg)"
        + (f", each seeing {cfg.visibility:.0%} of the array" if vis else "")
        + f"; per user {cfg.n_paths} local-scattering paths (delays up to {cfg.max_delay}, "
        f"Jakes Doppler {nu:.2f} subcarriers at {cfg.speed_kmh:g} km/h). N = {cfg.N}, "
        f"{cfg.qam}-QAM uncoded, time-domain RZF precoding (xi = noise variance, total power K), "
        "per-user LMMSE with known own channel and gain. rKA budgets in sweeps of K row steps. "
        "The spatial channel is frequency-flat within a frame, so the precoder matrix is "
        "computed once per frame; 'per vector' costs are for a channel that changes per "
        "precoded vector (e.g. per subcarrier in a wideband near-field channel)."
    )
    return Result(metrics=metrics, claims=claims,
                  tables={"BER": rows, "precoding cost vs antennas": comp},
                  figures=figs, notes=notes)  # fmt: skip


def _timeit(fn, repeats: int) -> float:
    ts = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _mu_figure(ctx, cfg, res, schemes):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for wf, _, name, _ in schemes:
        pts = [(s, res[(wf, name, s)].ber) for s in cfg.esn0_db if res[(wf, name, s)].errors]
        if pts:
            x, y = zip(*pts)
            style = "s--" if wf == "OFDM" else ("o-" if name == "direct" else ".:")
            ax.plot(x, y, style, label=f"{wf} {name}", ms=4)
    ax.set_yscale("log")
    ax.set_xlabel("Es/N0 (dB)")
    ax.set_ylabel("uncoded BER (mean over users)")
    ax.set_title(f"XL-MIMO downlink, M = {cfg.antennas}, K = {cfg.users}, {cfg.speed_kmh:g} km/h")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return ctx.figure(fig, "xlmimo_ber")


def _cost_figure(ctx, comp):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    Ms = [r["M"] for r in comp]
    for key, style in (("flops direct (precoder)", "o-"), ("flops rKA (precoder, tol)", "o--"),
                       ("flops direct (per vector)", "s-"), ("flops rKA (per vector, tol)", "s--")):  # fmt: skip
        a1.plot(Ms, [r[key] for r in comp], style, label=key.replace("flops ", ""))
    a1.set_xscale("log", base=2)
    a1.set_yscale("log")
    a1.set_xlabel("antennas M")
    a1.set_ylabel("complex multiply-adds")
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3, which="both")
    tkey = next(k for k in comp[0] if k.startswith("ms rKA"))
    a2.plot(Ms, [r["ms direct"] for r in comp], "o-", label="direct (numpy, batched LAPACK)")
    a2.plot(Ms, [r[tkey] for r in comp], "o--", label=tkey.replace("ms ", ""))
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("antennas M")
    a2.set_ylabel("ms per precoder (CPU)")
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return ctx.figure(fig, "xlmimo_cost")
