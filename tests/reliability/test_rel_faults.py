"""Faults: SIGKILL of a checkpointed run at random points (resumes bit-identical, leaves no
temporary file after the next save), Ctrl-C of a parallel sweep (stops within seconds, keeps
finished points), runs that fail or are interrupted (leave a record), and two runs started
into one folder at once (each gets its own)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tenfold.core import experiment as E
from tenfold.core.io import load_tensors

WORKER = Path(__file__).with_name("_workers.py")
ROOT = Path(__file__).resolve().parents[2]


def _default_sigint() -> None:
    # A test run launched in the background (`make test &`, nohup) has SIGINT ignored, and an
    # ignored signal stays ignored across exec: Python would then install no Ctrl-C handler
    # and the Ctrl-C test would wait on a sweep that never sees its SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_default_sigint,
        start_new_session=True,  # its own process group: a hung run is killed with its pool
    )


def _wait_ready(p: subprocess.Popen) -> None:
    line = p.stdout.readline()
    assert line.strip() == "ready", p.stderr.read()


STEPS = 40


@pytest.mark.slow
def test_sigkill_at_random_points_resumes_bit_identical(tmp_path):
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "killed"
    p = _start("train", str(ref_dir), str(STEPS))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    rng = random.Random(1234)
    kills = 0
    for _ in range(12):
        p = _start("train", str(kill_dir), str(STEPS))
        _wait_ready(p)
        time.sleep(rng.uniform(0.0, 0.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.communicate(timeout=60)
        ck = kill_dir / "last.safetensors"
        if ck.exists():
            load_tensors(ck)  # whatever moment it died at, the checkpoint on disk is sound
    assert kills >= 10
    p = _start("train", str(kill_dir), str(STEPS))
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert f"done {STEPS}" in out
    a, ma = load_tensors(ref_dir / "last.safetensors")
    b, mb = load_tensors(kill_dir / "last.safetensors")
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k  # bit-identical parameters, EMA and Adam state
    assert ma["history"] == mb["history"]
    left = [f.name for f in kill_dir.iterdir() if f.name.endswith(".tmp")]
    assert left == [], f"temporary files left after the last save: {left}"


def _sweep_with_slow_points_running(cache: Path) -> subprocess.Popen:
    """A two-worker sweep (_workers.py) once its 3 quick points are done and its slow ones run."""
    p = _start("sweep", str(cache))
    _wait_ready(p)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(cache.glob("*.json"))) < 3:
        time.sleep(0.1)
    assert len(list(cache.glob("*.json"))) == 3, "the quick points did not finish"
    time.sleep(1.0)  # the slow points are now running
    return p


@pytest.mark.slow
def test_the_workers_of_a_killed_sweep_end_within_seconds(tmp_path):
    """SIGKILL of the sweep process leaves its pool workers orphaned; they must not wait for
    work forever (each watches its parent and exits when it is gone)."""
    cache = tmp_path / "sweep"
    p = _sweep_with_slow_points_running(cache)
    kids = Path(f"/proc/{p.pid}/task/{p.pid}/children")
    if not kids.exists():
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)
        pytest.skip("needs Linux's /proc/<pid>/task/<pid>/children to find the pool workers")
    workers = [int(c) for c in kids.read_text().split()]
    p.kill()
    p.wait(timeout=30)
    t0 = time.time()
    alive = workers
    while alive and time.time() - t0 < 20:
        time.sleep(0.2)
        alive = [w for w in workers if Path(f"/proc/{w}").exists() and
                 "zombie" not in Path(f"/proc/{w}/status").read_text().lower()]  # fmt: skip
    try:
        assert not alive, f"pool workers {alive} outlived their sweep by 20 s"
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate(timeout=30)


@pytest.mark.slow
def test_ctrl_c_of_a_parallel_sweep_stops_fast_and_keeps_finished_points(tmp_path):
    cache = tmp_path / "sweep"
    p = _sweep_with_slow_points_running(cache)
    t0 = time.time()
    p.send_signal(signal.SIGINT)
    try:
        p.communicate(timeout=60)
    except subprocess.TimeoutExpired:  # show where it hangs: every thread's stack
        alive = p.poll() is None
        if alive:
            p.send_signal(signal.SIGUSR1)
            time.sleep(2)
        os.killpg(p.pid, signal.SIGKILL)  # the sweep and its pool workers
        _, err = p.communicate(timeout=30)
        pytest.fail(
            f"Ctrl-C did not end the sweep in 60 s (process alive: {alive}):\n{err[-8000:]}"
        )
    took = time.time() - t0
    assert took < 10, f"Ctrl-C took {took:.1f} s"
    assert p.returncode != 0
    kept = sorted(json.loads(f.read_text())["point"]["i"] for f in cache.glob("*.json"))
    assert kept == [0, 1, 2]
    assert not list(cache.glob(".*.tmp"))


def _make_dirs(args):
    parent, n = args
    return [str(E.make_run_dir(Path(parent))) for _ in range(n)]


def test_two_processes_starting_runs_into_one_folder_get_distinct_folders(tmp_path):
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(_make_dirs, [(tmp_path / "runs", 15)] * 2)
    flat = [d for part in got for d in part]
    assert len(flat) == len(set(flat)) == 30
    assert all(Path(d).is_dir() for d in flat)


def test_threads_starting_runs_into_one_folder_get_distinct_folders(tmp_path):
    out, barrier = [], threading.Barrier(8)

    def go():
        barrier.wait()
        out.append(E.make_run_dir(tmp_path / "runs"))

    ts = [threading.Thread(target=go) for _ in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(out)) == 8


@pytest.mark.parametrize("where", ["file", "file-parent", "dev-null"])
def test_run_folder_under_a_file_is_a_config_error(tmp_path, where):
    f = tmp_path / "f"
    f.write_text("x")
    target = {"file": f, "file-parent": f / "sub", "dev-null": Path("/dev/null/runs")}[where]
    with pytest.raises(E.ConfigError, match="a file is in the way"):
        E.make_run_dir(target)


@pytest.mark.skipif(os.geteuid() != 0 and not Path("/proc/1").exists(), reason="needs /proc")
def test_run_folder_where_nothing_can_be_created_is_a_config_error():
    with pytest.raises(E.ConfigError, match="cannot create run folders"):
        E.make_run_dir(Path("/proc/tenfold-cannot-be-here"))


# ---------------------------------------------------------------- failing runs


from dataclasses import dataclass  # noqa: E402


@dataclass(frozen=True)
class _FailConfig:
    mode: str = "raise"


@pytest.fixture
def failing_experiment():
    @E.experiment("core/_failing", _FailConfig, presets={"quick": {}, "full": {}}, summary="fails")
    def failing(cfg, ctx):
        (ctx.out_dir / "partial.txt").write_text("work in progress")
        if cfg.mode == "interrupt":
            raise KeyboardInterrupt
        if cfg.mode == "bad-result":
            return {"not": "a Result"}
        raise RuntimeError("the final evaluation crashed")

    yield "core/_failing"
    E._REGISTRY.pop("core/_failing", None)


@pytest.mark.parametrize(
    "mode, exc, status, needle",
    [
        ("raise", RuntimeError, "failed", "the final evaluation crashed"),
        ("interrupt", KeyboardInterrupt, "interrupted", "KeyboardInterrupt"),
        ("bad-result", TypeError, "failed", "not Result"),
    ],
)
def test_a_failing_or_interrupted_run_leaves_a_failure_record(
    failing_experiment, tmp_path, mode, exc, status, needle
):
    with pytest.raises(exc):
        E.run_experiment(failing_experiment, "quick", {"mode": mode}, out=tmp_path)
    (run_dir,) = list((tmp_path / "core/_failing").iterdir())
    rec = json.loads((run_dir / "failure.json").read_text())
    assert rec["status"] == status and needle in rec["error"]
    assert rec["config"] == {"mode": mode} and "tenfold run core/_failing" in rec["command"]
    assert (run_dir / "partial.txt").exists()  # what it wrote is kept
    assert not (run_dir / "result.json").exists()


def test_cli_ctrl_c_exits_130_and_leaves_a_record(failing_experiment, tmp_path, capsys):
    from tenfold.cli import main

    assert (
        main(["run", failing_experiment, "--set", "mode=interrupt", "--out", str(tmp_path)]) == 130
    )
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.rglob("failure.json"))


def test_trainer_saves_before_its_final_evaluation(tmp_path):
    from torch import nn

    from tenfold.core.train import TrainConfig, Trainer

    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    data = (torch.randn(16, 3),)
    calls = []

    def crashing_eval(m, step):
        calls.append(step)
        raise RuntimeError("eval crashed")

    cfg = TrainConfig(steps=6, batch_size=4, progress=False)
    t = Trainer(
        model,
        lambda m, b, c: m(b[0]).pow(2).mean(),
        data,
        cfg,
        eval_fn=crashing_eval,
        ckpt_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match="eval crashed"):
        t.fit()
    _, meta = load_tensors(tmp_path / "last.safetensors")
    assert meta["step"] == 6  # the training is safe on disk
    done = []
    t2 = Trainer(
        nn.Linear(3, 1),
        lambda m, b, c: m(b[0]).pow(2).mean(),
        data,
        cfg,
        eval_fn=lambda m, s: done.append(s) or {"x": 1.0},
        ckpt_dir=tmp_path,
    )
    t2.fit(resume=True)
    assert done == [6] and len(t2.history) == 6  # resumed: evaluated only, not retrained
