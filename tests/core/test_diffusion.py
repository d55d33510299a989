import math

import pytest
import torch

from tenfold.core.diffusion import (
    EDMConfig,
    EDMPrecond,
    denoising_loss,
    edm_loss,
    edm_weight,
    heun_sample,
    karras_sigmas,
    sample_sigma,
)

MU, S = 0.7, 0.3  # data ~ N(MU, S^2) per pixel


def gaussian_denoiser(x, sigma, y=None):
    """The exact MMSE denoiser of N(MU, S^2) data: E[x0 | x] = MU + S^2/(S^2+sigma^2)(x-MU)."""
    s = sigma.view(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return MU + S**2 / (S**2 + s**2) * (x - MU)


def _exact(noise):
    # The PF-ODE of Gaussian data has the closed-form solution
    # x(sigma) - MU = (x_T - MU) * sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma_max^2), x_T = 80 n.
    return MU + (noise * 80.0 - MU) * S / math.sqrt(S**2 + 80.0**2)


def test_heun_matches_the_exact_probability_flow_of_a_gaussian():
    noise = torch.randn(4000, 1, 2, 2, dtype=torch.float64)
    out = heun_sample(gaussian_denoiser, noise, num_steps=128)
    # measured max error at 128 steps is ~1.1e-3 (2e-4 at 256); 2e-3 leaves room for the draw
    assert (out - _exact(noise)).abs().max().item() < 2e-3
    assert out.mean().item() == pytest.approx(MU, abs=0.01)
    assert out.std().item() == pytest.approx(S, rel=0.03)


def test_heun_is_second_order():
    # Doubling the steps cuts Heun's error ~4x (Euler: ~2x). Accept 3x..6x per doubling.
    noise = torch.randn(256, 1, 2, 2, dtype=torch.float64)
    errs = [
        (heun_sample(gaussian_denoiser, noise, num_steps=n) - _exact(noise)).abs().max().item()
        for n in (32, 64, 128)
    ]
    for a, b in zip(errs, errs[1:]):
        assert 3.0 < a / b < 6.0, errs


def test_classifier_free_guidance():
    def cond_denoiser(x, sigma, y):
        # class-dependent mean: label 0 -> +1, label 1 -> -1, null label 2 -> 0
        mu = torch.tensor([1.0, -1.0, 0.0], dtype=x.dtype)[y].view(-1, 1, 1, 1)
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        return mu + S**2 / (S**2 + s**2) * (x - mu)

    noise = torch.randn(200, 1, 2, 2, dtype=torch.float64)
    y = torch.zeros(200, dtype=torch.long)
    plain = heun_sample(cond_denoiser, noise, y, num_steps=16)
    same = heun_sample(cond_denoiser, noise, y, num_steps=16, cfg_scale=1.0, null_label=2)
    torch.testing.assert_close(plain, same)
    guided = heun_sample(cond_denoiser, noise, y, num_steps=16, cfg_scale=3.0, null_label=2)
    assert plain.mean().item() == pytest.approx(1.0, abs=0.05)
    assert guided.mean().item() > plain.mean().item() + 0.5  # pushed further from the null class
    with pytest.raises(ValueError, match="null_label"):
        heun_sample(cond_denoiser, noise, y, cfg_scale=2.0)


def test_karras_sigmas():
    s = karras_sigmas(18)
    assert (
        s.shape == (19,)
        and s[0] == pytest.approx(80.0)
        and s[-2] == pytest.approx(0.002)
        and s[-1] == 0
    )
    assert bool((s[:-1].diff() < 0).all())
    with pytest.raises(ValueError):
        karras_sigmas(0)


def test_edm_preconditioning_coefficients():
    sd = 0.5

    class Net(torch.nn.Module):
        def forward(self, x_in, c_noise, y):
            self.seen = (x_in.clone(), c_noise.clone())
            return torch.ones_like(x_in)

    net = Net()
    D = EDMPrecond(net, sd)
    x = torch.full((2, 1, 2, 2), 3.0)
    sigma = torch.tensor([0.1, 10.0])
    out = D(x, sigma)
    for i, s in enumerate(sigma.tolist()):
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / math.sqrt(s**2 + sd**2)
        c_in = 1 / math.sqrt(s**2 + sd**2)
        assert out[i].flatten()[0].item() == pytest.approx(c_skip * 3 + c_out, rel=1e-6)
        assert net.seen[0][i].flatten()[0].item() == pytest.approx(c_in * 3, rel=1e-6)
        assert net.seen[1][i].item() == pytest.approx(math.log(s) / 4, rel=1e-6)


def test_edm_weight_makes_unit_target_scale():
    # lambda(sigma) * c_out(sigma)^2 == 1 : the loss on F has unit weight at every noise level
    sigma = torch.logspace(-2, 2, 9)
    c_out = sigma * 0.5 / (sigma**2 + 0.25).sqrt()
    torch.testing.assert_close(edm_weight(sigma, 0.5) * c_out**2, torch.ones(9))


def test_denoising_loss_of_the_ideal_denoiser_is_the_mmse():
    # E||D*(x0 + sigma n) - x0||^2 per pixel = S^2 sigma^2 / (S^2 + sigma^2)
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = MU + S * torch.randn(n, 1, 1, 1, generator=g, dtype=torch.float64)
    sigma = torch.full((n,), 0.4, dtype=torch.float64)
    per = denoising_loss(
        gaussian_denoiser, x0, sigma, torch.randn(x0.shape, generator=g, dtype=torch.float64)
    )
    assert per.shape == (n,)
    assert per.mean().item() == pytest.approx(S**2 * 0.16 / (S**2 + 0.16), rel=0.03)
    w = torch.full((n,), 2.0, dtype=torch.float64)
    torch.testing.assert_close(
        denoising_loss(gaussian_denoiser, x0, sigma, torch.zeros_like(x0), weight=w),
        2 * denoising_loss(gaussian_denoiser, x0, sigma, torch.zeros_like(x0)),
    )
    with pytest.raises(ValueError, match="noise shape"):
        denoising_loss(gaussian_denoiser, x0, sigma, torch.zeros(3))


def test_edm_loss_and_sigma_sampling():
    cfg = EDMConfig()
    g = torch.Generator().manual_seed(0)
    s = sample_sigma(50000, cfg, g)
    assert s.log().mean().item() == pytest.approx(cfg.P_mean, abs=0.02)
    assert s.log().std().item() == pytest.approx(cfg.P_std, abs=0.02)
    loss = edm_loss(
        gaussian_denoiser, torch.randn(8, 1, 2, 2), None, cfg, torch.Generator().manual_seed(1)
    )
    assert loss.shape == (8,) and bool(torch.isfinite(loss).all())
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)


