"""Cost of a DDO fine-tuning step against a pre-training step, and of fake generation.

    python -m benchmarks.ddo.bench_ddo [--toy] [--csv benchmarks/ddo/results.csv]

For each model family one optimizer step (forward, backward, AdamW) is timed:

* ``pretrain``: the maximum-likelihood loss (EDM's denoising loss; next-token cross-entropy);
* ``ddo``: :func:`tenfold.ddo.ddo_loss` on a real batch and as many fakes (diffusion: four
  forward passes, the model's with gradients, the reference's without; AR: two);
* ``ddo+online``: AR only, the step with its fakes sampled by the reference in the step;
* ``fakes``: drawing the fakes of one batch (diffusion: Heun, 18 steps at guidance 1; AR:
  plain sampling, no KV cache), whose per-round cost is this times the number of batches.

Models: the ``ddo/toy`` MLP denoiser (batch 256, 2-D), the digits DiT (``DiT-Digits/2``,
batch 128, 8x8) and an LM of the digits-AR size (4 layers, width 128, 65 tokens over 28 ids,
batch 64); with a GPU also DiT-XL/2 at 32x32x4 latents, batch 32. Peak memory is the growth
of the peak resident set of a forked worker that runs only that case (CPU), or
``torch.cuda.max_memory_allocated`` (GPU).
"""

from __future__ import annotations

import copy

import torch

from benchmarks.common import bench, bench_main, device_name, in_child
from tenfold.core.diffusion import EDMConfig, EDMPrecond, edm_loss
from tenfold.core.models import BACKBONES, LM, LMConfig, MLPDenoiser, MLPDenoiserConfig
from tenfold.ddo import DDOConfig, DiffusionFakes, TokenFakes, ddo_loss, sequence_log_prob


def _family(name: str, toy: bool, device):
    """(model, real batch, labels or None, kind) of one family, seeded."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    if name == "toy-mlp":
        model = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=128, depth=3)))
        return model.to(device), torch.randn(256, 2, generator=g).to(device), None, "diffusion"
    if name.startswith("dit"):
        preset, size, ch, B = ("DiT-Digits/2", 8, 1, 128) if name == "dit-digits" else (
            "DiT-XL/2", 32, 4, 32)  # fmt: skip
        extra = dict(n_heads=2, depth=2) if toy else {}
        net = BACKBONES["dit"].build(preset, input_size=size, in_channels=ch, num_classes=10,
                                     class_dropout_prob=0.1, **extra)  # fmt: skip
        x = torch.randn(B if not toy else 16, ch, size, size, generator=g)
        y = torch.randint(10, (x.shape[0],), generator=g)
        return EDMPrecond(net).to(device), x.to(device), y.to(device), "diffusion"
    layers, width = (1, 32) if toy else (4, 128)
    lm = LM(LMConfig(vocab_size=28, block_size=65, n_layer=layers, n_heads=width // 32,
                     head_dim=32))  # fmt: skip
    tokens = torch.randint(28, (64 if not toy else 8, 65), generator=g)
    return lm.to(device), tokens.to(device), None, "ar"


def _step_fn(model, ref, x, y, kind, mode, fakes_fn):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    edm, ddo = EDMConfig(), DDOConfig()
    g = torch.Generator().manual_seed(1)
    fake = fakes_fn(ref, x, y, g) if mode == "ddo" else None

    def step():
        if kind == "diffusion":
            if mode == "pretrain":
                loss = edm_loss(model, x, y, edm, generator=g).mean()
            else:
                real, fk = ((x, y), (fake, y)) if y is not None else (x, fake)
                loss = ddo_loss(model, ref, real, fk, ddo, generator=g).loss
        elif mode == "pretrain":
            loss = -sequence_log_prob(model, x).mean()
        else:
            fk = fake if mode == "ddo" else fakes_fn(ref, x, None, g)
            loss = ddo_loss(model, ref, x, fk, ddo).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _case(name, toy, mode, device_str):
    """Milliseconds per call of one case (run in a forked worker on the CPU)."""
    device = torch.device(device_str)
    model, x, y, kind = _family(name, toy, device)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    fakes_fn = DiffusionFakes(18) if kind == "diffusion" else TokenFakes(1)
    iters = 2 if toy else 10
    if mode == "fakes":
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():
            return bench(lambda: fakes_fn(ref, x, y, g), device, warmup=1, iters=2 if toy else 5)
    step = _step_fn(model, ref, x, y, kind, mode, fakes_fn)
    return bench(step, device, warmup=1, iters=iters)


def run(toy: bool) -> list[dict]:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for dev in devices:
        names = ["toy-mlp", "dit-digits", "lm-digits"] + (["dit-xl"] if dev == "cuda" else [])
        for name in names:
            kind = "ar" if name.startswith("lm") else "diffusion"
            modes = ["pretrain", "ddo"] + (["ddo+online"] if kind == "ar" else []) + ["fakes"]
            base = None
            for mode in modes:
                if dev == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                    ms = _case(name, toy, mode, dev)
                    mb = torch.cuda.max_memory_allocated() / 2**20
                else:
                    ms, _, mb = in_child(_case, name, toy, mode, dev)
                base = ms if mode == "pretrain" else base
                rows.append({
                    "family": name, "case": mode, "ms": round(ms, 3),
                    "x_pretrain": round(ms / base, 2) if mode != "fakes" else float("nan"),
                    "peak_mb": round(mb, 1), "device": device_name(torch.device(dev)),
                })  # fmt: skip
    return rows


def main(argv=None):
    return bench_main("bench_ddo", run, argv)


if __name__ == "__main__":
    main()
