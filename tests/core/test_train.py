import json
import os
import socket
import stat

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from tenfold.core.io import CheckpointError, load_tensors, save_tensors
from tenfold.core.train import StepContext, TrainConfig, Trainer, batch_indices, load_weights


def make_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, generator=g)
    y = x @ torch.randn(6, 2, generator=g) + 0.1 * torch.randn(96, 2, generator=g)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
    return model, (x, y)


def loss_fn(model, batch, ctx: StepContext):
    x, y = batch
    x = x + 0.05 * ctx.randn(*x.shape)  # per-sample noise drawn for the global batch
    return (model(x) - y).pow(2).mean()


CFG = dict(
    steps=24,
    batch_size=16,
    lr=1e-2,
    warmup_steps=4,
    schedule="cosine",
    ema_decay=0.9,
    progress=False,
)


def params(m):
    return [p.detach().clone() for p in m.state_dict().values()]


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        model, data = make_problem()
        t = Trainer(model, loss_fn, data, TrainConfig(**CFG))
        t.fit()
        runs.append((params(model), params(t.ema), [h["loss"] for h in t.history]))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))
    assert runs[0][2] == runs[1][2]
    assert runs[0][2][-1] < runs[0][2][0]  # it trains


def test_resume_is_bit_identical(tmp_path):
    model, data = make_problem()
    full = Trainer(model, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path / "a")
    full.fit()

    model2, data2 = make_problem()
    part = Trainer(
        model2, loss_fn, data2, TrainConfig(**CFG, ckpt_every=10), ckpt_dir=tmp_path / "b"
    )
    part.fit(stop_after=13)  # "crash" after step 13; the last checkpoint is at step 10
    assert part.step == 13
    model3, _ = make_problem(seed=5)  # a fresh process: different init, must be overwritten
    resumed = Trainer(
        model3, loss_fn, data, TrainConfig(**CFG, ckpt_every=10), ckpt_dir=tmp_path / "b"
    )
    resumed.fit(resume=True)
    assert resumed.step == full.step == 24
    for a, b in zip(params(full.model), params(resumed.model)):
        assert torch.equal(a, b)
    for a, b in zip(params(full.ema), params(resumed.ema)):
        assert torch.equal(a, b)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


