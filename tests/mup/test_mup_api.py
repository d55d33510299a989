"""tenfold.mup: roles, init, learning rates, readout, errors, and the ways users hold a model
(torch.compile, state_dict save/load, applying twice)."""

import math

import pytest
import torch

from tenfold.core.io import load_tensors, save_tensors
from tenfold.core.models import BACKBONES
from tenfold.mup import MuPConfig, MuReadout, Role, param_table, parametrize_, readout_modules

PRESET = {"dit": "DiT-Digits/2", "uvit": "U-ViT-Digits/2", "pixart": "PixArt-Digits/2",
          "mmdit": "MMDiT-Digits/2"}  # fmt: skip


def build(family, n_heads, seed=0):
    torch.manual_seed(seed)
    return BACKBONES[family].build(PRESET[family], n_heads=n_heads)


def inputs(family, batch=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, 8, 8, generator=g)
    t = torch.randn(batch, generator=g)
    if BACKBONES[family].conditioning == "class":
        y = torch.randint(0, 10, (batch,), generator=g)
    else:
        y = torch.randint(3, 30, (batch, 5), generator=g)
    return x, t, y


@pytest.mark.parametrize("family", list(BACKBONES))
def test_roles_follow_the_paper(family):
    """Exactly one readout; patch embedding and first t-MLP layer are inputs; attention, MLP,
    adaLN and the second t-MLP layer are hidden (the paper's assignment)."""
    m = build(family, 8)
    rows = {r.name: r for r in param_table(m, MuPConfig(base_width=64))}
    outputs = [n for n, r in rows.items() if r.role is Role.OUTPUT and n.endswith("weight")]
    assert len(outputs) == 1, outputs
    assert rows["x_embedder.weight"].role is Role.INPUT
    if family == "uvit":  # U-ViT's time token is the raw sinusoid: no time MLP to scale
        assert not any(n.startswith("t_embedder") for n in rows)
    else:
        assert rows["t_embedder.mlp.0.weight"].role is Role.INPUT
        assert rows["t_embedder.mlp.2.weight"].role is Role.HIDDEN
    hidden = [n for n, r in rows.items() if r.role is Role.HIDDEN]
    assert any(".attn." in n for n in hidden) and any("mlp" in n and "fc2" in n for n in hidden)
    for r in rows.values():
        if r.role is Role.HIDDEN:
            assert r.lr_mult == pytest.approx(64 / 256) and r.width_mult == pytest.approx(4)
        else:
            assert r.lr_mult == 1.0
    if family == "dit":
        assert rows["y_embedder.table.weight"].role is Role.INPUT  # class embedding
        assert rows["blocks.0.adaLN_modulation.1.weight"].role is Role.HIDDEN
    if family in ("pixart", "mmdit"):  # the text encoder has a fixed width
        assert all(r.role is Role.FIXED for n, r in rows.items() if n.startswith("text_encoder"))


@pytest.mark.parametrize("family", list(BACKBONES))
def test_init_scales_like_muP(family):
    """Hidden weights ~ 1/sqrt(fan_in) (so they shrink with width), input weights and vectors
    keep their scale, the readout starts at zero, adaLN is not zero."""
    stds = {}
    for heads in (2, 8):
        m = build(family, heads)
        parametrize_(m, MuPConfig(base_width=64), lr=1e-3)
        stds[heads] = {n: p.detach().std().item() for n, p in m.named_parameters() if p.numel() > 1}
        for _, mod in readout_modules(m):
            assert torch.count_nonzero(mod.weight) == 0
        for n, p in m.named_parameters():
            if "adaLN" in n and n.endswith("weight"):
                assert p.abs().max() > 0, n
    rows = {r.name: r for r in param_table(build(family, 8), MuPConfig(base_width=64))}
    for n, r in rows.items():
        if n not in stds[8] or r.init_std in (None, 0.0):
            continue
        # sample std of >= 1000 normals is within ~3 % of sigma; 15 % leaves room at 5 sigma
        assert stds[8][n] == pytest.approx(r.init_std, rel=0.15), n
        ratio = stds[8][n] / stds[2][n]
        expect = 0.5 if r.role is Role.HIDDEN else 1.0  # width x4 -> std x1/2 for hidden
        assert ratio == pytest.approx(expect, rel=0.15), (n, r.role)


