"""Self-play rounds on the core Trainer: resumable bit-identically, reference refresh, best
checkpoint, logged discriminator statistics, stale folders refused, bad settings refused."""

import copy
import json

import pytest
import torch

from tenfold.core.diffusion import EDMPrecond
from tenfold.core.io import CheckpointError
from tenfold.core.models import LM, LMConfig, MLPDenoiser, MLPDenoiserConfig
from tenfold.core.validate import ConfigError
from tenfold.ddo import DDOConfig, DiffusionFakes, SelfPlayConfig, TokenFakes, self_play


def _diffusion(seed=0, classes=0):
    torch.manual_seed(seed)
    cfg = MLPDenoiserConfig(width=16, depth=1, num_classes=classes,
                            class_dropout_prob=0.1 if classes else 0.0)  # fmt: skip
    return EDMPrecond(MLPDenoiser(cfg))


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 2, generator=g) * 0.3 + 1.0


def _metric(m):  # deterministic: distance of the sample mean to the data mean
    x = DiffusionFakes(4)(m, torch.zeros(64, 2), None, torch.Generator().manual_seed(1))
    return float((x.mean(0) - 1.0).norm())


SP = dict(rounds=2, steps=6, batch_size=16, lr=1e-3, eval_every=2, progress=False)


def _equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_diffusion_rounds_resume_bit_identically(tmp_path):
    x = _data()
    ddo, sp = DDOConfig(beta=0.5), SelfPlayConfig(**SP)
    full = _diffusion()
    recs = self_play(full, x, DiffusionFakes(4), _metric, ddo, sp, tmp_path / "a")
    assert [r.round for r in recs] == [1, 2]
    part = _diffusion()
    done = self_play(part, x, DiffusionFakes(4), _metric, ddo, sp, tmp_path / "b",
                     stop_after=(2, 3))  # fmt: skip
    assert [r.round for r in done] == [1]  # stopped inside round 2
    assert (tmp_path / "b/round1/round.json").exists()
    again = _diffusion()
    recs_b = self_play(again, x, DiffusionFakes(4), _metric, ddo, sp, tmp_path / "b")
    assert _equal(full, again)
    assert [r.best_metric for r in recs] == [r.best_metric for r in recs_b]
    assert [h["loss"] for h in recs[1].history] == [h["loss"] for h in recs_b[1].history]


def test_rounds_log_accuracy_and_margin_and_keep_the_best_checkpoint(tmp_path):
    x = _data()
    model = _diffusion()
    base = copy.deepcopy(model)
    recs = self_play(model, x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5),
                     SelfPlayConfig(**SP), tmp_path)  # fmt: skip
    r1, r2 = recs
    assert all({"acc", "margin", "loss"} <= set(h) for h in r1.history)
    assert all(0.0 <= h["acc"] <= 1.0 for h in r1.history)
    assert r1.base_metric == pytest.approx(_metric(base))
    assert r1.best_metric == min([r1.base_metric] + [e["metric"] for e in r1.evals])
    # round 2's reference is round 1's best checkpoint
    assert r2.base_metric == pytest.approx(r1.best_metric)
    assert _metric(model) == pytest.approx(r2.best_metric)
    rec = json.loads((tmp_path / "round2/round.json").read_text())
    assert rec["best_step"] == r2.best_step


def test_more_rounds_continue_a_finished_run(tmp_path):
    x = _data()
    one = _diffusion()
    self_play(one, x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5),
              SelfPlayConfig(**{**SP, "rounds": 1}), tmp_path / "a")  # fmt: skip
    recs = self_play(one, x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5),
                     SelfPlayConfig(**SP), tmp_path / "a")  # fmt: skip
    two = _diffusion()
    self_play(two, x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5), SelfPlayConfig(**SP),
              tmp_path / "b")  # fmt: skip
    assert len(recs) == 2 and _equal(one, two)


def test_ar_rounds_with_online_fakes_and_label_dropout_resume(tmp_path):
    """A class-conditional LM: [class token, 4 tokens]; the null class is token 3."""
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=8, block_size=5, n_layer=1, n_heads=1, head_dim=4))
    g = torch.Generator().manual_seed(0)
    cls = torch.randint(3, (48, 1), generator=g)
    toks = torch.cat([cls, 4 + (cls + torch.randint(2, (48, 4), generator=g)) % 4], 1)

    def metric(m):
        out = TokenFakes(1)(m, toks[:16], None, torch.Generator().manual_seed(2))
        return float((out[:, 1:] >= 4).float().mean())

    sp = SelfPlayConfig(**{**SP, "fakes": "online", "label_dropout": 0.3, "mode": "max"})
    a = copy.deepcopy(lm)
    recs = self_play(a, toks, TokenFakes(1), metric, DDOConfig(beta=0.2), sp, tmp_path / "a",
                     null_label=3)  # fmt: skip
    assert recs[0].best_metric == max([recs[0].base_metric] + [e["metric"] for e in recs[0].evals])
    b = copy.deepcopy(lm)
    self_play(b, toks, TokenFakes(1), metric, DDOConfig(beta=0.2), sp, tmp_path / "b",
              null_label=3, stop_after=(1, 3))  # fmt: skip
    self_play(b, toks, TokenFakes(1), metric, DDOConfig(beta=0.2), sp, tmp_path / "b",
              null_label=3)  # fmt: skip
    assert _equal(a, b)


