"""Speed of the AFDM link simulator and of RZF precoding, direct vs randomized Kaczmarz.

    python -m benchmarks.afdm.bench_afdm [--toy] [--csv benchmarks/afdm/results.csv]

* ``link``: frames per second of the full link simulation (bits -> QAM -> DAFT -> prefix ->
  doubly dispersive channel -> noise -> DAFT -> LMMSE -> bits), AFDM and OFDM, N = 64..256.
* ``precoder``: the K x M RZF precoder matrix of one channel, direct vs rKA with the
  budget that reaches a relative error of 1e-2 (measured per M), K = 16, M = 64..1024.
* ``per-vector``: one precoded vector per channel for N = 128 channels (a channel per
  subcarrier), direct solve vs rKA at the same accuracy; the regime where rKA can win.

Each row carries the relative error of rKA's output against the direct solution. CPU only
(NumPy/SciPy): the numbers name the machine.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import bench_main, device_name
from tenfold.afdm import (
    afdm_params,
    ofdm_params,
    random_paths,
    rka_precode,
    rzf_direct,
    rzf_rka,
    simulate_ber,
    xlmimo_channel,
)
from tenfold.afdm.precoding import rka_convergence, rzf_direct_precode


def _median_s(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _steps_to(H, xi, tol, rng) -> int:
    its, err = rka_convergence(H, xi, H.shape[-2] * 64, rng)
    ok = np.nonzero(err <= tol)[0]
    return int(its[ok[0]]) if len(ok) else int(its[-1])


def run(toy: bool) -> list[dict]:
    import torch

    dev = device_name(torch.device("cpu"))
    rows: list[dict] = []
    rng = np.random.default_rng(0)
    frames = 8 if toy else 200
    for N in (64,) if toy else (64, 128, 256):
        for name, p in (("afdm", afdm_params(N, 6, 1.0, 1)), ("ofdm", ofdm_params(N, 6, 6))):
            t = _median_s(
                lambda p=p: simulate_ber(p, 4, 10.0, lambda r: random_paths(r, 4, 6, 1.0),
                                         rng, target_errors=10**9, max_frames=frames,
                                         min_frames=frames),
                1 if toy else 3,
            )  # fmt: skip
            rows.append({"case": f"link {name}", "N": N, "M": "-", "K": "-",
                         "ms": round(t * 1e3 / frames, 3), "per_s": round(frames / t, 1),
                         "steps": "-", "rel_err": float("nan"), "speedup": float("nan"),
                         "device": dev})  # fmt: skip
    K = 16 if not toy else 4
    xi = 0.1
    for M in (64,) if toy else (64, 128, 256, 512, 1024):
        H = np.stack([xlmimo_channel(rng, M, K)[0] / np.sqrt(M) for _ in range(4)])
        T = _steps_to(H, xi, 1e-2, rng)
        reps = 2 if toy else 20
        td = _median_s(lambda H=H: rzf_direct(H[0], xi), reps)
        tr = _median_s(lambda H=H, T=T: rzf_rka(H[0], xi, T, np.random.default_rng(1)), reps)
        W = rzf_direct(H[0], xi)
        Wr = rzf_rka(H[0], xi, T, np.random.default_rng(1))
        err = float(np.linalg.norm(Wr - W) / np.linalg.norm(W))
        rows.append({"case": "precoder direct", "N": "-", "M": M, "K": K, "ms": round(td * 1e3, 4),
                     "per_s": round(1 / td, 1), "steps": "-", "rel_err": 0.0, "speedup": 1.0,
                     "device": dev})  # fmt: skip
        rows.append({"case": "precoder rKA", "N": "-", "M": M, "K": K, "ms": round(tr * 1e3, 4),
                     "per_s": round(1 / tr, 1), "steps": T, "rel_err": float(f"{err:.3g}"),
                     "speedup": round(td / tr, 3), "device": dev})  # fmt: skip
        F = 8 if toy else 128  # one channel per subcarrier
        Hf = np.stack([xlmimo_channel(rng, M, K)[0] / np.sqrt(M) for _ in range(F)])
        s = (rng.standard_normal((F, K)) + 1j * rng.standard_normal((F, K))) / np.sqrt(2)
        tdv = _median_s(lambda Hf=Hf, s=s: rzf_direct_precode(Hf, s, xi), reps)
        trv = _median_s(
            lambda Hf=Hf, s=s, T=T: rka_precode(Hf, s, xi, T, np.random.default_rng(2)), reps
        )
        x = rzf_direct_precode(Hf, s, xi)
        xr = rka_precode(Hf, s, xi, T, np.random.default_rng(2))
        errv = float(np.linalg.norm(xr - x) / np.linalg.norm(x))
        rows.append({"case": "per-vector direct", "N": F, "M": M, "K": K,
                     "ms": round(tdv * 1e3, 4), "per_s": round(F / tdv, 1), "steps": "-",
                     "rel_err": 0.0, "speedup": 1.0, "device": dev})  # fmt: skip
        rows.append({"case": "per-vector rKA", "N": F, "M": M, "K": K,
                     "ms": round(trv * 1e3, 4), "per_s": round(F / trv, 1), "steps": T,
                     "rel_err": float(f"{errv:.3g}"), "speedup": round(tdv / trv, 3),
                     "device": dev})  # fmt: skip
    return rows


def main(argv=None):
    return bench_main("bench_afdm", run, argv)


if __name__ == "__main__":
    main()
