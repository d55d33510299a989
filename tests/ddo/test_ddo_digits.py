"""ddo/digits-diffusion and ddo/digits-ar: the token codec, guided sampling, bad input, and
both quick presets end to end (structure and measured values in range; the verdicts are
not pinned: at the quick scale the effects sit inside the FD's sampling noise)."""

import json
import math

import pytest
import torch

from tenfold.core.data import load_digits
from tenfold.core.experiment import ConfigError, make_config, run_experiment
from tenfold.core.models import LM, LMConfig
from tenfold.ddo.repro.digits import (
    DigitsARConfig,
    DigitsDDOConfig,
    sample_tokens,
    to_images,
    to_tokens,
)


def test_tokens_round_trip_the_17_grey_levels():
    d = load_digits("train", 8)
    t = to_tokens(d.images[:50], d.labels[:50])
    assert t.shape == (50, 65) and t.dtype == torch.int64
    assert torch.equal(t[:, 0], 17 + d.labels[:50])
    assert int(t[:, 1:].min()) >= 0 and int(t[:, 1:].max()) <= 16
    # sklearn's digits are integers 0..16: the codec is exact on them
    assert torch.allclose(to_images(t), d.images[:50], atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(3, 64, dtype=torch.long), r"\(N, 65\)"),
    (torch.full((3, 65), 17), r"\[0, 17\)"),
    (torch.full((3, 65), -1), r"\[0, 17\)"),
])  # fmt: skip
def test_to_images_rejects_what_is_not_a_digit(bad, match):
    with pytest.raises(ValueError, match=match):
        to_images(bad)


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_sampling_draws_pixels_only_and_is_seeded(scale):
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=28, block_size=65, n_layer=1, n_heads=1, head_dim=8)).eval()
    labels = torch.arange(12) % 10
    a = sample_tokens(lm, labels, scale, torch.Generator().manual_seed(3))
    b = sample_tokens(lm, labels, scale, torch.Generator().manual_seed(3))
    assert a.shape == (12, 65) and torch.equal(a, b)
    assert torch.equal(a[:, 0], 17 + labels)  # the class token kept
    assert int(a[:, 1:].max()) < 17  # a class token never drawn at a pixel position
    assert to_images(a).shape == (12, 1, 8, 8)


@pytest.mark.parametrize("cls", [DigitsDDOConfig, DigitsARConfig])
@pytest.mark.parametrize("over, match", [
    (dict(alpha=0.0), "alpha"),
    (dict(beta=-0.1), "beta"),
    (dict(cfg_scale=1.0), "cfg_scale"),
    (dict(fakes="sometimes"), "fakes"),
    (dict(seeds=(1, 1)), "must not repeat"),
    (dict(batch_size=2000), "batch_size"),
    (dict(eval_samples=10), "eval_samples"),
    (dict(draws=0), "draws"),
])  # fmt: skip
def test_digits_config_errors(cls, over, match):
    with pytest.raises(ConfigError, match=match):
        make_config(cls, over)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ddo/digits-diffusion", "ddo/digits-ar"])
def test_digits_quick(name, tmp_path):
    res, run_dir = run_experiment(name, "quick", out=tmp_path, progress=False)
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["figures"] == ["samples.png", "fd_rounds.png"]
    assert all((run_dir / f).is_file() for f in rec["figures"])
    keys = [c.key for c in res.claims]
    assert keys == ["fd-drops-unguided", "fd-drops-guided", "unguided-ddo-beats-guided-base",
                    "ddo-beats-more-mle", "round-under-1pct"]  # fmt: skip
    for c in res.claims[:4]:  # noise measured: the sampling spread of the base's FD
        assert math.isfinite(c.noise) and c.noise > 0, c.evidence()
    rows = res.tables["samples"]
    # the base at both guidance scales, the DDO model after its (one) round likewise
    assert {(r["seed"], r["round"], r["guidance"]) for r in rows} == {
        ("base", 0, 1.0), ("base", 0, 1.5), (0, 1, 1.0), (0, 1, 1.5)
    }  # fmt: skip
    for r in rows:
        assert math.isfinite(r["fd"]) and r["fd"] > 0
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and 0 <= r["class_acc"] <= 1
    ctl = res.tables["mle_control"]  # the max.-likelihood control, both draws, guidance 1
    assert [(r["seed"], r["guidance"], r["draw"]) for r in ctl] == [(0, 1.0, 0), (0, 1.0, 1)]
    assert all(0 <= r["best_step"] <= 100 and math.isfinite(r["fd"]) for r in ctl)
    (rnd,) = res.tables["rounds"]
    assert 0 <= rnd["best_step"] <= 100 and 0 <= rnd["disc_acc"] <= 1
    assert rnd["val_fd_best"] <= rnd["val_fd_ref"]  # the reference is the first candidate
    m = res.metrics
    assert m["ddo_step_s"] > 0 and m["pretrain_step_s"] > 0 and 0 < m["round_fraction"] < 10


@pytest.mark.slow
def test_grid_quick_and_its_resume(tmp_path):
    """The alpha/beta grid through the core sweep runner: every point scored, and a rerun
    reuses every finished point instead of training it again."""
    res, run_dir = run_experiment("ddo/grid", "quick", {"workers": 1}, out=tmp_path,
                                  progress=False)  # fmt: skip
    rows = res.tables["grid"]
    assert sorted((r["alpha"], r["beta"]) for r in rows) == [
        (0.5, 0.02), (0.5, 0.1), (2.0, 0.02), (2.0, 0.1)
    ]  # fmt: skip
    assert all(math.isfinite(r["fd"]) and 0 <= r["best_step"] <= 60 for r in rows)
    assert not any(r["reused"] for r in rows)
    assert (run_dir / "grid.png").is_file()
    (claim,) = res.claims
    assert math.isfinite(claim.noise) and claim.noise > 0
    again, _ = run_experiment("ddo/grid", "quick", {"workers": 1}, out=tmp_path, progress=False)
    assert all(r["reused"] for r in again.tables["grid"])
    assert [r["fd"] for r in again.tables["grid"]] == [r["fd"] for r in rows]


def test_grid_config_errors():
    from tenfold.ddo.repro.grid import DDOGridConfig

    with pytest.raises(ConfigError, match="alphas"):
        make_config(DDOGridConfig, {"alphas": (1.0, -1.0)})
    with pytest.raises(ConfigError, match="betas"):
        make_config(DDOGridConfig, {"betas": (0.1, 0.1)})
