"""Smoke test: every benchmark runs at toy size, so that none rots."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_at_toy_size():
    from benchmarks.__main__ import discover

    mods = discover()
    assert "benchmarks.core.bench_transformer" in mods
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--toy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    for m in mods:
        assert f"== {m}" in p.stdout
    assert "attention sdpa causal" in p.stdout
    assert "linear fwd+bwd int8+fallback" in p.stdout
    assert (
        "attention int8_train fwd+bwd" in p.stdout
        and "per-vector rKA" in p.stdout
        and "attention sdpa math fwd" in p.stdout
    )
    assert "quantize gptq +ReQuant" in p.stdout and "matmul QuantLinear 3b g128" in p.stdout
    assert "dit-digits  ddo " in p.stdout and "ddo+online" in p.stdout