def test_ode_log_likelihood_is_exact_on_a_gaussian_and_converges_at_second_order():
    """For data N(0, s^2 I) the ideal denoiser is D = s^2 / (s^2 + sigma^2) x and log p at
    sigma_min is that of N(0, (s^2 + sigma_min^2) I); Heun's error falls ~4x per doubling."""
    from tenfold.core.diffusion import ode_log_likelihood

    s = 0.7

    def D(x, sigma, y):
        return s**2 / (s**2 + sigma.view(-1, 1).double() ** 2) * x

    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = s**2 + 0.002**2
    exact = -0.5 * (x**2).sum(1) / v - math.log(2 * math.pi * v)
    err = [float((ode_log_likelihood(D, x, num_steps=n) - exact).abs().max()) for n in (64, 128)]
    assert err[1] < 0.02  # about 0.01 nats at the default 128 steps
    assert 3.0 < err[0] / err[1] < 5.0  # second order


def test_ode_log_likelihood_refuses_high_dimensional_data_and_propagates_nan():
    from tenfold.core.diffusion import ode_log_likelihood

    def D(x, sigma, y):
        return 0.5 * x

    with pytest.raises(ValueError, match="over max_dim=64"):
        ode_log_likelihood(D, torch.randn(2, 3, 8, 8))
    x = torch.randn(3, 2)
    x[1, 0] = float("nan")
    out = ode_log_likelihood(D, x, num_steps=4)
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()
