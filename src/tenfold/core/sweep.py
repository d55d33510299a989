"""Grid sweeps on one machine: points run in parallel worker processes, each point's result
is written to its own JSON file the moment it finishes, and a rerun skips the points whose
file is already there -- so an interrupted sweep resumes where it stopped.

    results = run_sweep(train_point, points, cache_dir, workers=2)

``fn`` must be a module-level function (workers are spawned, not forked: a fork after torch
has used OpenMP can hang) taking one point (a JSON-able dict) and returning a JSON-able dict.
Each worker runs ``cores // workers`` torch threads, so the machine is not oversubscribed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from .io import atomic_write_text

__all__ = ["point_key", "run_sweep", "default_workers"]


def point_key(point: dict[str, Any]) -> str:
    """A readable, filename-safe, unique name for a point: ``k1=v1,k2=v2-<hash>``."""
    text = json.dumps(point, sort_keys=True, default=str)
    digest = hashlib.sha1(text.encode()).hexdigest()[:10]
    readable = ",".join(f"{k}={point[k]}" for k in sorted(point) if not isinstance(point[k], dict))
    safe = "".join(c if c.isalnum() or c in "=,.-_" else "_" for c in readable)[:120]
    return f"{safe}-{digest}"


def default_workers() -> int:
    """One worker per core (at most 8); ``TENFOLD_WORKERS`` overrides."""
    env = os.environ.get("TENFOLD_WORKERS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"TENFOLD_WORKERS must be an integer >= 1, got {env!r}")
        return n
    return max(1, min(8, os.cpu_count() or 1))


def _orphan_watch(parent: int) -> None:
    """End this worker once its sweep process is gone (killed, say): an orphaned pool
    worker would otherwise wait for work on the call queue forever."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _init_worker(threads: int) -> None:
    import signal
    import threading

    import torch

    # Ctrl-C is the parent's to handle: it keeps the finished points and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    torch.set_num_threads(threads)


def _run_one(fn: Callable[[dict], dict], point: dict) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = fn(point)
    return out, time.perf_counter() - t0


def _load(path: Path, point: dict) -> dict | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or half-written by a killed run: run the point again
    if rec.get("point") != json.loads(json.dumps(point)):
        return None
    return rec


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers (a point in progress is lost;
    it reruns next time), so that Ctrl-C returns within seconds."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()


def run_sweep(
    fn: Callable[[dict], dict],
    points: Sequence[dict[str, Any]],
    cache_dir: str | os.PathLike,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "sweep",
) -> list[dict[str, Any]]:
    """Run ``fn`` on every point; return records ``{"point", "result", "seconds", "reused"}``
    in the order of ``points``. Finished points found in ``cache_dir`` are not rerun."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    keys = [point_key(p) for p in points]
    if len(set(keys)) != len(keys):
        raise ValueError("run_sweep: the points are not distinct")
    records: dict[int, dict] = {}
    todo = []
    for i, (p, k) in enumerate(zip(points, keys)):
        rec = _load(cache / f"{k}.json", p)
        if rec is not None:
            records[i] = {**rec, "reused": True}
        else:
            todo.append(i)
    workers = min(workers or default_workers(), max(len(todo), 1))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(points),
            initial=len(points) - len(todo),
            desc=desc,
            unit="pt",
            file=sys.stderr,
            mininterval=0.5 if sys.stderr.isatty() else 10.0,
            dynamic_ncols=True,
        )

    def finish(i: int, out: dict, secs: float) -> None:
        rec = {"point": points[i], "result": out, "seconds": round(secs, 3)}
        atomic_write_text(cache / f"{keys[i]}.json", json.dumps(rec, indent=1))
        records[i] = {**json.loads(json.dumps(rec)), "reused": False}
        if bar is not None:
            bar.update(1)

    try:
        if workers <= 1:
            for i in todo:
                out, secs = _run_one(fn, points[i])
                finish(i, out, secs)
        elif todo:
            threads = max(1, (os.cpu_count() or 1) // workers)
            pool = ProcessPoolExecutor(
                workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )
            futs = {pool.submit(_run_one, fn, points[i]): i for i in todo}
            try:
                for fut in as_completed(futs):
                    out, secs = fut.result()
                    finish(futs[fut], out, secs)
            except BaseException:  # a failed point or Ctrl-C: keep what finished, stop now
                for fut, i in futs.items():  # points done but not yet written are kept
                    done = i not in records and fut.done() and not fut.cancelled()
                    if done and fut.exception() is None:
                        finish(i, *fut.result())
                _stop(pool)
                raise
            pool.shutdown(wait=True)
    finally:
        if bar is not None:
            bar.close()
    return [records[i] for i in range(len(points))]
