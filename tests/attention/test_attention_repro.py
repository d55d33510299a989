"""The attention reproductions at their quick presets (the demo runs the same), their
claims' direction pinned where the quick scale settles it, and config errors."""

import pytest

from tenfold.attention import _ref as R
from tenfold.attention.repro import (
    AccuracyConfig,
    Train8bitConfig,
    backward_accuracy,
    forward_accuracy,
    synthetic_outliers,
)
from tenfold.core.experiment import ConfigError, make_config, run_experiment


@pytest.mark.slow
@pytest.mark.python_docs
def test_accuracy_quick(tmp_path):
    res, run_dir = run_experiment("attention/accuracy", "quick", out=tmp_path, progress=False)
    assert len(res.claims) == 6
    verdict = {c.key: c.verdict.value for c in res.claims}
    # settled at quick scale on every source: NVFP4 beats MXFP4 and the 8-bit inference path
    # reaches cos-sim 0.999. The smoothing verdict is not pinned: on the real LM's attention
    # none, K and Q+K tie within 1e-4 and the verdict flips with the CPU (measured "fails" on
    # an AMD EPYC with the code before and after the house-v2 redesign); what holds with
    # margin is that smoothing K removes most of the error of the outlier input.
    assert verdict["nvfp4-beats-mxfp4"] == "holds"
    assert verdict["int8-plug-and-play"] == "holds"
    abl = {r["setting"]: r for r in res.tables["ablations (cos-sim vs float64)"]}
    out = "synthetic, outliers"
    none, k = float(abl["NVFP4, no smoothing"][out]), float(abl["NVFP4, smooth K"][out])
    assert 1 - k < 0.7 * (1 - none), (none, k)  # measured 0.9900 -> 0.9948
    for src in ("dit", "lm"):  # real captured attention: 8-bit is near-lossless, FP4 is not
        assert res.metrics[f"{src}_qk_int8_pv_fp8_cos"] > 0.999
        assert res.metrics[f"{src}_fp4_nvfp4_cos"] < res.metrics[f"{src}_qk_int8_pv_fp8_cos"]
        assert res.metrics[f"{src}_int8_train_O_cos"] > 0.999
    assert {"variants.png", "ablations.png"} <= set(res.figures)
    assert (run_dir / "result.json").exists()


def test_sagebwd_on_outlier_inputs_loses_most_in_dq_dk():
    # the paper's pattern (O 0.997, dV 0.999 vs dQ 0.966, dK 0.954) on synthetic outliers
    cfg = AccuracyConfig(synthetic_tokens=256)
    calls = synthetic_outliers(cfg, 0)
    b = backward_accuracy(calls, R.VARIANTS["int8_train"])
    assert min(b["O"], b["dV"]) > 0.999 and max(b["dQ"], b["dK"]) < 0.99
    f = forward_accuracy(calls, R.VARIANTS["qk_int8_pv_fp8"])
    assert f["cos"] > 0.999 and f["min_cos"] == f["cos"]  # one layer


@pytest.mark.slow
@pytest.mark.python_docs
def test_train_8bit_quick(tmp_path):
    res, _ = run_experiment("attention/train-8bit", "quick", out=tmp_path, progress=False)
    ft = res.claim("finetune-lossless")
    assert ft.verdict.value == "holds", ft.measured
    assert res.metrics["pretrain_full_val_loss"] < 7.0  # learned something: ln(2048) = 7.6
    assert res.metrics["pretrain_int8_train_val_loss"] < 7.0
    assert res.metrics["runs"] == 4
    rows = res.tables["runs"]
    ftf = next(r for r in rows if r["phase"] == "finetune" and r["attention"] == "full")
    assert float(ftf["final val loss"]) < float(ftf["val before"])


@pytest.mark.parametrize(
    "cls, values, msg",
    [
        (AccuracyConfig, {"head_dim": 48}, "multiple of 32"),
        (AccuracyConfig, {"sources": ("video",)}, "sources must be among"),
        (AccuracyConfig, {"dit_patch": 3}, "dit_patch must divide 16"),
        (Train8bitConfig, {"finetune_steps": 0}, "finetune_steps"),
        (Train8bitConfig, {"tolerance": 0.0}, "tolerance"),
    ],
)
def test_config_errors(cls, values, msg):
    with pytest.raises(ConfigError, match=msg):
        make_config(cls, values)
