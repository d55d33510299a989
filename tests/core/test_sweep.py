"""core/sweep.py: parallel points, one JSON per point, resume without rerunning."""

import json
import os

import pytest

from tenfold.core.sweep import point_key, run_sweep


def square(p):  # module level: spawned workers import it by name
    return {"y": p["x"] ** 2, "pid": os.getpid()}


def explode(p):
    raise AssertionError(f"point {p} should have been reused, not rerun")


def fail_on_three(p):
    if p["x"] == 3:
        raise RuntimeError("boom")
    return {"y": p["x"] ** 2}


POINTS = [{"x": i, "tag": "a"} for i in range(5)]


def test_points_run_in_parallel_workers_and_each_writes_a_file(tmp_path):
    recs = run_sweep(square, POINTS, tmp_path, workers=2, progress=False)
    assert [r["result"]["y"] for r in recs] == [0, 1, 4, 9, 16]
    assert [r["point"] for r in recs] == POINTS
    assert not any(r["reused"] for r in recs)
    assert {r["result"]["pid"] for r in recs} != {os.getpid()}  # not run in this process
    files = sorted(tmp_path.glob("*.json"))
    assert len(files) == 5
    for p in POINTS:
        rec = json.loads((tmp_path / f"{point_key(p)}.json").read_text())
        assert rec["point"] == p and rec["result"]["y"] == p["x"] ** 2


def test_finished_points_are_not_rerun(tmp_path):
    run_sweep(square, POINTS, tmp_path, workers=1, progress=False)
    recs = run_sweep(explode, POINTS, tmp_path, workers=1, progress=False)
    assert all(r["reused"] for r in recs)
    assert [r["result"]["y"] for r in recs] == [0, 1, 4, 9, 16]


def test_an_interrupted_sweep_resumes(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        run_sweep(fail_on_three, POINTS, tmp_path, workers=1, progress=False)
    done = {json.loads(f.read_text())["point"]["x"] for f in tmp_path.glob("*.json")}
    assert done == {0, 1, 2}  # in-order single worker: stopped at the failing point
    # a half-written file (killed mid-write without the atomic rename) is run again
    (tmp_path / f"{point_key(POINTS[4])}.json").write_text('{"point": ')
    recs = run_sweep(square, POINTS, tmp_path, workers=2, progress=False)
    assert [r["reused"] for r in recs] == [True, True, True, False, False]
    assert [r["result"]["y"] for r in recs] == [0, 1, 4, 9, 16]


def test_point_keys_are_distinct_and_safe():
    a, b = point_key({"x": 1, "lr": -7.0}), point_key({"x": 1, "lr": -7.5})
    assert a != b and "/" not in a and " " not in a
    with pytest.raises(ValueError, match="not distinct"):
        run_sweep(square, [{"x": 1}, {"x": 1}], "/tmp/unused-sweep", progress=False)
