"""Core transformer throughput and the accuracy/speed of the pluggable attention kernel.

    python -m benchmarks.core.bench_transformer [--toy] [--csv benchmarks/core/results.csv]

Times forward+backward of the DiT and LM presets, and SDPA against the plain-PyTorch
attention reference (accuracy first: SQNR of each against float64 attention). Prints a
table; with --csv appends rows naming the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from benchmarks.common import bench, bench_main, device_name
from tenfold.core.metrics import sqnr
from tenfold.core.models import DIT_MODELS, LM, LM_MODELS, DiT, DiTConfig, LMConfig


def reference_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """Plain PyTorch attention (materialises the score matrix)."""
    s = (q @ k.transpose(-2, -1)) * (scale or 1 / math.sqrt(q.shape[-1]))
    if is_causal:
        T, S = s.shape[-2:]
        s = s.masked_fill(
            ~torch.ones(T, S, dtype=torch.bool, device=s.device).tril(S - T), float("-inf")
        )
    return s.softmax(-1) @ v


def run(toy: bool, device: torch.device, dtype: torch.dtype) -> list[dict]:
    rows = []
    dev = device_name(device)
    # DiT forward+backward
    dit_cases = (
        [("DiT-Digits/2", 8, 64)]
        if toy
        else [("DiT-S/2", 32, 64), ("DiT-B/2", 32, 64), ("DiT-XL/2", 32, 32)]
    )
    for name, size, bs in dit_cases:
        net = DiT(DiTConfig(**DIT_MODELS[name], input_size=size, in_channels=4)).to(device, dtype)
        x = torch.randn(bs, 4, size, size, device=device, dtype=dtype)
        t, y = torch.randn(bs, device=device), torch.randint(0, 10, (bs,), device=device)

        def step(net=net, x=x, t=t, y=y):
            net.zero_grad(set_to_none=True)
            net(x, t, y).float().square().mean().backward()

        ms = bench(step, device, iters=3 if toy else 10)
        rows.append(
            {
                "case": f"{name} fwd+bwd",
                "shape": f"B{bs} {size}x{size}",
                "ms": ms,
                "throughput": bs / ms * 1e3,
                "unit": "img/s",
                "sqnr_db": "",
                "device": dev,
                "dtype": str(dtype),
            }
        )
    # LM forward+backward
    lm_cases = [("lm-tiny", 4, 64)] if toy else [("lm-small", 16, 1024)]
    for name, bs, T in lm_cases:
        lm = LM(LMConfig(**LM_MODELS[name], vocab_size=4096, block_size=T)).to(device, dtype)
        idx = torch.randint(0, 4096, (bs, T), device=device)

        def lm_step(lm=lm, idx=idx):
            lm.zero_grad(set_to_none=True)
            lm(idx, idx)[1].backward()

        ms = bench(lm_step, device, iters=3 if toy else 10)
        rows.append(
            {
                "case": f"{name} fwd+bwd",
                "shape": f"B{bs} T{T}",
                "ms": ms,
                "throughput": bs * T / ms * 1e3,
                "unit": "tok/s",
                "sqnr_db": "",
                "device": dev,
                "dtype": str(dtype),
            }
        )
    # attention kernels: accuracy vs float64, then speed
    B, H, T, D = (1, 2, 128, 64) if toy else (4, 16, 4096, 128)
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=dtype) for _ in range(3))
    exact = reference_attention(q.double(), k.double(), v.double(), is_causal=True)
    flops = 4 * B * H * T * T * D / 2  # causal: half the score matrix
    for kname, fn in (("sdpa", F.scaled_dot_product_attention), ("reference", reference_attention)):
        out = fn(q, k, v, is_causal=True)
        ms = bench(lambda fn=fn: fn(q, k, v, is_causal=True), device, iters=3 if toy else 20)
        rows.append(
            {
                "case": f"attention {kname} causal",
                "shape": f"B{B} H{H} T{T} D{D}",
                "ms": ms,
                "throughput": flops / ms / 1e9,
                "unit": "TFLOPS",
                "sqnr_db": round(sqnr(exact, out), 1),
                "device": dev,
                "dtype": str(dtype),
            }
        )
    return rows


def main(argv=None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return bench_main("bench_transformer", lambda toy: run(toy, device, dtype), argv)


if __name__ == "__main__":
    main()
