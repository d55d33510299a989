"""DPO: the loss (Rafailov et al.), preference pairs by score margin, and a fine-tuning run
that moves the policy towards its winners against a frozen reference."""

import copy
import math

import numpy as np
import pytest
import torch

from tenfold.core.validate import ConfigError
from tenfold.mesh.dpo import DPOConfig, dpo_finetune, dpo_loss, make_pairs
from tenfold.mesh.model import MeshGenConfig, MeshGenerator


def test_dpo_loss_values_and_gradient_direction():
    z = torch.zeros(4)
    out = dpo_loss(z, z, z, z, beta=0.1)
    assert out.loss.item() == pytest.approx(math.log(2))  # no preference yet
    lw = torch.tensor([-1.0, -2.0], requires_grad=True)
    ll = torch.tensor([-3.0, -1.0], requires_grad=True)
    rw, rl = torch.tensor([-2.0, -2.0]), torch.tensor([-2.0, -2.0])
    out = dpo_loss(lw, ll, rw, rl, beta=0.5)
    z = 0.5 * ((lw - rw) - (ll - rl))
    assert out.loss.item() == pytest.approx(
        float(-torch.nn.functional.logsigmoid(z.detach()).mean())
    )
    assert out.accuracy.item() == 0.5  # the first pair prefers the winner, the second not
    out.loss.backward()
    assert (lw.grad < 0).all() and (ll.grad > 0).all()  # raise winners, lower losers


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2), 0.1), "shape"),
        ((torch.zeros(2, 1),) * 4 + (0.1,), "dimensions"),
        ((torch.zeros(2, dtype=torch.long),) * 4 + (0.1,), "floating"),
        ((torch.zeros(2),) * 4 + (0.0,), "beta"),
        ((torch.zeros(2),) * 4 + (float("nan"),), "beta"),
    ],
)
def test_dpo_loss_bad_inputs(args, match):
    with pytest.raises((ValueError, TypeError), match=match):
        dpo_loss(*args)


def test_nan_log_probs_give_a_nan_loss_not_a_finite_one():
    n = torch.tensor([float("nan"), 0.0])
    assert torch.isnan(dpo_loss(n, torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1).loss)


def test_pairs_by_margin_widest_first():
    s = [0.5, 0.1, 0.12, 0.9]
    assert make_pairs(s, margin=0.05, max_pairs=3) == [(1, 3), (2, 3), (0, 3)]
    assert make_pairs(s, margin=0.5) == [(1, 3), (2, 3)]
    assert make_pairs([0.3, 0.3], margin=0.0) == []  # a tie is no preference
    with pytest.raises(ValueError, match="finite"):
        make_pairs([0.1, float("nan")], 0.0)


@pytest.mark.parametrize(
    "kw, match",
    [(dict(beta=0), "beta"), (dict(samples_per_cloud=1), "samples_per_cloud"),
     (dict(top_p=1.5), "top_p"), (dict(pair_margin=-1), "pair_margin"),
     (dict(objective="ppo"), "objective")],
)  # fmt: skip
def test_dpo_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        DPOConfig(**kw)


def test_dpo_finetune_raises_the_winners_relative_log_ratio():
    torch.manual_seed(0)
    gen = MeshGenerator(MeshGenConfig(levels=64, split=(4, 16), n_cond=4, n_layer=1,
                                      n_heads=2, head_dim=8, block_size=68)).eval()  # fmt: skip
    ref = copy.deepcopy(gen)
    rng = np.random.default_rng(0)
    clouds = [(rng.uniform(-0.9, 0.9, (64, 3)), rng.normal(size=(64, 3))) for _ in range(2)]
    cfg = DPOConfig(rounds=1, samples_per_cloud=4, steps=25, batch_size=4, lr=3e-3,
                    pair_margin=0.0, max_new_tokens=40, progress=False)  # fmt: skip
    hist = dpo_finetune(gen, clouds, cfg)
    assert len(hist) == 1 and hist[0]["pairs"] > 0
    assert hist[0]["accuracy"] > 0.5 and hist[0]["loss"] < math.log(2)
    changed = any((a - b).abs().max() > 0 for a, b in zip(gen.parameters(), ref.parameters()))
    assert changed
    # the control objective fine-tunes on the winners alone, with no reference needed
    sft = copy.deepcopy(ref)
    hist = dpo_finetune(sft, clouds, DPOConfig(**{**cfg.__dict__, "objective": "sft"}))
    assert hist[0]["pairs"] > 0 and math.isnan(hist[0]["accuracy"]) and hist[0]["loss"] > 0
    assert any((a - b).abs().max() > 0 for a, b in zip(sft.parameters(), ref.parameters()))
    with pytest.raises(ValueError, match="at least one"):
        dpo_finetune(gen, [], cfg)
    with pytest.raises(ValueError, match="no trainable parameters"):
        dpo_finetune(copy.deepcopy(ref).requires_grad_(False), clouds, cfg)
    with pytest.raises(ValueError, match="separate"):
        dpo_finetune(gen, clouds, cfg, reference=gen)
    with pytest.raises(ValueError, match="window"):
        dpo_finetune(gen, clouds, DPOConfig(max_new_tokens=500, progress=False))