def test_readout_multiplier_and_learning_rates():
    m = build("dit", 8)
    opt = parametrize_(m, MuPConfig(base_width=64, readout_mult=3.0), lr=0.01, weight_decay=0.1)
    ((name, ro),) = list(readout_modules(m))
    assert name == "final_layer.linear" and isinstance(ro, MuReadout)
    assert ro.width_mult == 4.0 and ro.output_mult == 3.0
    x = torch.randn(5, ro.in_features)
    torch.nn.init.normal_(ro.weight)
    torch.testing.assert_close(ro(x), torch.nn.functional.linear(x * 0.75, ro.weight, ro.bias))
    lrs = {g["mup_role"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert lrs["hidden"] == pytest.approx((0.0025, 0.4))  # lr/4, wd*4: lr*wd is width-free
    assert lrs["input"] == lrs["vector"] == lrs["output"] == pytest.approx((0.01, 0.1))
    n_opt = sum(len(g["params"]) for g in opt.param_groups)
    assert n_opt == len(list(m.parameters()))


def test_at_base_width_muP_only_changes_init_and_readout_zero():
    m = build("dit", 2)
    opt = parametrize_(m, MuPConfig(base_width=64), lr=0.01)
    assert {g["lr"] for g in opt.param_groups} == {0.01}
    ((_, ro),) = list(readout_modules(m))
    assert ro.width_mult == 1.0


def test_applying_twice_does_not_rescale_twice():
    m = build("dit", 8)
    parametrize_(m, MuPConfig(base_width=64, readout_mult=2.0), lr=1e-3)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    parametrize_(m, MuPConfig(base_width=64, readout_mult=2.0), lr=1e-3, init=False)
    ((_, ro),) = list(readout_modules(m))
    assert ro.width_mult == 4.0 and ro.output_mult == 2.0
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_no_attributes_on_tensors_and_same_keys_as_standard():
    sp = build("pixart", 8)
    mu = build("pixart", 8)
    parametrize_(mu, MuPConfig(base_width=64), lr=1e-3)
    assert sp.state_dict().keys() == mu.state_dict().keys()
    for n, p in mu.named_parameters():
        assert not vars(p), f"{n} carries attributes {sorted(vars(p))}"


@pytest.mark.parametrize(
    "cfg, heads, msg",
    [
        (dict(base_width=48), 8, "base_width=48 is not a multiple of the model's head_dim=32"),
        (dict(base_width=512), 8, "base_width=512 is larger than the model's width"),
    ],
)
def test_a_config_that_cannot_apply_says_which_value(cfg, heads, msg):
    m = build("dit", heads)
    with pytest.raises(ValueError, match=msg):
        parametrize_(m, MuPConfig(**cfg), lr=1e-3)


@pytest.mark.parametrize(
    "kw, msg",
    [
        (dict(base_width=0), "MuPConfig.base_width must be >= 1, got 0"),
        (dict(base_width=64, readout_mult=0.0), "readout_mult must be"),
        (dict(base_width=64, init_std=float("nan")), "init_std must be"),
        (dict(base_width=64, vector_std=-1.0), "vector_std must be"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        MuPConfig(**kw)


def test_bad_lr_is_refused():
    with pytest.raises(ValueError, match="lr must be"):
        parametrize_(build("dit", 2), MuPConfig(base_width=64), lr=-1.0)


def test_model_without_config_needs_base_and_delta():
    m = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    with pytest.raises(TypeError, match="pass base="):
        parametrize_(m, MuPConfig(base_width=16), lr=1e-3)

    def mlp(w):
        return torch.nn.Sequential(torch.nn.Linear(3, w), torch.nn.ReLU(), torch.nn.Linear(w, 2))

    opt = parametrize_(m, MuPConfig(base_width=16), lr=1e-3, base=mlp(16), delta=mlp(24))
    assert isinstance(m[2], MuReadout) and m[2].width_mult == 4.0
    roles = {g["mup_role"]: g["mup_names"] for g in opt.param_groups}
    assert roles["input"] == ["0.weight"] and roles["output"] == ["2.weight", "2.bias"]


def _train(model, opt, family, steps=3):
    x, t, y = inputs(family, 8)
    losses = []
    for _ in range(steps):
        loss = model(x, t, y).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("family", ["dit", "mmdit"])
def test_state_dict_round_trip(tmp_path, family):
    """Save a trained muP model with the checkpoint writer (safetensors), load it into a fresh
    muP model: same outputs, and training continues identically."""
    a = build(family, 4)
    opt_a = parametrize_(a, MuPConfig(base_width=32), lr=1e-2)
    _train(a, opt_a, family)
    save_tensors(tmp_path / "m.safetensors", a.state_dict())
    b = build(family, 4, seed=123)
    parametrize_(b, MuPConfig(base_width=32), lr=1e-2)
    b.load_state_dict(load_tensors(tmp_path / "m.safetensors")[0])
    x, t, y = inputs(family)
    torch.testing.assert_close(a(x, t, y), b(x, t, y), rtol=0, atol=0)
    assert math.isclose(
        b.get_submodule("final_layer.linear" if family != "uvit" else "decoder_pred").width_mult,
        4.0,
    )


def test_torch_compile_trains_like_eager():
    """The muP model compiles (no tensor attributes for dynamo to trip on) and a few AdamW
    steps match eager. aot_eager runs dynamo + AOTAutograd without a C++ compiler."""
    eager = build("dit", 4)
    opt_e = parametrize_(eager, MuPConfig(base_width=32), lr=1e-2)
    comp_model = build("dit", 4)
    parametrize_(comp_model, MuPConfig(base_width=32), lr=1e-2)
    comp_model.load_state_dict(eager.state_dict())
    compiled = torch.compile(comp_model, backend="aot_eager")
    opt_c = parametrize_(compiled, MuPConfig(base_width=32), lr=1e-2, init=False)
    le = _train(eager, opt_e, "dit")
    lc = _train(compiled, opt_c, "dit")
    torch.testing.assert_close(torch.tensor(lc), torch.tensor(le), rtol=1e-5, atol=1e-6)
    for (n, p), q in zip(eager.named_parameters(), comp_model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6, msg=n)


def test_initialising_a_wrapped_model_is_refused():
    m = build("dit", 2)
    with pytest.raises(ValueError, match="initialise before wrapping"):
        parametrize_(torch.compile(m, backend="eager"), MuPConfig(base_width=32), lr=1e-3)


def test_trainer_schedules_every_muP_group_from_its_own_lr():
    """With the core Trainer's warm-up, each group's LR keeps muP's ratio to the base LR."""
    from tenfold.core.train import TrainConfig, Trainer

    m = build("dit", 4)
    opt = parametrize_(m, MuPConfig(base_width=32), lr=1e-2)
    x, t, y = inputs("dit", 8)

    def loss_fn(model, batch, ctx):
        (xb,) = batch
        return (model(xb, t[: len(xb)], y[: len(xb)]) - xb).square().mean()

    cfg = TrainConfig(steps=2, batch_size=8, lr=1.0, warmup_steps=4, progress=False)
    Trainer(m, loss_fn, (x,), cfg, optimizer=opt).fit()
    lrs = {g["mup_role"]: g["lr"] for g in opt.param_groups}
    assert lrs["hidden"] / lrs["input"] == pytest.approx(32 / 128)
    assert lrs["input"] < 1e-2  # still warming up, scaled from the group's own initial LR


def test_docs_usage_snippet_runs():
    """The usage block of docs/mup.md runs as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "mup.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 10
    ns: dict = {}
    exec(compile(code, "docs/mup.md", "exec"), ns)
    assert isinstance(ns["opt"], torch.optim.AdamW)
    assert ns["wide"].final_layer.linear.width_mult == 8.0
