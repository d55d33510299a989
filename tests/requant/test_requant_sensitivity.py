"""Sensitivity metrics against the exact loss change: PQI converges to it, Taylor-2 is exact
for a quadratic loss, the quadrature rules do what their table says, and parameters are
always restored."""

import pytest
import torch
import torch.nn as nn

from tenfold.core.models.lm import LM, LMConfig
from tenfold.requant import (
    exact_delta,
    fisher,
    lm_loss,
    mean_loss,
    pqi,
    taylor1,
    taylor2,
)
from tenfold.requant import grid as G
from tenfold.requant.sensitivity import quadrature, weights_at


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    m = LM(LMConfig(vocab_size=32, block_size=16, n_layer=1, n_heads=2, head_dim=8))
    data = torch.randint(0, 32, (32, 17))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    for _ in range(60):
        loss = lm_loss(m, data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    names = [n for n, p in m.named_parameters() if p.ndim == 2 and n.startswith("blocks")]
    q = {n: G.rtn(m.get_parameter(n).detach(), 3, 16) for n in names}
    return m, q, [data[:16], data[16:]]


def test_pqi_converges_to_the_exact_loss_change(lm):
    m, q, batches = lm
    exact = exact_delta(m, q, batches)
    assert exact > 0
    errs = [abs(pqi(m, q, batches, points=n).total - exact) / exact for n in (2, 8, 32)]
    assert errs[-1] < 1e-3, errs  # midpoint at N = 32
    assert errs[0] > errs[1] > errs[2] or errs[-1] < 1e-5
    # the one-sided rules converge too, from either side of the exact value
    left = pqi(m, q, batches, points=32, rule="left").total
    right = pqi(m, q, batches, points=32, rule="right").total
    assert min(left, right) < exact < max(left, right)
    assert abs(left - exact) / exact < 0.1 and abs(right - exact) / exact < 0.1


class _Quadratic(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 3, bias=False)


def _quad_loss(model, batch):
    x, y = batch
    return ((model.lin(x) - y) ** 2).mean()


@pytest.fixture
def quadratic():
    torch.manual_seed(1)
    m = _Quadratic()
    x = torch.randn(40, 6)
    batches = [(x[:20], torch.randn(20, 3)), (x[20:], torch.randn(20, 3))]
    q = {"lin.weight": m.lin.weight.detach() + 0.3 * torch.randn(3, 6)}
    return m, q, batches


def test_taylor2_and_midpoint_pqi_are_exact_for_a_quadratic_loss(quadratic):
    m, q, batches = quadratic
    exact = exact_delta(m, q, batches, _quad_loss)
    assert taylor2(m, q, batches, _quad_loss).total == pytest.approx(exact, rel=1e-4)
    # the gradient is linear along the path: one midpoint (or trapezoid) interval is exact
    for rule in ("midpoint", "trapezoid"):
        assert pqi(m, q, batches, _quad_loss, points=1, rule=rule).total == pytest.approx(
            exact, rel=1e-4
        )
    assert taylor1(m, q, batches, _quad_loss).total != pytest.approx(exact, rel=1e-2)


def test_taylor1_is_the_gradient_times_the_step(quadratic):
    m, q, batches = quadratic
    m.zero_grad()
    loss = sum(_quad_loss(m, b) for b in batches) / len(batches)
    loss.backward()
    want = m.lin.weight.grad * (q["lin.weight"] - m.lin.weight.detach())
    got = taylor1(m, q, batches, _quad_loss).element["lin.weight"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)


def test_fisher_is_half_the_squared_per_sequence_gradient_times_the_step_squared(quadratic):
    m, q, batches = quadratic
    x, y = batches[0]
    one = [(x[:1], y[:1])]  # a tuple batch is one sequence
    m.zero_grad()
    _quad_loss(m, one[0]).backward()
    dw = q["lin.weight"] - m.lin.weight.detach()
    got = fisher(m, q, one, _quad_loss).element["lin.weight"]
    torch.testing.assert_close(got, 0.5 * m.lin.weight.grad**2 * dw**2)


@pytest.mark.parametrize("rule", ["left", "right", "midpoint", "trapezoid"])
@pytest.mark.parametrize("n", [1, 3, 8])
def test_quadrature_weights_sum_to_one_and_points_lie_in_the_interval(rule, n):
    nodes = quadrature(n, rule)
    assert sum(c for _, c in nodes) == pytest.approx(1.0)
    assert all(0.0 <= t <= 1.0 for t, _ in nodes)
    assert len(nodes) == n + (rule == "trapezoid")


def test_weights_are_restored_after_an_error_and_tied_weights_follow():
    m = LM(LMConfig(vocab_size=16, block_size=8, n_layer=1, n_heads=1, head_dim=8))
    before = m.tok_emb.weight.detach().clone()
    zeros = torch.zeros_like(before)
    with weights_at(m, {"tok_emb.weight": zeros}):
        assert m.lm_head.weight is zeros and m.tok_emb.weight is zeros
    with pytest.raises(RuntimeError, match="boom"), weights_at(m, {"tok_emb.weight": zeros}):
        raise RuntimeError("boom")
    assert isinstance(m.tok_emb.weight, nn.Parameter) and m.lm_head.weight is m.tok_emb.weight
    assert torch.equal(m.tok_emb.weight, before)


def test_bad_arguments_get_clear_errors(quadratic):
    m, q, batches = quadratic
    with pytest.raises(ValueError, match="no calibration batches"):
        pqi(m, q, [], _quad_loss)
    with pytest.raises(ValueError, match="quantized is empty"):
        taylor1(m, {}, batches, _quad_loss)
    with pytest.raises(KeyError, match="no parameters"):
        exact_delta(m, {"nope.weight": torch.zeros(1)}, batches, _quad_loss)
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        fisher(m, {"lin.weight": torch.zeros(2, 2)}, batches, _quad_loss)
    with pytest.raises(ValueError, match="points must be >= 1"):
        pqi(m, q, batches, _quad_loss, points=0)
    with pytest.raises(ValueError, match="midpoint"):
        pqi(m, q, batches, _quad_loss, rule="simpson")
    with pytest.raises(ValueError, match=r"token ids of shape \(B, T\)"):
        mean_loss(m, [torch.zeros(3)])


def test_nan_in_the_quantized_weights_gives_nan_not_a_number(quadratic):
    m, q, batches = quadratic
    bad = {"lin.weight": q["lin.weight"].clone()}
    bad["lin.weight"][0, 0] = float("nan")
    assert torch.isnan(torch.tensor(pqi(m, bad, batches, _quad_loss, points=2).total))
    assert torch.isnan(torch.tensor(exact_delta(m, bad, batches, _quad_loss)))
