"""What muP costs at run time: nothing measurable, and here is the measurement.

    python -m benchmarks.mup.bench_mup [--toy] [--csv benchmarks/mup/results.csv]

For DiT at several widths: the time of ``parametrize_`` itself (it rebuilds the model twice
on the meta device to find the width-dependent dims) and the time of one AdamW training step
(forward + backward + step) under SP and under muP (a readout multiplier and a few more
param groups). Prints a table; with --csv appends rows naming the device.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import bench, bench_main, device_name
from tenfold.core.models import BACKBONES
from tenfold.mup import MuPConfig, parametrize_


def run(toy: bool, device: torch.device) -> list[dict]:
    rows = []
    dev = device_name(device)
    size, bs = (8, 16) if toy else (32, 32)
    preset, in_ch = ("DiT-Digits/2", 1) if toy else ("DiT-B/2", 4)
    hd = BACKBONES["dit"].presets[preset]["head_dim"]
    heads_list = (2, 4) if toy else (4, 8, 16)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # first-use cost out of the timings
    for heads in heads_list:
        times = {}
        for param in ("sp", "mup"):
            torch.manual_seed(0)
            net = BACKBONES["dit"].build(preset, n_heads=heads, input_size=size, in_channels=in_ch)
            t0 = time.perf_counter()
            if param == "mup":
                opt = parametrize_(net, MuPConfig(base_width=hd * heads_list[0]), lr=1e-4)
            else:
                opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            setup_ms = (time.perf_counter() - t0) * 1e3
            net = net.to(device)
            x = torch.randn(bs, in_ch, size, size, device=device)
            t, y = torch.randn(bs, device=device), torch.randint(0, 10, (bs,), device=device)

            def step(net=net, opt=opt, x=x, t=t, y=y):
                opt.zero_grad(set_to_none=True)
                net(x, t, y).square().mean().backward()
                opt.step()

            times[param] = bench(step, device, iters=3 if toy else 20)
            rows.append(
                {
                    "case": f"DiT {param} train step",
                    "width": hd * heads,
                    "ms": times[param],
                    "setup_ms": round(setup_ms, 1),
                    "mup_over_sp": round(times[param] / times["sp"], 3),
                    "device": dev,
                }
            )
    return rows


def main(argv=None) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return bench_main("bench_mup", lambda toy: run(toy, device), argv)


if __name__ == "__main__":
    main()
