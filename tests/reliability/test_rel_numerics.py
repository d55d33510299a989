"""Adversarial numeric inputs to every public API: non-finite values propagate (NaN in, NaN
out) and never come back as a finite-looking answer; arguments that cannot work (NaN, inf,
negative, non-integer, empty, wrong shape or dtype) are refused with an error that names
them; the trainer stops on a non-finite loss with a clear message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tenfold import afdm
from tenfold.afdm.link import simulate_mu_ber
from tenfold.attention import VARIANTS, AttentionConfig, sageattn
from tenfold.core import metrics
from tenfold.core.diffusion import EDMConfig, edm_loss, heun_sample, karras_sigmas, sample_sigma
from tenfold.core.train import TrainConfig, Trainer, batch_indices
from tenfold.fallback import FallbackConfig, fallback_linear
from tenfold.fallback import apply_ as fallback_apply

NAN, INF = float("nan"), float("inf")

# ---------------------------------------------------------------- fallback


@pytest.mark.parametrize("rule", ["relative", "crest", "absolute", "topk"])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_fallback_linear_propagates_non_finite_input(rule, bad):
    cfg = FallbackConfig(rule=rule, threshold=0.1 if rule == "topk" else 8.0)
    x = torch.randn(64, 64)
    x[5, 7] = bad
    w = torch.randn(48, 64)
    y = fallback_linear(x, w, None, cfg)
    assert not torch.isfinite(y[5]).all()  # the row that saw it is not finite
    assert torch.isfinite(y[40:]).all()  # rows of other blocks are untouched


@pytest.mark.parametrize("where", ["dy", "w"])
def test_fallback_backward_propagates_nan(where):
    x = torch.randn(32, 64, requires_grad=True)
    w = torch.randn(32, 64, requires_grad=True)
    if where == "w":
        with torch.no_grad():
            w[0, 0] = NAN
    y = fallback_linear(x, w, None, FallbackConfig())
    g = torch.ones_like(y)
    if where == "dy":
        g[3, 3] = NAN
    y.backward(g)
    assert not torch.isfinite(x.grad).all()  # dX = dY W sees both
    if where == "dy":  # dW = dY^T X: finite when only W held the NaN, as in float
        assert not torch.isfinite(w.grad).all()


def test_a_nan_loss_in_fallback_training_stops_the_trainer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 1))
    fallback_apply(model, FallbackConfig())
    x = torch.randn(64, 32)
    x[3, 3] = NAN
    t = Trainer(
        model,
        lambda m, b, ctx: m(b[0]).pow(2).mean(),
        (x,),
        TrainConfig(steps=5, batch_size=64, progress=False),
    )
    with pytest.raises(FloatingPointError, match="loss is nan at step 0"):
        t.fit()


@pytest.mark.parametrize(
    "args, exc, needle",
    [
        (
            lambda: (torch.randn(4, 8), torch.randn(8), None, None),
            ValueError,
            "weight must have 2 dimensions",
        ),
        (lambda: (torch.randn(4, 8), torch.randn(3, 7), None, None), ValueError, "expects 7"),
        (
            lambda: (torch.randn(4, 8), torch.randn(3, 8), torch.randn(4), None),
            ValueError,
            "bias must be (3,)",
        ),
        (
            lambda: (torch.randint(0, 3, (4, 8)), torch.randn(3, 8), None, None),
            TypeError,
            "floating-point",
        ),
        (lambda: (torch.randn(0, 8), torch.randn(3, 8), None, None), ValueError, "x is empty"),
        (
            lambda: ([[1.0] * 8], torch.randn(3, 8), None, None),
            TypeError,
            "x must be a torch.Tensor",
        ),
        (
            lambda: (torch.randn(4, 8), torch.randn(3, 8), None, "int8"),
            TypeError,
            "config must be a FallbackConfig",
        ),
    ],
)
def test_fallback_linear_bad_arguments(args, exc, needle):
    x, w, b, cfg = args()
    with pytest.raises(exc) as e:
        fallback_linear(x, w, b, cfg)
    assert needle in str(e.value)


def test_fallback_apply_bad_arguments():
    with pytest.raises(TypeError, match="FallbackConfig"):
        fallback_apply(nn.Linear(4, 4), {"block": 32})
    with pytest.raises(ValueError, match="no nn.Linear"):
        fallback_apply(nn.Sequential(nn.ReLU()), FallbackConfig())


# ---------------------------------------------------------------- attention


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_sageattn_propagates_nan(variant, where):
    g = torch.Generator().manual_seed(0)
    t = {n: torch.randn(1, 2, 64, 64, generator=g) for n in "qkv"}
    t[where][0, 1, 9, 3] = NAN
    out = sageattn(t["q"], t["k"], t["v"], variant=variant, backend="reference")
    assert not torch.isfinite(out[0, 1]).all()


@pytest.mark.parametrize(
    "kw, exc, needle",
    [
        (dict(scale=NAN), ValueError, "scale must be a number"),
        (dict(scale=-1.0), ValueError, "scale must be > 0"),
        (dict(dropout_p=1.5), ValueError, "dropout_p must be in [0,1]"),
        (dict(variant="fp3"), ValueError, "variant"),
        (dict(layout="tbhd"), ValueError, "layout"),
        (dict(on_unsupported="ignore"), ValueError, "on_unsupported"),
        (dict(causal_align="middle"), ValueError, "causal_align"),
    ],
)
def test_sageattn_bad_arguments(kw, exc, needle):
    q = torch.randn(1, 2, 16, 64)
    with pytest.raises(exc) as e:
        sageattn(q, q, q, **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "shapes, exc, needle",
    [
        (((1, 2, 16, 64), (1, 2, 16, 64), (1, 2, 16)), ValueError, "value must be 4-D"),
        (
            ((1, 3, 16, 64), (1, 2, 16, 64), (1, 2, 16, 64)),
            ValueError,
            "multiple of key/value heads",
        ),
        (((1, 2, 16, 64), (1, 2, 16, 32), (1, 2, 16, 32)), ValueError, "must match"),
        (((1, 2, 0, 64), (1, 2, 16, 64), (1, 2, 16, 64)), ValueError, "query is empty"),
    ],
)
def test_sageattn_bad_shapes(shapes, exc, needle):
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(exc, match=None) as e:
        sageattn(q, k, v)
    assert needle in str(e.value)


def test_sageattn_dtype_mismatch_and_integers():
    q = torch.randn(1, 2, 16, 64)
    with pytest.raises(TypeError, match="dtypes differ"):
        sageattn(q, q.double(), q)
    with pytest.raises(TypeError, match="floating point"):
        sageattn(q.long(), q.long(), q.long())


def test_attention_config_is_checked_by_type():
    with pytest.raises(ValueError):
        AttentionConfig(variant=3)


# ---------------------------------------------------------------- core numerics


@pytest.mark.parametrize("fn", [metrics.sqnr, metrics.cosine, metrics.rel_l1, metrics.psnr])
def test_error_metrics_propagate_nan(fn):
    ref = torch.randn(16)
    out = ref.clone()
    out[3] = NAN
    assert math.isnan(fn(ref, out))


@pytest.mark.parametrize("fn", [metrics.sqnr, metrics.cosine, metrics.rel_l1, metrics.psnr])
def test_error_metrics_refuse_empty_and_mismatched(fn):
    with pytest.raises(ValueError, match="empty"):
        fn(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="shape mismatch"):
        fn(torch.zeros(3), torch.zeros(4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([1.0], [1.0])


def test_metric_edge_cases_are_defined():
    z = torch.zeros(8)
    assert metrics.sqnr(z, torch.ones(8)) == -math.inf
    assert metrics.sqnr(z, z) == math.inf
    assert metrics.psnr(z, z) == math.inf
    assert metrics.cosine(torch.ones(4), torch.ones(4)) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="data_range"):
        metrics.psnr(z, z, data_range=0)
    mu, s = metrics.gaussian_stats(torch.ones(10, 3))  # constant features: zero covariance
    assert metrics.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(metrics.frechet_distance(mu * NAN, s, mu, s))
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.gaussian_stats(torch.ones(1, 3))
    with pytest.raises(ValueError, match="covariances"):
        metrics.frechet_distance(mu, s, mu[:2], s)


@pytest.mark.parametrize(
    "x, y, kw, needle",
    [
        (torch.zeros(0, 2), torch.zeros(3, 2), {}, "x is empty"),
        (torch.zeros(3, 2), torch.zeros(3, 3), {}, "equal d"),
        (torch.zeros(3), torch.zeros(3, 2), {}, "x must have 2 dimensions"),
        (torch.zeros(3, 2), torch.zeros(3, 2), dict(n_proj=0), "n_proj must be >= 1"),
        (torch.zeros(3, 2), torch.zeros(3, 2), dict(p=0.5), "p must be >= 1"),
    ],
)
def test_sliced_wasserstein_bad_inputs(x, y, kw, needle):
    with pytest.raises(ValueError) as e:
        metrics.sliced_wasserstein(x, y, **kw)
    assert needle in str(e.value)


def test_sliced_wasserstein_propagates_nan():
    x = torch.randn(20, 2)
    x[0, 0] = NAN
    assert math.isnan(metrics.sliced_wasserstein(x, torch.randn(20, 2)))


@pytest.mark.parametrize(
    "fn, needle",
    [
        (lambda: karras_sigmas(0), "num_steps must be >= 1"),
        (lambda: karras_sigmas(5, sigma_min=NAN), "sigma_min must be a number"),
        (lambda: karras_sigmas(5, sigma_min=10, sigma_max=1), "sigma_min < sigma_max"),
        (lambda: karras_sigmas(5, rho=0), "rho must be > 0"),
        (
            lambda: heun_sample(lambda x, s, y: x, torch.randn(2, 1, 4, 4), cfg_scale=NAN),
            "cfg_scale must be a number",
        ),
        (
            lambda: heun_sample(lambda x, s, y: x, torch.randn(2, 1, 4, 4), num_steps=2.5),
            "num_steps must be an integer",
        ),
        (lambda: heun_sample(lambda x, s, y: x, torch.zeros(0, 1, 4, 4)), "noise is empty"),
        (lambda: sample_sigma(-1, EDMConfig()), "n must be >= 0"),
        (
            lambda: edm_loss(
                lambda x, s, y: x, torch.randn(2, 1, 4, 4), None, EDMConfig(), sigma=torch.ones(3)
            ),
            "one per sample",
        ),
        (lambda: EDMConfig(sigma_min=NAN), "EDMConfig.sigma_min must be a number"),
        (lambda: EDMConfig(loss_reduction="max"), "loss_reduction"),
    ],
)
def test_diffusion_bad_arguments(fn, needle):
    with pytest.raises(ValueError) as e:
        fn()
    assert needle in str(e.value)


def test_the_sampler_propagates_a_nan_denoiser():
    out = heun_sample(lambda x, s, y: x * NAN, torch.randn(2, 1, 4, 4), num_steps=3)
    assert torch.isnan(out).all()


@pytest.mark.parametrize(
    "n, bs, step, needle",
    [
        (0, 4, 0, "empty dataset"),
        (10, 0, 0, "batch_size must be in"),
        (10, 10**12, 0, "batch_size must be in"),
        (10, 700, 0, "over 64 epochs"),
        (10, 4, -1, "step must be >= 0"),
    ],
)
def test_batch_indices_refuses_what_would_hang_or_mislead(n, bs, step, needle):
    with pytest.raises(ValueError, match=needle):
        batch_indices(n, bs, step, 0)


def test_trainer_refuses_a_batch_larger_than_the_data():
    with pytest.raises(ValueError, match="larger than the dataset"):
        Trainer(
            nn.Linear(2, 1),
            lambda m, b, c: m(b[0]).sum(),
            (torch.zeros(10, 2),),
            TrainConfig(batch_size=11, progress=False),
        )


@pytest.mark.parametrize("bad", [NAN, INF])
def test_trainer_stops_on_a_non_finite_gradient_path(bad):
    torch.manual_seed(0)
    m = nn.Linear(2, 1)
    x = torch.randn(8, 2)
    x[0, 0] = bad
    t = Trainer(
        m,
        lambda m, b, c: m(b[0]).pow(2).mean(),
        (x,),
        TrainConfig(steps=3, batch_size=8, progress=False),
    )
    with pytest.raises(FloatingPointError, match="at step 0"):
        t.fit()


# ---------------------------------------------------------------- afdm

RNG = np.random.default_rng(0)
P = afdm.afdm_params(64, 4, 1.0, 1)


def _paths(rng):
    return afdm.random_paths(rng, 2, 4, 1.0)


@pytest.mark.parametrize(
    "fn, needle",
    [
        (lambda: afdm.simulate_ber(P, 4, NAN, _paths, RNG), "esn0_db must be a number, got nan"),
        (lambda: afdm.simulate_ber(P, 4, INF, _paths, RNG), "esn0_db must be finite"),
        (lambda: afdm.simulate_ber(P, 8, 10.0, _paths, RNG), "QAM order"),
        (
            lambda: afdm.simulate_ber(P, 4, 10.0, _paths, RNG, target_errors=0),
            "target_errors must be >= 1",
        ),
        (
            lambda: afdm.simulate_ber(P, 4, 10.0, _paths, RNG, max_frames=5, min_frames=10),
            "max_frames (5) must be >= min_frames",
        ),
        (lambda: afdm.simulate_ber(P, 4, 10.0, "paths", RNG), "channel must be a function"),
        (
            lambda: afdm.simulate_ber(P, 4, 10.0, _paths, RNG, sparse_tol=2.0),
            "sparse_tol must be in (0,1)",
        ),
        (
            lambda: afdm.rka_precode(np.ones((2, 4)), np.ones(2), 0.1, -5, RNG),
            "iters must be >= 1, got -5",
        ),
        (
            lambda: afdm.rka_precode(np.ones((2, 4)), np.ones(2), 0.1, 2.5, RNG),
            "iters must be an integer",
        ),
        (
            lambda: afdm.rka_precode(np.ones((2, 4)), np.ones(3), 0.1, 5, RNG),
            "s must be (..., K=2)",
        ),
        (
            lambda: afdm.rka_precode(np.full((2, 4), NAN), np.ones(2), 0.1, 5, RNG),
            "H has 8 non-finite",
        ),
        (lambda: afdm.rzf_rka(np.ones((2, 4)), 0.1, 0, RNG), "iters must be >= 1"),
        (lambda: afdm.rzf_rka(np.ones((2, 4)), 0.1, 4, RNG, tol=-1), "tol must be > 0"),
        (lambda: afdm.rzf_direct(np.ones((2, 4)), INF), "xi must be finite"),
        (lambda: afdm.rzf_direct(np.ones((2, 4)), NAN), "xi must be a number"),
        (lambda: afdm.rzf_direct(np.ones((2, 4)), -1.0), "xi must be >= 0"),
        (lambda: afdm.rzf_direct(np.ones(4), 0.1), "H must be (..., K, M)"),
        (lambda: afdm.rzf_direct(np.array(["a", "b"]), 0.1), "array of numbers"),
        (lambda: afdm.afdm_params(64.5, 4, 1.0), "N must be an integer"),
        (lambda: afdm.afdm_params(64, -1, 1.0), "max_delay must be >= 0"),
        (lambda: afdm.afdm_params(64, 4, NAN), "max_doppler must be a number"),
        (lambda: afdm.afdm_params(64, 4, 40.0), "orthogonality fails"),
        (lambda: afdm.afdm_params(64, 4, 1.0, c2=INF), "c2 must be finite"),
        (lambda: afdm.ofdm_params(1, 0), "N must be >= 2"),
        (lambda: afdm.AFDMParams(64, NAN, 0.0, 4), "AFDMParams.c1 must be a number"),
        (lambda: afdm.AFDMParams(64, 0.1, 0.0, 64), "cp_len must be in [0, N)"),
        (lambda: afdm.doppler_from_speed(100, 28e9, 0), "subcarrier_hz must be > 0"),
        (lambda: afdm.doppler_from_speed(-1, 28e9, 15e3), "speed_kmh must be >= 0"),
        (lambda: afdm.doppler_from_speed(100, 1e308, 1e-300), "overflows"),
        (lambda: afdm.random_paths(RNG, 0, 4, 1.0), "n_paths must be >= 1"),
        (lambda: afdm.random_paths(RNG, 9, 4, 1.0), "n_paths <= max_delay + 1"),
        (lambda: afdm.random_paths(RNG, 2, 4, -1.0), "max_doppler must be >= 0"),
        (lambda: afdm.Paths([1], [-1.0], [0.0]), "delays must be >= 0"),
        (lambda: afdm.Paths([1], [NAN], [0.0]), "delays has 1 non-finite"),
        (lambda: afdm.Paths([1, 2], [0.0], [0.0]), "one length"),
        (
            lambda: afdm.apply_channel(np.ones(10), afdm.Paths([1], [0.0], [0.0]), P),
            "frames must be",
        ),
        (lambda: afdm.near_field_response(8, -3.0, 0.1, 28e9, 0.005), "distances r must be > 0"),
        (lambda: afdm.near_field_response(8, 3.0, NAN, 28e9, 0.005), "theta has 1 non-finite"),
        (lambda: afdm.near_field_response(0, 3.0, 0.1, 28e9, 0.005), "M must be >= 1"),
        (lambda: afdm.xlmimo_channel(RNG, 8, 2, r_range=(-1, 5)), "r_range[0] must be > 0"),
        (lambda: afdm.xlmimo_channel(RNG, 8, 2, r_range=(50, 5)), "near <= far"),
        (lambda: afdm.xlmimo_channel(RNG, 8, 2, carrier_hz=0), "carrier_hz must be > 0"),
        (lambda: afdm.xlmimo_channel(RNG, 8, 2, visibility=0), "visibility must be in (0, 1]"),
        (lambda: afdm.wilson(5, 3), "cannot exceed"),
        (lambda: afdm.wilson(-1, 3), "errors must be >= 0"),
        (lambda: afdm.wilson(1, 3, conf=1.0), "conf must be in (0,1)"),
        (lambda: afdm.ber_awgn(4, NAN), "esn0_db has 1 non-finite"),
        (lambda: afdm.ber_awgn(8, 1.0), "M = 4 or 16"),
        (lambda: afdm.qam_map(np.array([0, 2]), 4), "0s and 1s"),
        (lambda: afdm.qam_map(np.array([0, 1, 1]), 4), "multiple of log2(M)"),
        (lambda: afdm.qam_constellation(8), "square power of two"),
        (lambda: afdm.qam_constellation(2.5), "M must be an integer"),
        (lambda: afdm.qam_llr(np.ones(2), 4, 0.0), "noise_var must be > 0"),
        (lambda: afdm.lmmse_detect(np.eye(4), np.ones(4), NAN), "noise_var must be a number"),
        (lambda: afdm.lmmse_detect(np.eye(4), np.ones(3), 0.1), "H must be (..., N, N)"),
        (lambda: afdm.daft(np.ones(4), NAN, 0.0), "c1 must be a number"),
        (lambda: afdm.idaft(np.ones(()), 0.1, 0.0), "y must be (..., N)"),
        (lambda: afdm.normalize_power(np.ones((2, 2)), 0), "total must be > 0"),
        (lambda: afdm.rzf_flops(0, 2, "direct"), "M must be >= 1"),
        (lambda: afdm.rzf_flops(4, 2, "qr"), "method must be"),
        (lambda: afdm.rka_convergence(np.ones((2, 4)), 0.1, 0, RNG), "iters must be >= 1"),
        (
            lambda: simulate_mu_ber(P, 4, 10.0, 2, 4, 1.0, 2, 4, afdm.rzf_direct, RNG),
            "n_antennas (2) must be >= n_users (4)",
        ),
        (
            lambda: simulate_mu_ber(P, 4, NAN, 8, 2, 1.0, 2, 4, afdm.rzf_direct, RNG),
            "esn0_db must be a number",
        ),
        (
            lambda: simulate_mu_ber(P, 4, 10.0, 8, 2, 1.0, 2, 4, None, RNG),
            "precoder must be a function",
        ),
    ],
)
def test_afdm_refuses_what_cannot_work(fn, needle):
    with pytest.raises((ValueError, TypeError)) as e:
        fn()
    assert needle in str(e.value)


def test_afdm_propagates_nan_symbols():
    y = afdm.daft(np.array([1.0, NAN, 0.0, 0.0]), 0.1, 0.0)
    assert np.isnan(y).all()  # every output mixes every input


# ---------------------------------------------------------------- mup


def test_mup_base_equal_to_delta_is_refused():
    from tenfold.core.models import DIT_MODELS, DiT, DiTConfig
    from tenfold.mup import MuPConfig, parametrize_

    def dit(h):
        return DiT(DiTConfig(**{**DIT_MODELS["DiT-Digits/2"], "n_heads": h}))

    model, base = dit(4), dit(2)
    with pytest.raises(ValueError, match="same shapes"):
        parametrize_(model, MuPConfig(base_width=64), lr=1e-3, base=base, delta=dit(2))


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(lr=NAN), "lr must be a number"),
        (dict(lr=0.0), "lr must be > 0"),
        (dict(lr=1e-3, eps=0.0), "eps must be > 0"),
        (dict(lr=1e-3, betas=(0.9, 1.0)), "betas[1] must be in [0,1)"),
        (dict(lr=1e-3, betas=(0.9,)), "betas must be two numbers"),
        (dict(lr=1e-3, weight_decay=-1.0), "weight_decay must be >= 0"),
    ],
)
def test_mup_parametrize_bad_arguments(kw, needle):
    from tenfold.core.models import DIT_MODELS, DiT, DiTConfig
    from tenfold.mup import MuPConfig, parametrize_

    model = DiT(DiTConfig(**{**DIT_MODELS["DiT-Digits/2"], "n_heads": 4}))
    with pytest.raises(ValueError) as e:
        parametrize_(model, MuPConfig(base_width=64), **kw)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(base_width=0), "base_width must be >= 1"),
        (dict(base_width=64.5), "base_width must be an integer"),
        (dict(base_width=64, readout_mult=NAN), "readout_mult must be a number"),
        (dict(base_width=64, init_std=0.0), "init_std must be > 0"),
        (dict(base_width=64, vector_std=-1.0), "vector_std must be >= 0"),
        (dict(base_width=64, readout_zero_init="no"), "readout_zero_init must be true or false"),
    ],
)
def test_mup_config_bad_values(kw, needle):
    from tenfold.mup import MuPConfig

    with pytest.raises(ValueError) as e:
        MuPConfig(**kw)
    assert needle in str(e.value)


# ---------------------------------------------------------------- trainer and environment


def test_trainer_refuses_a_loss_that_is_not_a_tensor():
    t = Trainer(
        nn.Linear(2, 1),
        lambda m, b, c: 1.0,
        (torch.zeros(8, 2),),
        TrainConfig(steps=2, batch_size=4, progress=False),
    )
    with pytest.raises(TypeError, match="scalar tensor, got float"):
        t.fit()


def test_trainer_stops_on_non_finite_gradients_with_a_finite_loss():
    class Bad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            return g * NAN

    torch.manual_seed(0)
    m = nn.Linear(2, 1)
    t = Trainer(
        m,
        lambda m, b, c: Bad.apply(m(b[0])).pow(2).mean(),
        (torch.randn(8, 2),),
        TrainConfig(steps=3, batch_size=4, progress=False),
    )
    with pytest.raises(FloatingPointError, match="gradient norm is nan at step 0"):
        t.fit()


def test_trainer_checks_its_checkpoint_folder_at_construction(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="cannot create the checkpoint folder"):
        Trainer(
            nn.Linear(2, 1),
            lambda m, b, c: m(b[0]).sum(),
            (torch.zeros(8, 2),),
            TrainConfig(progress=False, batch_size=4),
            ckpt_dir=f,
        )


@pytest.mark.parametrize("env", ["abc", "0", "-2", "1.5"])
def test_a_bad_worker_count_in_the_environment_is_named(monkeypatch, env):
    from tenfold.core.sweep import default_workers

    monkeypatch.setenv("TENFOLD_WORKERS", env)
    with pytest.raises(ValueError, match="TENFOLD_WORKERS must be an integer >= 1"):
        default_workers()


def test_an_unwritable_cache_still_returns_what_was_built(monkeypatch, tmp_path, caplog):
    from tenfold.core.io import cached_state

    f = tmp_path / "cache-is-a-file"
    f.write_text("x")
    monkeypatch.setenv("TENFOLD_CACHE", str(f))
    out = cached_state("ns", {"a": 1}, lambda: {"w": torch.ones(2)})
    assert torch.equal(out["w"], torch.ones(2)) and "could not cache" in caplog.text


@pytest.mark.parametrize(
    "mask, exc, needle",
    [
        (torch.zeros(1, 2, 16, 15, dtype=torch.bool), ValueError, "does not broadcast"),
        (torch.zeros(16, 16, dtype=torch.long), TypeError, "bool or floating-point"),
        ("causal", TypeError, "bool or floating-point"),
    ],
)
def test_sageattn_bad_attn_mask(mask, exc, needle):
    q = torch.randn(1, 2, 16, 64)
    with pytest.raises(exc, match=needle):
        sageattn(q, q, q, attn_mask=mask)


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.5])
def test_run_experiment_refuses_a_seed_out_of_range(seed, tmp_path):
    from tenfold.core.experiment import ConfigError, run_experiment

    with pytest.raises(ConfigError, match="seed must be an integer"):
        run_experiment("afdm/ber-mobility", "quick", seed=seed, out=tmp_path)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- the rest of the method APIs


@pytest.mark.parametrize(
    "shapes, needle",
    [
        (((8, 16), (4, 16), (8, 5)), "need x (M, in), weight (out, in), dy (M, out)"),
        (((8, 16), (4, 15), (8, 4)), "need x (M, in)"),
        (((8,), (4, 16), (8, 4)), "x must have 2 dimensions"),
    ],
)
def test_gemm_sqnr_bad_shapes(shapes, needle):
    from tenfold.fallback import gemm_sqnr

    x, w, dy = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=None) as e:
        gemm_sqnr(x, w, dy, FallbackConfig())
    assert needle in str(e.value)


def test_gemm_sqnr_wants_a_config():
    from tenfold.fallback import gemm_sqnr

    with pytest.raises(TypeError, match="FallbackConfig"):
        gemm_sqnr(torch.randn(8, 16), torch.randn(4, 16), torch.randn(8, 4), None)


@pytest.mark.parametrize(
    "widths, values, needle",
    [
        ([64], [1.0], "two or more widths"),
        ([64, 128], [1.0], "one value each"),
        ([64, -128], [1.0, 2.0], "widths must be finite and > 0"),
    ],
)
def test_log_slope_bad_inputs(widths, values, needle):
    from tenfold.mup.coord import log_slope

    with pytest.raises(ValueError, match=needle):
        log_slope(widths, values)


def test_log_slope_of_a_non_finite_value_is_nan():
    from tenfold.mup.coord import log_slope

    assert math.isnan(log_slope([64, 128], [1.0, NAN]))


@pytest.mark.parametrize("widths", [[64, 64], [64, 0], [64, 96.5], [64]])
def test_coord_check_bad_widths(widths):
    from tenfold.mup.coord import coord_check

    with pytest.raises(ValueError, match="widths"):
        coord_check(lambda w: nn.Linear(w, 1), widths, lambda m, s: m.weight.sum(), lr=1e-3)


def test_attention_apply_and_routing_bad_arguments():
    from tenfold.attention import apply_, sdpa_routed

    with pytest.raises(TypeError, match="AttentionConfig"):
        apply_(nn.Linear(2, 2), "int8")
    with pytest.raises(ValueError, match="no attention module"):
        apply_(nn.Linear(2, 2), AttentionConfig())
    with (
        pytest.raises(ValueError, match="layout='bhtd'"),
        sdpa_routed(AttentionConfig(layout="bthd")),
    ):
        pass
