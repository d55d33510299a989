"""Cost of post-training quantization and of the quantized layer.

    python -m benchmarks.requant.bench_requant [--toy] [--csv benchmarks/requant/results.csv]

* ``quantize <base>``: wall time and peak memory growth of ``quantize_`` (3 bits, groups of
  128) on tenfold's LM at the ``requant`` full-preset size (4 layers, width 128, vocab 2048;
  weights random: the cost depends on the shapes only), with 64 calibration windows of 128
  tokens, and the bits per weight of the result; ``+ReQuant`` rows add outliers (0.25 %) and
  significant weights (0.05 %, 2 steps of PQI at N = 8).
* ``pqi N=<n>``: one PQI of the whole model (every linear weight but the readout), n points.
* ``matmul``: a 2048 x 2048 layer on 256 tokens, fp32 ``nn.Linear`` against ``QuantLinear``
  (3 bits, dequantized on the fly), with and without a 0.5 % sparse part; on a GPU too when
  there is one. Each row carries the layer's output error against fp32 (relative L2).

Peak memory is the growth of the peak resident set of a forked worker that runs only that
step (Linux), so it includes PyTorch's own allocations.
"""

from __future__ import annotations

import copy

import torch

from benchmarks.common import bench, bench_main, device_name, in_child
from tenfold.core.models.lm import LM, LMConfig
from tenfold.requant import QuantLinear, RequantConfig, model_bits_per_weight, pqi, quantize_
from tenfold.requant import grid as G


def _model(toy: bool) -> LM:
    torch.manual_seed(0)
    if toy:
        return LM(LMConfig(vocab_size=256, block_size=32, n_layer=1, n_heads=2, head_dim=32))
    return LM(LMConfig(vocab_size=2048, block_size=128, n_layer=4, n_heads=4, head_dim=32))


def _quantize(model, cfg, calib):
    m = copy.deepcopy(model)
    quantize_(m, cfg, calib)
    return model_bits_per_weight(m)


def _pqi(model, calib, n):
    names = [f"{k}.weight" for k, v in model.named_modules()
             if isinstance(v, torch.nn.Linear) and k != "lm_head"]  # fmt: skip
    q = {k: G.rtn(model.get_parameter(k).detach(), 3, 32) for k in names}
    return pqi(model, q, list(calib.split(16)), points=n).total


def run(toy: bool) -> list[dict]:
    cpu = torch.device("cpu")
    dev = device_name(cpu)
    rows: list[dict] = []
    model = _model(toy).eval()
    T = model.config.block_size
    calib = torch.randint(0, model.config.vocab_size, (8 if toy else 64, T + 1),
                          generator=torch.Generator().manual_seed(1))  # fmt: skip
    group = 32 if toy else 128
    for base in ("rtn", "gptq") if toy else ("rtn", "gptq", "awq", "squeezellm"):
        for requant in (False, True):
            extra = (
                dict(outlier_ratio=0.0025, significant_ratio=0.0005, pqi_points=8)
                if requant
                else {}
            )
            cfg = RequantConfig(base=base, bits=3, group_size=group, calib_size=calib.shape[0],
                                **extra)  # fmt: skip
            bpw, s, mb = in_child(_quantize, model, cfg, calib)
            rows.append({"case": f"quantize {base}" + (" +ReQuant" if requant else ""),
                         "shape": f"LM {model.config.n_layer}x{model.config.dim}",
                         "ms": round(s * 1e3, 1), "peak_mb": round(mb, 1),
                         "bits_per_weight": round(bpw, 3), "rel_err": float("nan"),
                         "device": dev})  # fmt: skip
    for n in (4,) if toy else (8, 32):
        _, s, mb = in_child(_pqi, model, calib, n)
        rows.append({"case": f"pqi N={n}", "shape": f"LM {model.config.n_layer}x{model.config.dim}",
                     "ms": round(s * 1e3, 1), "peak_mb": round(mb, 1),
                     "bits_per_weight": float("nan"), "rel_err": float("nan"), "device": dev})  # fmt: skip

    n = 256 if toy else 2048
    devices = [cpu] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    g = torch.Generator().manual_seed(2)
    w = torch.randn(n, n, generator=g) / n**0.5
    x = torch.randn(256, n, generator=g)
    scale, zero = G.uniform_params(w, 3, 128)
    codes = G.uniform_codes(w, scale, zero, 3, 128)
    mask = torch.rand(n, n, generator=g) < 0.005
    layers = {
        "fp32 Linear": None,
        "QuantLinear 3b g128": QuantLinear.from_parts(codes, 3, 128, scale=scale, zero=zero),
        "QuantLinear 3b g128 +0.5% sparse": QuantLinear.from_parts(
            codes, 3, 128, scale=scale, zero=zero, sparse_mask=mask, weight=w),
    }  # fmt: skip
    for d in devices:
        lin = torch.nn.Linear(n, n, bias=False).to(d)
        with torch.no_grad():
            lin.weight.copy_(w)
        xd = x.to(d)
        ref = lin(xd).detach()
        for name, q in layers.items():
            layer = lin if q is None else q.to(d)
            with torch.no_grad():
                ms = bench(lambda layer=layer, xd=xd: layer(xd), d, warmup=1 if toy else 3,
                           iters=3 if toy else 20)  # fmt: skip
                err = float((layer(xd) - ref).norm() / ref.norm())
            bpw = 32.0 if q is None else q.bits_per_weight
            rows.append({"case": f"matmul {name}", "shape": f"{n}x{n} x 256 tokens",
                         "ms": round(ms, 3), "peak_mb": float("nan"),
                         "bits_per_weight": round(bpw, 3), "rel_err": float(f"{err:.3g}"),
                         "device": device_name(d)})  # fmt: skip
    return rows


def main(argv=None):
    return bench_main("bench_requant", run, argv)


if __name__ == "__main__":
    main()
