"""The requant reproductions at their quick presets (the demo runs the same), with the
verdicts pinned that clear their margin by far on any CPU."""

import json

import pytest

from tenfold.core.experiment import ConfigError, make_config, run_experiment
from tenfold.requant.repro.sensitivity import SensitivityConfig


@pytest.mark.slow
@pytest.mark.python_docs
def test_sensitivity_quick(tmp_path):
    res, run_dir = run_experiment("requant/sensitivity", "quick", out=tmp_path, progress=False)
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["figures"] == ["path.png"] and (run_dir / "path.png").is_file()
    # PQI at N = 16 lands within 1e-3 of the exact change (measured ~1e-4; margin 5 %)
    assert res.claim("pqi-accurate").verdict.value == "holds", res.claim("pqi-accurate").evidence()
    # the top 5.25 % of weights carry ~35 % of the summed |PQI| (margin 15.75 %)
    assert res.claim("sensitivity-sparse").verdict.value == "holds"
    rows = {r["metric"]: r for r in res.tables["metrics"]}
    assert set(rows) == {"exact", "taylor1", "taylor2", "fisher", "pqi4", "pqi8", "pqi16"}
    assert rows["exact"]["dF"] > 0
    # PQI's error shrinks as N grows (midpoint rule)
    errs = [abs(rows[f"pqi{n}"]["ratio_to_exact"] - 1) for n in (4, 8, 16)]
    assert errs[0] > errs[2]
    path = res.tables["path"]
    assert [p["lambda"] for p in path] == [1e-3, 1e-2, 0.1, 1.0]
    assert path[-1]["dF"] == pytest.approx(res.tables["metrics"][0]["per_subset"][0], rel=1e-6)


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(subsets=1), "subsets must be in"),
        (dict(points=(8, 4)), "increasing"),
        (dict(lambdas=(0.0, 1.0)), "lambdas"),
        (dict(bits=1), "bits"),
    ],
)
def test_sensitivity_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        make_config(SensitivityConfig, over)
