"""Shared benchmark helpers: timing, the device's name, tables and CSV rows."""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from tenfold.core.experiment import machine_info

    m = machine_info()
    return f"CPU {m['cpu']} ({m['torch_threads']} threads)"


def bench(
    fn: Callable[[], object], device: torch.device, warmup: int = 3, iters: int = 10
) -> float:
    """Median milliseconds of ``fn()``: triton's do_bench on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def print_table(rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    widths = [max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(w) for c, w in zip(cols, widths)))


def append_csv(path: str | Path, rows: list[dict]) -> None:
    """Append rows (with a UTC timestamp) to a CSV file, writing the header once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{"when": stamp, **r} for r in rows]
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)


def bench_main(prog: str, run, argv=None) -> list[dict]:
    """The command line every benchmark shares: ``[--toy] [--csv PATH]``; ``run(toy)`` returns
    the rows, which are printed and, with ``--csv``, appended to that file."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--toy", action="store_true", help="toy sizes (seconds, CPU)")
    ap.add_argument("--csv", default=None, help="append the rows to this CSV")
    args = ap.parse_args(argv)
    rows = run(args.toy)
    print_table(rows)
    if args.csv:
        append_csv(args.csv, rows)
    return rows


def in_child(fn: Callable, *args):
    """(result, seconds, peak RSS growth in MB) of ``fn(*args)`` run in a forked worker
    (Linux), so that the peak belongs to that call alone and includes PyTorch's own
    allocations. ``fn`` must be a module-level function."""
    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure, (fn, *args))


def _measure(fn, *args):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = fn(*args)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out, dt, (after - before) / 1024
