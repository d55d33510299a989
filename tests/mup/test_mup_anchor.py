"""Cross-check against the anchor, Microsoft's ``mup`` 1.0.0 (installed by ``make``; a test-only
dependency). The same DiT is made muP both ways -- ``mup.MuReadout`` + ``set_base_shapes`` +
``mup.init`` + ``MuAdamW``, as the paper's authors do -- and tenfold must give every parameter
the same init, the same learning rate and weight decay, and the same readout output."""

import importlib.util

import pytest
import torch

from tenfold.core.models import DIT_MODELS, DiT, DiTConfig
from tenfold.mup import MuPConfig, parametrize_

# Not pytest.importorskip("mup"): without Microsoft's package, `import mup` finds this test
# folder (tests/mup, on sys.path through tests/) as a namespace package and "succeeds".
_spec = importlib.util.find_spec("mup")
if _spec is None or _spec.origin is None:
    pytest.skip(
        "Microsoft's mup 1.0.0 is not installed (`make test` installs it)", allow_module_level=True
    )
import mup  # noqa: E402

HD = 32
BASE, WIDTH, R_MULT, LR, WD = 64, 256, 2.5, 2.0**-7, 0.05


def dit(width):
    return DiT(DiTConfig(**{**DIT_MODELS["DiT-Digits/2"], "n_heads": width // HD}))


def mup_dit(width):
    m = dit(width)
    old = m.final_layer.linear
    m.final_layer.linear = mup.MuReadout(
        old.in_features, old.out_features, readout_zero_init=True, output_mult=R_MULT
    )
    return m


def mup_init_(model):
    """The authors' init through ``mup.init``: fan-in (kaiming, a=1) for every weight,
    N(0, 1) class embedding, zero biases, zero readout; same parameter order as tenfold."""
    for name, p in model.named_parameters():
        owner = model.get_submodule(name.rpartition(".")[0])
        if isinstance(owner, mup.MuReadout) or name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif isinstance(owner, torch.nn.Embedding):
            mup.init.normal_(p, std=1.0)
        else:
            mup.init.kaiming_normal_(p, a=1, mode="fan_in")


@pytest.fixture(scope="module")
def pair():
    ref = mup_dit(WIDTH)
    mup.set_base_shapes(ref, mup_dit(BASE), delta=mup_dit(BASE + HD))
    torch.manual_seed(0)
    mup_init_(ref)
    ref_opt = mup.MuAdamW(ref.parameters(), lr=LR, weight_decay=WD)
    ours = dit(WIDTH)
    torch.manual_seed(0)
    opt = parametrize_(
        ours, MuPConfig(base_width=BASE, readout_mult=R_MULT), lr=LR, weight_decay=WD
    )
    return ref, ref_opt, ours, opt


def test_same_init_for_every_parameter(pair):
    ref, _, ours, _ = pair
    # same seed, same draw order, same std -> the same numbers (to float rounding of the std)
    for (n, a), (m, b) in zip(ref.named_parameters(), ours.named_parameters(), strict=True):
        assert n == m
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0, msg=n)


def test_same_learning_rate_and_weight_decay_for_every_parameter(pair):
    ref, ref_opt, ours, opt = pair

    def per_param(model, optim):
        ids = {id(p): n for n, p in model.named_parameters()}
        return {
            ids[id(p)]: (g["lr"], g["weight_decay"])
            for g in optim.param_groups
            for p in g["params"]
        }

    a, b = per_param(ref, ref_opt), per_param(ours, opt)
    assert a.keys() == b.keys() and len(a) == len(list(ours.parameters()))
    for n in a:
        assert b[n] == pytest.approx(a[n], rel=1e-12), n
    assert {lr for lr, _ in b.values()} == {LR, LR * BASE / WIDTH}


def test_same_readout_output_and_same_training(pair):
    ref, ref_opt, ours, opt = pair
    torch.manual_seed(1)
    with torch.no_grad():  # a non-zero readout, the same in both
        w = torch.randn_like(ours.final_layer.linear.weight)
        for m in (ref, ours):
            m.final_layer.linear.weight.copy_(w)
            m.final_layer.linear.bias.fill_(0.1)
    h = torch.randn(3, WIDTH)
    torch.testing.assert_close(ours.final_layer.linear(h), ref.final_layer.linear(h))
    g = torch.Generator().manual_seed(2)
    x, t, y = torch.randn(8, 1, 8, 8, generator=g), torch.randn(8, generator=g), torch.arange(8)
    for _ in range(3):  # the effective learning rates, end to end
        for model, optim in ((ref, ref_opt), (ours, opt)):
            loss = (model(x, t, y) - x).square().mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
    torch.testing.assert_close(ours(x, t, y), ref(x, t, y), rtol=1e-5, atol=1e-6)
