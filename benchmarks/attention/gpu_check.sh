#!/usr/bin/env bash
# One GPU session's check of tenfold.attention, run from the repository root on the device
# machine (torch + Triton there; nothing installed): the kernels on the card against the
# reference (forward, SageBwd gradients, opcheck), then every timing with SDPA's flash and
# cuDNN backends in the same run.
#   PYTHONPATH=src bash benchmarks/attention/gpu_check.sh
set -euo pipefail
export PYTHONPATH=src:.
OUT=${OUT:-/tmp}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/gpu.txt"
python -m pytest -q -x -p no:cacheprovider tests/attention/test_attention_kernels.py \
  tests/attention/test_attention_api.py 2>&1 | tail -5 | tee "$OUT/tests.txt"
python -m benchmarks.attention.bench_attention --csv "$OUT/results.csv" 2>&1 | tee "$OUT/bench.txt"
