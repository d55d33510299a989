"""Speed, accuracy and saved-activation memory of fallback quantization.

    python -m benchmarks.fallback.bench_fallback [--toy] [--csv benchmarks/fallback/results.csv]

On a GPU (the targets are for an H100/H200), in one run on one card:

* the plain INT8 GEMM (our kernel, no fallback, quantization excluded) against
  ``torch._int_mm`` and the BF16 cuBLAS GEMM at 8192^3;
* the linear layer forward+backward at Llama-7B shapes (hidden 4096 -> MLP 11008, and
  11008 -> 4096) at 8k and 16k tokens, with 0%, 5% and 20% of the activation and gradient
  blocks falling back (rule ``topk``, which sets the rate exactly), against ``F.linear`` in
  BF16, quantization included;
* one Llama-7B transformer block (attention + SwiGLU MLP, 8k tokens) forward+backward with
  every linear layer swapped, against the same block in BF16.

Each row carries the SQNR (dB) of the output against an fp32 reference beside its speed,
and the bytes of X kept for the backward relative to BF16. Without a GPU (``--toy`` or
the CPU) it times the PyTorch reference at toy sizes: numerics, not speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.common import bench, bench_main, device_name
from tenfold.core.metrics import sqnr
from tenfold.core.models import LMBlock, LMConfig, RotaryEmbedding
from tenfold.fallback import (
    FallbackConfig,
    LayerStats,
    apply_,
    fallback_linear,
    fallback_stats,
    reset_fallback_stats,
)

RATES = (0.0, 0.05, 0.20)


def _cfg(rate: float, backend: str) -> FallbackConfig:
    if rate == 0.0:  # plain block INT8: nothing marked, no 16-bit copies
        return FallbackConfig(
            forward="int8", grad_input="int8", grad_weight="int8", backend=backend
        )
    return FallbackConfig(rule="topk", threshold=rate, backend=backend)


def _row(case, shape, rate, ms, flops, base_ms, db, mem, dev):
    return {
        "case": case,
        "shape": shape,
        "fallback": f"{100 * rate:.0f}%" if rate is not None else "-",
        "ms": round(ms, 4),
        "TFLOPS": float(f"{flops / ms / 1e9:.3g}"),
        "speedup_vs_base": round(base_ms / ms, 3),
        "sqnr_db": round(db, 1) if db is not None else float("nan"),
        "saved_x_vs_bf16": round(mem, 3) if mem is not None else float("nan"),
        "device": dev,
    }


def _linear_rows(M, K, N, device, dev, backend, dtype, iters) -> list[dict]:
    rows = []
    g = torch.Generator(device="cpu").manual_seed(0)
    x0 = torch.randn(M, K, generator=g).to(device, dtype)
    w0 = (torch.randn(N, K, generator=g) / K**0.5).to(device, dtype)
    dy = torch.randn(M, N, generator=g).to(device, dtype)
    flops = 3 * 2 * M * K * N  # forward + two backward GEMMs
    x = x0.clone().requires_grad_()
    w = w0.clone().requires_grad_()

    def base():
        x.grad = w.grad = None
        F.linear(x, w).backward(dy)

    base_ms = bench(base, device, iters=iters)
    shape = f"{M}x{K}->{N}"
    rows.append(
        _row(
            "linear fwd+bwd bf16" if dtype == torch.bfloat16 else "linear fwd+bwd fp32",
            shape,
            None,
            base_ms,
            flops,
            base_ms,
            None,
            1.0,
            dev,
        )
    )
    ref = F.linear(x0.float(), w0.float())
    for rate in RATES:
        cfg = _cfg(rate, backend)
        st = LayerStats()

        def step(cfg=cfg):
            x.grad = w.grad = None
            fallback_linear(x, w, None, cfg).backward(dy)

        ms = bench(step, device, iters=iters)
        with torch.no_grad():
            y = fallback_linear(x0, w0, None, cfg, st)
        rows.append(
            _row("linear fwd+bwd int8+fallback", shape, rate, ms, flops, base_ms,
                 sqnr(ref, y.float()), st.saved_bytes / st.bf16_bytes, dev)
        )  # fmt: skip
    return rows


def _block_rows(tokens, seq, dim, heads, hidden, device, dev, backend, dtype, iters) -> list[dict]:
    rows = []
    cfg = LMConfig(n_heads=heads, head_dim=dim // heads, mlp_hidden=hidden, block_size=seq)
    torch.manual_seed(0)
    block = LMBlock(cfg).to(device, dtype)
    rope = tuple(t.to(device) for t in RotaryEmbedding(dim // heads)(torch.arange(seq)))
    x0 = torch.randn(tokens // seq, seq, dim, device=device, dtype=dtype)
    dy = torch.randn_like(x0)
    x = x0.clone().requires_grad_()
    # GEMM flops of the block: q, kv, proj (4 dim^2) + MLP (3 dim hidden), x3 for fwd+bwd,
    # plus attention (4 T^2 D per sequence forward, x3.5 with backward)
    gemm = 2 * tokens * (4 * dim * dim + 3 * dim * hidden) * 3
    flops = gemm + 3.5 * 4 * (tokens // seq) * seq * seq * dim

    def run():
        x.grad = None
        block.zero_grad(set_to_none=True)
        block(x, rope).backward(dy)

    base_ms = bench(run, device, iters=iters)
    shape = f"{tokens} tok, dim {dim}, mlp {hidden}"
    rows.append(
        _row(
            f"block fwd+bwd {str(dtype)[6:]}", shape, None, base_ms, flops, base_ms, None, 1.0, dev
        )
    )
    with torch.no_grad():
        ref = block.float()(x0.float(), rope)
        block.to(dtype)
    for rate in RATES:
        apply_(block, _cfg(rate, backend))
        ms = bench(run, device, iters=iters)
        reset_fallback_stats(block)
        with torch.no_grad():
            block.train()
            y = block(x0, rope)
        st = list(fallback_stats(block).values())
        mem = sum(s.saved_bytes for s in st) / max(sum(s.bf16_bytes for s in st), 1)
        rows.append(
            _row("block fwd+bwd int8+fallback", shape, rate, ms, flops, base_ms,
                 sqnr(ref, y.float()), mem, dev)
        )  # fmt: skip
    return rows


def _int8_gemm_rows(n, device, dev, iters) -> list[dict]:
    from tenfold.fallback import kernels

    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    b = torch.randn(n, n, generator=g).to(device, torch.bfloat16)
    flops = 2 * n**3
    base_ms = bench(lambda: a @ b, device, iters=iters)
    ref = a.float() @ b.float()
    rows = [
        _row(
            "gemm bf16 cuBLAS",
            f"{n}^3",
            None,
            base_ms,
            flops,
            base_ms,
            sqnr(ref, (a @ b).float()),
            None,
            dev,
        )
    ]
    qa, qb = kernels.quantize(a, (32, 32)), kernels.quantize(b.t().contiguous(), (32, 32)).t()
    ms = bench(lambda: kernels.mixed_gemm(qa, qb), device, iters=iters)
    rows.append(
        _row(
            "gemm int8 block (tenfold kernel)",
            f"{n}^3",
            0.0,
            ms,
            flops,
            base_ms,
            sqnr(ref, kernels.mixed_gemm(qa, qb)),
            None,
            dev,
        )
    )
    ia = torch.randint(-127, 128, (n, n), device=device, dtype=torch.int8)
    ib = torch.randint(-127, 128, (n, n), device=device, dtype=torch.int8)
    ms = bench(lambda: torch._int_mm(ia, ib), device, iters=iters)
    rows.append(
        _row(
            "gemm int8 torch._int_mm (no scales)",
            f"{n}^3",
            None,
            ms,
            flops,
            base_ms,
            None,
            None,
            dev,
        )
    )
    return rows  # fmt: skip


def run(toy: bool, device: torch.device) -> list[dict]:
    dev = device_name(device)
    gpu = device.type == "cuda" and not toy
    if gpu:
        rows = _int8_gemm_rows(8192, device, dev, 20)
        for M in (8192, 16384):
            rows += _linear_rows(M, 4096, 11008, device, dev, "auto", torch.bfloat16, 20)
            rows += _linear_rows(M, 11008, 4096, device, dev, "auto", torch.bfloat16, 20)
        rows += _block_rows(8192, 2048, 4096, 32, 11008, device, dev, "auto", torch.bfloat16, 10)
        return rows
    # CPU / toy: the PyTorch reference (emulation) against fp32 F.linear
    dev = f"{dev}, PyTorch reference"
    rows = _linear_rows(256, 128, 352, torch.device("cpu"), dev, "reference", torch.float32, 3)
    rows += _block_rows(
        256, 64, 128, 4, 352, torch.device("cpu"), dev, "reference", torch.float32, 2
    )
    return rows


def main(argv=None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return bench_main("bench_fallback", lambda toy: run(toy, device), argv)


if __name__ == "__main__":
    main()
