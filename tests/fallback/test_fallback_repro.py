"""The fallback reproductions at their quick presets (the demo runs the same), their claims'
direction pinned, the runs resumed, and config errors."""

import json
import math

import pytest

from tenfold.core.experiment import ConfigError, make_config, run_experiment
from tenfold.fallback.repro import FallbackRunConfig, scheme_config


@pytest.mark.slow
@pytest.mark.python_docs
def test_pretrain_quick_and_resume(tmp_path):
    res, run_dir = run_experiment("fallback/pretrain", "quick", out=tmp_path, progress=False)
    assert len(res.claims) == 4
    rec = json.loads((run_dir / "result.json").read_text())
    assert {"pretrain_loss.png", "pretrain_fallback_rate.png", "pretrain_outliers.png"} <= set(
        rec["figures"]
    )
    # quick-scale findings, pinned where they clear the noise: fallback stays rare. At 150
    # steps the seed-to-seed noise of full precision (2 seeds) is larger than the 1% margin,
    # so "within 1%" is inconclusive; what is robust is that fallback's gap sits well inside
    # that noise and that the noise was measured (finite)
    assert res.claim("fallback-rare").verdict.value == "holds", res.claim("fallback-rare").measured
    fb = res.claim("fallback-matches-full")
    assert math.isfinite(fb.noise) and fb.noise > 0 and fb.effect < fb.noise, fb.evidence()
    assert len(res.metrics["swiglu_full_val_loss_seeds"]) == 2
    assert 0 < res.metrics["fallback_rate"] < 0.05
    assert res.metrics["swiglu_full_val_loss"] < 7.0  # learned something: ln(2048) = 7.6
    sq = next(v for k, v in res.tables.items() if k.startswith("GEMM SQNR"))
    assert len(sq) == 2 * 6 + 2 * 5  # 2 layers of SwiGLU (6 linears) and of GELU (5)
    assert res.metrics["swiglu_int8_block_min_sqnr_db"] > 15
    layers = res.tables["fallback by layer (last eval window)"]
    assert len(layers) == 2 * 6
    assert res.metrics["runs"] == 8 and res.metrics["runs_reused"] == 0  # 6 + 2 noise seeds
    # rerun: every run is reused from the experiment's runs/ folder, same numbers
    res2, _ = run_experiment("fallback/pretrain", "quick", out=tmp_path, progress=False)
    assert res2.metrics["runs_reused"] == 8
    assert {k: v for k, v in res2.metrics.items() if k != "runs_reused"} == {
        k: v for k, v in res.metrics.items() if k != "runs_reused"
    }
    # a changed setting reruns only what it changes: one more scheme, one more run
    res3, _ = run_experiment(
        "fallback/pretrain",
        "quick",
        out=tmp_path,
        progress=False,
        overrides={"alternatives": ("fallback:topk:0.05",)},
    )
    assert res3.metrics["runs"] == 9 and res3.metrics["runs_reused"] == 8


@pytest.mark.slow
@pytest.mark.python_docs
def test_finetune_quick(tmp_path):
    res, _ = run_experiment("fallback/finetune", "quick", out=tmp_path, progress=False)
    fb = res.claim("fallback-matches-full")
    assert fb.verdict.value == "holds", fb.measured
    rows = res.tables["schemes"]
    before = float(rows[0]["val before fine-tune"])
    full = next(r for r in rows if r["scheme"].startswith("full"))
    assert float(full["final val loss"]) < before  # fine-tuning on the new domain helped


@pytest.mark.parametrize(
    "values, msg",
    [
        ({"schemes": ("int8_block",)}, "must include 'full'"),
        ({"schemes": ("full", "int4")}, "unknown scheme"),
        ({"alternatives": ("fallback:median:3",)}, "FallbackConfig.rule must be one of"),
        ({"block": (24, 32)}, "block sides must be one of 32, 64, 128"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_config_errors(values, msg):
    with pytest.raises((ConfigError, ValueError), match=msg):
        make_config(FallbackRunConfig, values)


def test_scheme_names():
    assert scheme_config("full", (32, 32), "relative", 8.0) is None
    c = scheme_config("fallback:crest:12", (32, 32), "relative", 8.0)
    assert c.rule.value == "crest" and c.threshold == 12.0
    assert scheme_config("int8_tensor", (32, 32), "crest", 3.0).granularity.value == "tensor"