def test_checkpoint_round_trip_keeps_optimizer_state(tmp_path):
    model, data = make_problem()
    t = Trainer(model, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path)
    t.fit(stop_after=5)
    path = t.save_checkpoint()
    model2, _ = make_problem(seed=1)
    t2 = Trainer(model2, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path)
    t2.load_checkpoint(path)
    s1, s2 = t.optimizer.state_dict(), t2.optimizer.state_dict()
    for pid in s1["state"]:
        for k, v in s1["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][k]))
    assert s1["param_groups"][0]["lr"] == s2["param_groups"][0]["lr"]
    assert t2.step == 5


def _corrupt_variants(path):
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    yield "truncated", data[: len(data) // 2]
    yield "truncated header", data[:5]
    yield "empty", b""
    flipped = bytearray(data)
    flipped[8 + header_len + 3] ^= 0xFF  # one bit-pattern change inside the tensor data
    yield "bit flip in data", bytes(flipped)
    yield "garbage", os.urandom(200)


def test_corrupted_checkpoints_raise_naming_the_file(tmp_path):
    good = tmp_path / "good.safetensors"
    save_tensors(good, {"w": torch.randn(64, 64)}, {"step": 3})
    tensors, meta = load_tensors(good)
    assert meta == {"step": 3} and tensors["w"].shape == (64, 64)
    for what, blob in _corrupt_variants(good):
        bad = tmp_path / f"bad-{what.replace(' ', '-')}.safetensors"
        bad.write_bytes(blob)
        with pytest.raises(CheckpointError, match=bad.name):
            load_tensors(bad)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_tensors(tmp_path / "missing.safetensors")


def test_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, p)
    with pytest.raises(CheckpointError, match="not a tenfold checkpoint"):
        load_tensors(p)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    model, data = make_problem()
    t = Trainer(model, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path)
    path = t.save_checkpoint()
    other = Trainer(nn.Linear(6, 2), loss_fn, data, TrainConfig(**CFG))
    with pytest.raises(CheckpointError, match="does not match"):
        other.load_checkpoint(path)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "ck.safetensors"
    save_tensors(path, {"w": torch.ones(3)}, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_tensors(path, {"w": torch.zeros(3)}, {"v": 2})
    monkeypatch.undo()
    tensors, meta = load_tensors(path)
    assert meta == {"v": 1} and torch.equal(tensors["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]  # no temp file left
    mask = os.umask(0)
    os.umask(mask)
    assert (
        stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    )  # a normal file mode, not mkstemp's 0600


def test_checkpoints_hold_only_raw_tensors_and_json(tmp_path):
    # Nothing to unpickle: the file is a safetensors header (tensor dtype/shape/offsets and
    # string metadata) followed by exactly the tensors' raw bytes.
    model, data = make_problem()
    t = Trainer(model, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path)
    t.fit(stop_after=3)
    raw = t.save_checkpoint().read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "tenfold.checkpoint.v2"
    assert all(isinstance(v, str) for v in meta.values())
    json.loads(meta["meta"])  # the trainer state is plain JSON
    assert all(set(h) == {"dtype", "shape", "data_offsets"} for h in header.values())
    assert max(h["data_offsets"][1] for h in header.values()) == len(raw) - 8 - n


def test_batch_indices_cover_each_epoch_once():
    n, bs = 10, 4
    seen = torch.cat([batch_indices(n, bs, s, seed=1) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(n, bs, 3, 1), batch_indices(n, bs, 3, 1))


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(steps=0), "steps"),
        (dict(lr=-1.0), "lr"),
        (dict(schedule="linear"), "schedule"),
        (dict(ema_decay=1.0), "ema_decay"),
    ],
)
def test_train_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)


def test_lr_schedule():
    c = TrainConfig(steps=10, warmup_steps=2, schedule="cosine")
    assert [round(c.lr_factor(s), 3) for s in (0, 1, 2)] == [0.5, 1.0, 1.0]
    assert c.lr_factor(9) < 0.1


def test_non_finite_loss_is_reported():
    model, data = make_problem()
    t = Trainer(
        model,
        lambda m, b, c: torch.tensor(float("nan"), requires_grad=True),
        data,
        TrainConfig(**CFG),
    )
    with pytest.raises(FloatingPointError, match="step 0"):
        t.fit()


# ------------------------------------------------------------------ DDP


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    import torch.distributed as dist

    model, data = make_problem()
    t = Trainer(model, loss_fn, data, TrainConfig(**CFG), device="cpu")
    assert t.world == world
    t.fit()
    if rank == 0:
        torch.save(
            {"loss": [h["loss"] for h in t.history], "params": params(t.model)}, f"{out_dir}/ddp.pt"
        )
    # both ranks leave together: a rank that tears gloo down while its peer is still writing
    # can die with SIGABRT ("terminate called without an active exception")
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    torch.set_num_threads(1)
    model, data = make_problem()
    single = Trainer(model, loss_fn, data, TrainConfig(**CFG))
    single.fit()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    # same global batch and noise; only the all-reduce summation order differs
    torch.testing.assert_close(
        torch.tensor(ddp["loss"]),
        torch.tensor([h["loss"] for h in single.history]),
        rtol=1e-4,
        atol=1e-6,
    )
    for a, b in zip(ddp["params"], params(single.model)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_load_weights_takes_the_ema_copy(tmp_path):
    model, data = make_problem()
    t = Trainer(model, loss_fn, data, TrainConfig(**CFG), ckpt_dir=tmp_path)
    t.fit()
    fresh, _ = make_problem(seed=9)
    load_weights(fresh, tmp_path / "last.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(params(fresh), params(t.ema)))
    load_weights(fresh, tmp_path / "last.safetensors", ema=False)
    assert all(torch.equal(a, b) for a, b in zip(params(fresh), params(t.model)))
    with pytest.raises(CheckpointError, match="does not match"):
        load_weights(nn.Linear(3, 3), tmp_path / "last.safetensors")


def test_checkpoint_of_a_model_with_tied_weights(tmp_path):
    from tenfold.core.models import LM, LMConfig

    lm = LM(LMConfig(vocab_size=20, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    idx = torch.randint(0, 20, (64, 8))
    t = Trainer(lm, lambda m, b, c: m(b[0], b[0])[1], (idx,), TrainConfig(**CFG), ckpt_dir=tmp_path)
    t.fit(stop_after=2)
    t.save_checkpoint()
    lm2 = LM(LMConfig(vocab_size=20, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    load_weights(lm2, tmp_path / "last.safetensors", ema=False)
    assert lm2.lm_head.weight is lm2.tok_emb.weight  # still tied after loading
    assert torch.equal(lm2.tok_emb.weight, lm.tok_emb.weight)


def test_ctx_log_puts_named_scalars_in_the_history(tmp_path):
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    model = nn.Linear(3, 1)

    def loss_fn(m, batch, ctx):
        err = (m(batch[0]) - batch[1]).pow(2)
        ctx.log(first=err[0, 0], step_twice=2 * ctx.step)
        return err.mean()

    tr = Trainer(model, loss_fn, (x, y), TrainConfig(steps=3, batch_size=8, progress=False))
    hist = tr.fit()
    assert [h["step_twice"] for h in hist] == [0.0, 2.0, 4.0]
    assert all(isinstance(h["first"], float) for h in hist)

    def bad(m, batch, ctx):
        ctx.log(loss=1.0)
        return m(batch[0]).mean()

    with pytest.raises(ValueError, match="'loss' is a name the trainer records itself"):
        Trainer(
            nn.Linear(3, 1), bad, (x, y), TrainConfig(steps=1, batch_size=8, progress=False)
        ).fit()
