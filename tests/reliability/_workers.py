"""Processes the fault tests start, kill and interrupt (not a test module).

python _workers.py train <ckpt_dir> <steps>   # checkpointed training, resumes if it can
python _workers.py sweep <cache_dir>          # a parallel sweep: 3 quick points, 3 slow
"""

from __future__ import annotations

import sys
import time


def train(ckpt_dir: str, steps: int) -> None:
    import torch
    from torch import nn

    from tenfold.core.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 128, generator=g), torch.randn(256, 8, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(128, 512), nn.Tanh(), nn.Linear(512, 512), nn.Tanh(), nn.Linear(512, 8)
    )
    cfg = TrainConfig(
        steps=steps, batch_size=32, lr=1e-3, ckpt_every=1, progress=False, ema_decay=0.99
    )

    def loss(m, b, ctx):
        return (m(b[0] + 0.01 * ctx.randn(*b[0].shape)) - b[1]).pow(2).mean()

    t = Trainer(model, loss, (x, y), cfg, ckpt_dir=ckpt_dir)
    print("ready", flush=True)
    t.fit(resume=True)
    print("done", t.step, flush=True)


def point(p: dict) -> dict:
    time.sleep(p["sleep"])
    return {"slept": p["sleep"]}


def sweep(cache_dir: str) -> None:
    import faulthandler
    import signal

    from tenfold.core.sweep import run_sweep

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's view of a hang

    pts = [{"i": i, "sleep": 0.2} for i in range(3)] + [
        {"i": i, "sleep": 120.0} for i in range(3, 6)
    ]
    print("ready", flush=True)
    run_sweep(point, pts, cache_dir, workers=2, progress=False)


if __name__ == "__main__":
    if sys.argv[1] == "train":
        train(sys.argv[2], int(sys.argv[3]))
    else:
        sweep(sys.argv[2])
