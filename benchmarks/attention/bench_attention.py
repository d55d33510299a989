"""Speed and accuracy of tenfold's low-bit attention against PyTorch SDPA.

    python -m benchmarks.attention.bench_attention [--toy] [--csv benchmarks/attention/results.csv]

On a GPU (the targets are for an H100/H200), in one run on one card, bf16 inputs, 16 heads:

* forward: PyTorch SDPA with its flash and its cuDNN backends, and tenfold's
  ``qk_int8_pv_fp8``, ``qk_int8_pv_fp16`` and ``int8_train`` kernels (quantization included);
* forward+backward: SDPA flash, SDPA cuDNN and ``int8_train`` (SageBwd);

for head dims 64 and 128, causal and not, 1k..32k tokens (batch x tokens = 32k). TOPS count
``4 B H S^2 D`` per forward (half of it causal) and 3.5x that with the backward, as the
baselines in ``shared/BASELINES.md`` do; ``vs_base`` is the speed relative to SDPA cuDNN (on
the CPU: SDPA math). Beside each speed: the cos-sim of the output
against float64 attention, on the last 512 queries of the first sequence and two heads
(the rows that see every key). Without a GPU (``--toy`` or the CPU) it times the PyTorch
reference and SDPA's math path at toy sizes: numerics, not speed.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from benchmarks.common import bench, bench_main, device_name
from tenfold.attention import _ref, sageattn

HEADS = 16
TOKENS = 32768  # batch x sequence per point


def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "math":
        return sdpa_kernel(SDPBackend.MATH)
    return sdpa_kernel(
        SDPBackend.FLASH_ATTENTION if name == "flash" else SDPBackend.CUDNN_ATTENTION
    )


def _cos(out: torch.Tensor, q, k, v, causal: bool) -> float:
    n = min(512, q.shape[2])
    qs = q[:1, :2, -n:]
    ex = _ref.attention_exact(qs, k[:1, :2], v[:1, :2], causal="bottom_right" if causal else None)
    o = out[:1, :2, -n:].double()
    return float(F.cosine_similarity(o.flatten(), ex.flatten(), dim=0))


def _row(case, D, causal, S, B, ms, flops, base, cos, dev):
    return {
        "case": case,
        "head_dim": D,
        "causal": causal,
        "seq": S,
        "batch": B,
        "ms": round(ms, 4),
        "TOPS": float(f"{flops / ms / 1e9:.4g}"),
        "vs_base": round(base / ms, 3) if base else float("nan"),  # cuDNN on a GPU, math on CPU
        "cos": round(cos, 6),
        "device": dev,
    }


def _points(toy: bool, device: torch.device):
    if toy or device.type != "cuda":
        return [(64, False, 256, 2), (64, True, 256, 2)]
    pts = []
    for D in (128, 64):
        for causal in (False, True):
            for S in (1024, 2048, 4096, 8192, 16384, 32768):
                pts.append((D, causal, S, max(1, TOKENS // S)))
    return pts


def _point_rows(D, causal, S, B, device, dev) -> list[dict]:
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    H = HEADS if gpu else 2
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, v, do = (torch.randn(B, H, S, D, generator=g).to(device, dtype) for _ in range(4))
    flops = 4 * B * H * S * S * D * (0.5 if causal else 1.0)
    tag = " causal" if causal else ""
    rows: list[dict] = []
    base = {"fwd": None, "fwd+bwd": None}

    def fwd_bwd(fn):
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

        def step():
            qg.grad = kg.grad = vg.grad = None
            fn(qg, kg, vg).backward(do)

        return bench(step, device)

    def sdpa(a, b, c):
        return F.scaled_dot_product_attention(a, b, c, is_causal=causal)

    for be in ("flash", "cudnn") if gpu else ("math",):
        try:
            with _sdpa_backend(be):
                out = sdpa(q, k, v)
                ms = bench(lambda: sdpa(q, k, v), device)
                ms_fb = fwd_bwd(sdpa)
        except RuntimeError as e:  # a backend that cannot serve this shape on this card
            print(f"# sdpa {be} D={D} S={S}: {str(e).splitlines()[0]}")
            continue
        if be in ("cudnn", "math"):
            base = {"fwd": ms, "fwd+bwd": ms_fb}
        c = _cos(out, q, k, v, causal)
        rows.append(_row(f"attention sdpa {be} fwd{tag}", D, causal, S, B, ms, flops,
                         base["fwd"], c, dev))  # fmt: skip
        rows.append(_row(f"attention sdpa {be} fwd+bwd{tag}", D, causal, S, B, ms_fb,
                         3.5 * flops, base["fwd+bwd"], c, dev))  # fmt: skip
    backend = "triton" if gpu else "reference"
    for variant in ("qk_int8_pv_fp8", "qk_int8_pv_fp16", "int8_train"):

        def sage(a, b, c, variant=variant):
            return sageattn(a, b, c, is_causal=causal, variant=variant, backend=backend)

        with torch.no_grad():
            out = sage(q, k, v)
            ms = bench(lambda sage=sage: sage(q, k, v), device)
        c = _cos(out, q, k, v, causal)
        rows.append(_row(f"attention {variant} fwd{tag}", D, causal, S, B, ms, flops,
                         base["fwd"], c, dev))  # fmt: skip
        if variant == "int8_train":
            rows.append(_row(f"attention int8_train fwd+bwd{tag}", D, causal, S, B,
                             fwd_bwd(sage), 3.5 * flops, base["fwd+bwd"], c, dev))  # fmt: skip
    return rows


def run(toy: bool) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and not toy else "cpu")
    dev = device_name(device)
    rows: list[dict] = []
    for D, causal, S, B in _points(toy, device):
        rows += _point_rows(D, causal, S, B, device, dev)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv=None):
    with contextlib.suppress(BrokenPipeError):
        return bench_main("bench_attention", run, argv)


if __name__ == "__main__":
    main()
