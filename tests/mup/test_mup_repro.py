"""The muP reproductions end to end at their quick presets (the demo runs the same), their
claims' direction pinned, the sweep resumed, and config errors."""

import json

import pytest

from tenfold.core.experiment import ConfigError, make_config, run_experiment
from tenfold.mup.repro import CoordCheckConfig, LRTransferConfig


@pytest.mark.slow
def test_coord_check_quick(tmp_path):
    res, run_dir = run_experiment("mup/coord-check", "quick", out=tmp_path, progress=False)
    assert len(res.claims) == 4
    # measured at quick scale (4 widths, 3 seeds): every backbone flat under muP, growing
    # under SP; a change that breaks muP (or the check) flips these
    assert all(c.verdict.value == "holds" for c in res.claims), [c.measured for c in res.claims]
    for fam in ("dit", "uvit", "pixart", "mmdit"):
        assert (run_dir / f"coord_{fam}.png").is_file()
        assert res.metrics[f"{fam}_sp_max_slope"] > res.metrics[f"{fam}_mup_max_abs_slope"]


@pytest.mark.slow
def test_lr_transfer_quick_and_resume(tmp_path):
    res, run_dir = run_experiment("mup/lr-transfer", "quick", out=tmp_path, progress=False)
    assert len(res.claims) == 4
    rec = json.loads((run_dir / "result.json").read_text())
    assert {"lr_transfer_dit.png", "transfer_curve_dit.png"} <= set(rec["figures"])
    sweep = list((tmp_path / "mup" / "lr-transfer").glob("sweep-*/*.json"))
    assert len(sweep) == 3 * 6 * 2 + 2  # one file per point, plus the two transfer runs
    # quick-scale findings, pinned: the muP optimum moves <= 1 step and SP's more; the wide
    # muP model beats SP at AdamW 1e-4 (N > 1)
    a = res.claim("dit-lr-stable")
    c = res.claim("dit-speedup")
    assert a.verdict.value == "holds" and c.verdict.value == "holds", (a.measured, c.measured)
    assert res.metrics["dit_speedup_N"] > 1
    # rerun: every point is reused, nothing retrained, same numbers
    res2, _ = run_experiment("mup/lr-transfer", "quick", out=tmp_path, progress=False)
    assert res2.metrics["points_reused"] == res2.metrics["sweep_points"] == 38
    assert res2.metrics["dit_speedup_N"] == res.metrics["dit_speedup_N"]


@pytest.mark.parametrize(
    "values, msg",
    [
        ({"heads": (1, 2)}, "span less than 4x"),
        ({"heads": (2, 1, 8)}, "increasing head counts"),
        ({"log2_lrs": (-9.0, -8.0, -7.0)}, ">= 6 increasing values"),
        ({"backbones": ("dit", "unet")}, "unknown backbone 'unet'"),
        ({"steps": 0}, "steps must be >= 1"),
    ],
)
def test_lr_transfer_config_errors(values, msg):
    with pytest.raises((ConfigError, ValueError), match=msg):
        make_config(LRTransferConfig, values)


def test_coord_check_config_errors():
    with pytest.raises((ConfigError, ValueError), match="increasing head counts"):
        make_config(CoordCheckConfig, {"heads": (4,)})
