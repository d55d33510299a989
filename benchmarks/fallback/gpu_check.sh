#!/usr/bin/env bash
# One GPU session's check of tenfold.fallback, run from the repository root on the device
# machine (torch + Triton there; nothing installed): correctness of the kernels on the card
# against the reference, then every timing with the BF16 baselines in the same run.
#   PYTHONPATH=src bash benchmarks/fallback/gpu_check.sh
set -euo pipefail
export PYTHONPATH=src:.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python -m pytest -q -x -p no:cacheprovider tests/fallback/test_fallback_gemm.py \
  tests/fallback/test_fallback_linear.py 2>&1 | tail -5 | tee "$OUT/tests.txt"
python -m benchmarks.fallback.bench_fallback --csv "$OUT/results.csv" 2>&1 | tee "$OUT/bench.txt"