def test_a_folder_of_another_run_is_refused(tmp_path):
    x = _data()
    self_play(_diffusion(), x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5),
              SelfPlayConfig(**{**SP, "rounds": 1}), tmp_path)  # fmt: skip
    with pytest.raises(CheckpointError, match="made by another self-play run"):
        self_play(_diffusion(), x, DiffusionFakes(4), _metric, DDOConfig(beta=0.1),
                  SelfPlayConfig(**{**SP, "rounds": 1}), tmp_path)  # fmt: skip
    wider = EDMPrecond(MLPDenoiser(MLPDenoiserConfig(width=32, depth=1)))
    with pytest.raises(CheckpointError, match="made by another self-play run"):
        self_play(wider, x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5),
                  SelfPlayConfig(**{**SP, "rounds": 1}), tmp_path)  # fmt: skip


def test_damaged_round_files_are_refused_or_redone(tmp_path):
    x = _data()
    sp = SelfPlayConfig(**{**SP, "rounds": 1})
    self_play(_diffusion(), x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5), sp, tmp_path)
    (tmp_path / "round1/round.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="round.json: not a readable round record"):
        self_play(_diffusion(), x, DiffusionFakes(4), _metric, DDOConfig(beta=0.5), sp, tmp_path)


@pytest.mark.parametrize("kw", [{"rounds": 0}, {"steps": 0}, {"lr": 0.0}, {"fakes": "live"},
                                {"mode": "best"}, {"label_dropout": 1.0}, {"eval_every": 0}])  # fmt: skip
def test_selfplay_config_rejects_bad_values(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        SelfPlayConfig(**kw)


def test_bad_calls_are_refused(tmp_path):
    x = _data()
    m = _diffusion()
    with pytest.raises(ValueError, match="label_dropout > 0 needs labelled data"):
        self_play(m, x, DiffusionFakes(4), _metric, DDOConfig(),
                  SelfPlayConfig(**{**SP, "label_dropout": 0.1}), tmp_path)  # fmt: skip
    with pytest.raises(ValueError, match="batch_size=16 is over the 8 real samples"):
        self_play(m, x[:8], DiffusionFakes(4), _metric, DDOConfig(), SelfPlayConfig(**SP), tmp_path)
    with pytest.raises(ValueError, match="labels for 64 real samples"):
        self_play(m, (x, torch.zeros(3, dtype=torch.long)), DiffusionFakes(4), _metric,
                  DDOConfig(), SelfPlayConfig(**SP), tmp_path)  # fmt: skip
    with pytest.raises(TypeError, match="DDOConfig and a SelfPlayConfig"):
        self_play(m, x, DiffusionFakes(4), _metric, {"alpha": 1}, SelfPlayConfig(**SP), tmp_path)

    def bad_fakes(ref, like, labels, g):
        return torch.zeros(like.shape[0], 3)

    with pytest.raises(ValueError, match="the fake generator returned"):
        self_play(m, x, bad_fakes, _metric, DDOConfig(), SelfPlayConfig(**SP), tmp_path / "c")

    def nan_metric(_):
        return float("nan")

    with pytest.raises(FloatingPointError, match="validation metric .*is nan"):
        self_play(_diffusion(), x, DiffusionFakes(4), nan_metric, DDOConfig(),
                  SelfPlayConfig(**SP), tmp_path / "d")  # fmt: skip


def test_docs_usage_block_runs(tmp_path, monkeypatch, capsys):
    """The usage block of docs/ddo.md runs as written (in ten lines or so)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "ddo.md").read_text()
    code = re.findall(r"```python\n(.*?)```", doc, flags=re.S)[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 13
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/ddo.md", "exec"), {})
    out = capsys.readouterr().out.strip()
    assert out.startswith("[(1, ") and (tmp_path / "ddo-runs/round2/round.json").is_file()


def test_a_round_that_finds_nothing_better_keeps_the_reference(tmp_path):
    x = _data()
    model = _diffusion()
    base = copy.deepcopy(model)

    def prefers_the_start(m):  # distance to the starting weights: nothing beats step 0
        return sum(float((a - b).abs().sum()) for a, b in zip(m.parameters(), base.parameters()))

    recs = self_play(model, x, DiffusionFakes(4), prefers_the_start, DDOConfig(beta=0.5),
                     SelfPlayConfig(**{**SP, "rounds": 1}), tmp_path)  # fmt: skip
    assert recs[0].best_step == 0 and recs[0].best_metric == 0.0
    assert _equal(model, base)
