"""The DDO objective against closed forms: exact log-likelihoods (a categorical model, a
Gaussian denoiser), the gradient at theta = ref, padding, unconditional rows."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tenfold.core.diffusion import EDMPrecond, edm_weight
from tenfold.core.models import LM, LMConfig, MLPDenoiser, MLPDenoiserConfig
from tenfold.core.validate import ConfigError
from tenfold.ddo import DDOConfig, ddo_loss, ddo_objective, diffusion_log_ratio, sequence_log_prob


class Categorical(nn.Module):
    """Logits that depend only on the position: log p(x) is exact, sum_j log_softmax(W_j)[x_j]."""

    def __init__(self, T, V, seed):
        super().__init__()
        self.W = nn.Parameter(torch.randn(T, V, generator=torch.Generator().manual_seed(seed)))

    def forward(self, idx):
        return self.W[: idx.shape[1]].expand(idx.shape[0], -1, -1)  # (B, T, V)


class GaussDenoiser(nn.Module):
    """The exact denoiser of N(mu, s^2 I) data: D = mu + s^2 / (s^2 + sigma^2) (x - mu)."""

    def __init__(self, mu, s):
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(mu, dtype=torch.float64))
        self.s = nn.Parameter(torch.tensor(s, dtype=torch.float64))

    def forward(self, x, sigma, y=None):
        sg = sigma.view(-1, 1).double()
        return self.mu + self.s**2 / (self.s**2 + sg**2) * (x - self.mu)


def exact_logp(W, tokens, prompt_len=1):
    lp = W.log_softmax(-1)
    return torch.tensor(
        [sum(float(lp[j - 1, row[j]]) for j in range(prompt_len, len(row))) for row in tokens]
    )


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.5), (3.0, 0.1), (0.5, 2.0)])
def test_ar_loss_equals_its_closed_form_on_exact_likelihoods(alpha, beta):
    model, ref = Categorical(5, 7, 0), Categorical(5, 7, 1)
    g = torch.Generator().manual_seed(2)
    real, fake = torch.randint(7, (8, 6), generator=g), torch.randint(7, (8, 6), generator=g)
    cfg = DDOConfig(alpha=alpha, beta=beta)
    out = ddo_loss(model, ref, real, fake, cfg)
    with torch.no_grad():
        r_real = exact_logp(model.W, real) - exact_logp(ref.W, real)
        r_fake = exact_logp(model.W, fake) - exact_logp(ref.W, fake)
    # -log sigmoid(b r) on real, -alpha log sigmoid(-b r) on fake, / max(alpha, 1)
    want = -F.logsigmoid(beta * r_real).mean() - alpha * F.logsigmoid(-beta * r_fake).mean()
    want = want / max(alpha, 1.0)
    torch.testing.assert_close(out.r_real.double(), r_real.double(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.r_fake.double(), r_fake.double(), atol=1e-5, rtol=1e-5)
    assert abs(out.loss.item() - want.item()) < 1e-5
    assert out.accuracy.item() == pytest.approx(float((r_real > r_fake).float().mean()))
    assert out.margin.item() == pytest.approx(float((r_real - r_fake).mean()), abs=1e-5)
    unnorm = ddo_objective(
        out.r_real, out.r_fake, DDOConfig(alpha=alpha, beta=beta, normalize=False)
    )
    assert unnorm.item() == pytest.approx(want.item() * max(alpha, 1.0), rel=1e-5)


def test_diffusion_ratio_equals_its_closed_form_for_gaussian_denoisers():
    model, ref = GaussDenoiser([0.3, -0.2], 0.7), GaussDenoiser([0.0, 0.0], 0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 2, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 20.0])
    noise = torch.randn(6, 2, generator=g, dtype=torch.float64)
    r = diffusion_log_ratio(model, ref, x, sigma, noise)
    xs = x + sigma.view(-1, 1).double() * noise

    def D(mu, s, sg):
        return torch.tensor(mu) + s**2 / (s**2 + sg**2) * (xs - torch.tensor(mu))

    sg = sigma.view(-1, 1).double()
    e1 = (D([0.3, -0.2], 0.7, sg) - x).pow(2).sum(1)
    e0 = (D([0.0, 0.0], 0.5, sg) - x).pow(2).sum(1)
    want = -edm_weight(sigma.double(), 0.5) * (e1 - e0)
    torch.testing.assert_close(r.detach(), want, rtol=1e-6, atol=1e-9)


def test_real_and_fake_share_sigma_and_noise():
    """With the fake equal to the real row, the two ratios are equal (one (sigma, noise))."""
    model, ref = GaussDenoiser([0.3, -0.2], 0.7), GaussDenoiser([0.0, 0.0], 0.5)
    x = torch.randn(16, 2, dtype=torch.float64)
    out = ddo_loss(
        model, ref, x, x.clone(), DDOConfig(), generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(out.r_real, out.r_fake)


def _grads(loss, params):
    return torch.autograd.grad(loss, params)


@pytest.mark.parametrize("alpha,beta", [(1.0, 0.05), (4.0, 0.3)])
def test_gradient_at_theta_equal_ref_is_the_logistic_gradient_at_r_zero(alpha, beta):
    """At theta = ref, r = 0 and dL/dtheta = beta/2 (alpha E_fake grad r - E_real grad r) / max(alpha, 1)."""
    torch.manual_seed(0)
    net = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=16, depth=1)))
    for p in net.parameters():  # a non-trivial point (the zero-init head would give D = c_skip x)
        nn.init.normal_(p, std=0.3)
    ref = copy.deepcopy(net).requires_grad_(False)
    x, xf = torch.randn(32, 2), torch.randn(32, 2)
    sigma, noise = torch.rand(32) + 0.1, torch.randn(32, 2)
    cfg = DDOConfig(alpha=alpha, beta=beta)
    out = ddo_loss(net, ref, x, xf, cfg, sigma=sigma, noise=noise)
    assert out.r_real.abs().max() == 0 and out.r_fake.abs().max() == 0
    params = list(net.parameters())
    got = _grads(out.loss, params)
    r_real = diffusion_log_ratio(net, ref, x, sigma, noise)
    r_fake = diffusion_log_ratio(net, ref, xf, sigma, noise)
    lin = beta / 2 * (alpha * r_fake.mean() - r_real.mean()) / max(alpha, 1.0)
    want = _grads(lin, params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert max(float(a.abs().max()) for a in got) > 1e-4  # the gradient is not trivially zero


def test_ar_gradient_at_theta_equal_ref_on_core_lm():
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=11, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    ref = copy.deepcopy(lm).requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randint(11, (6, 8), generator=g), torch.randint(11, (6, 8), generator=g)
    cfg = DDOConfig(alpha=2.0, beta=0.2)
    out = ddo_loss(lm, ref, real, fake, cfg)
    params = [p for p in lm.parameters()]
    got = _grads(out.loss, params)
    lp_r, lp_f = sequence_log_prob(lm, real), sequence_log_prob(lm, fake)
    want = _grads(0.2 / 2 * (2.0 * lp_f.mean() - lp_r.mean()) / 2.0, params)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_sequence_log_prob_sums_scored_tokens_and_ignores_padding():
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=9, block_size=8, n_layer=1, n_heads=2, head_dim=8)).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(9, (4, 7), generator=g)
    lengths = torch.tensor([7, 5, 3, 2])
    mask = torch.arange(7)[None] < lengths[:, None]  # right padding
    with torch.no_grad():
        got = sequence_log_prob(lm, tokens, mask, prompt_len=2)
        logp = lm(tokens[:, :-1])[0].log_softmax(-1)
        for b in range(4):
            want = sum(float(logp[b, j - 1, tokens[b, j]]) for j in range(2, int(lengths[b])))
            assert got[b].item() == pytest.approx(want, abs=1e-5)
        other = tokens.clone()
        other[~mask] = (other[~mask] + 3) % 9  # change the padding: the sum must not move
        torch.testing.assert_close(sequence_log_prob(lm, other, mask, prompt_len=2), got)
    assert got[3].item() == 0.0  # nothing scored in a row of prompt only


def test_unconditional_rows_count_as_real_only():
    model, ref = Categorical(4, 5, 0), Categorical(4, 5, 1)
    g = torch.Generator().manual_seed(5)
    real, fake = torch.randint(5, (6, 5), generator=g), torch.randint(5, (6, 5), generator=g)
    uncond = torch.tensor([True, False, False, True, False, False])
    a, b = 3.0, 0.4
    out = ddo_loss(model, ref, real, fake, DDOConfig(alpha=a, beta=b), uncond=uncond)
    rr, rf = out.r_real.detach(), out.r_fake.detach()
    w_real = torch.where(uncond, torch.tensor(a), torch.tensor(1.0))
    w_fake = (~uncond).float()
    want = ((w_real * F.softplus(-b * rr)).mean() + a * (w_fake * F.softplus(b * rf)).mean()) / a
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-6)
    cond = ~uncond
    assert out.accuracy.item() == pytest.approx(float((rr[cond] > rf[cond]).float().mean()))


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw", [{"alpha": 0.0}, {"alpha": -1.0}, {"beta": 0.0}, {"beta": -0.1},
                                {"alpha": float("nan")}, {"P_std": 0.0}])  # fmt: skip
def test_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        DDOConfig(**kw)


def test_reference_of_another_architecture_is_refused():
    a = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=16)))
    b = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=32)))
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="does not match the model's architecture"):
        ddo_loss(a, b, x, x, DDOConfig())
    with pytest.raises(ValueError, match="reference is a Categorical"):
        ddo_loss(a, Categorical(3, 3, 0), x, x, DDOConfig())
    lm = LM(LMConfig(vocab_size=11, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    other = LM(LMConfig(vocab_size=12, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    t = torch.randint(11, (2, 5))
    with pytest.raises(ValueError, match="vocabulary has 12 tokens, the model.s 11"):
        ddo_loss(lm, other, t, t, DDOConfig())


def test_fakes_of_the_wrong_shape_or_kind_are_refused():
    m = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=16)))
    ref = copy.deepcopy(m)
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="fakes must be like the real batch"):
        ddo_loss(m, ref, x, torch.randn(3, 2), DDOConfig())
    with pytest.raises(ValueError, match="fakes must be like the real batch"):
        ddo_loss(m, ref, x, torch.zeros(4, 2, dtype=torch.long), DDOConfig())
    with pytest.raises(ValueError, match="labels for both"):
        ddo_loss(m, ref, (x, torch.zeros(4, dtype=torch.long)), x, DDOConfig())
    with pytest.raises(ValueError, match="sigma must be"):
        ddo_loss(m, ref, x, x, DDOConfig(), sigma=torch.ones(3))
    with pytest.raises(ValueError, match="uncond must be a bool mask"):
        ddo_loss(m, ref, x, x, DDOConfig(), uncond=torch.zeros(4))


def test_bad_tokens_and_masks_are_refused():
    lm = LM(LMConfig(vocab_size=11, block_size=8, n_layer=1, n_heads=2, head_dim=8))
    ref = copy.deepcopy(lm)
    t = torch.randint(11, (2, 5))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        ddo_loss(lm, ref, t, torch.full_like(t, 11), DDOConfig())
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        sequence_log_prob(lm, t, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="prompt_len must be in"):
        sequence_log_prob(lm, t, prompt_len=5)
    with pytest.raises(TypeError, match="tokens must have dtype"):
        sequence_log_prob(lm, t.float())
    with pytest.raises(ValueError, match="must return logits"):
        sequence_log_prob(lambda idx: idx.float(), t)  # (B, T): not logits


def test_nan_in_gives_nan_out():
    m = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=16)))
    for p in m.parameters():
        nn.init.normal_(p, std=0.3)
    ref = copy.deepcopy(m)
    x = torch.randn(4, 2)
    x[0, 0] = float("nan")
    out = ddo_loss(m, ref, x, torch.randn(4, 2), DDOConfig(), generator=torch.Generator())
    assert torch.isnan(out.loss)
