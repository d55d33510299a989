"""The one verdict helper (``judge`` / ``Claim.judge``): an effect must clear its margin by
more than its noise to hold, fall short by more than its noise to fail, and is inconclusive
otherwise; and the docs' result tables, which a test keeps equal to their result files."""

import json
import math

import pytest

from tenfold.core.experiment import Claim, Sense, Verdict, binomial_noise, judge, two_se
from tenfold.core.report import render_doc, sync_docs


@pytest.mark.parametrize(
    "effect, noise, margin, sense, want",
    [
        (2.0, 0.5, 1.0, "above", Verdict.HOLDS),  # band [1.5, 2.5] above 1
        (1.2, 0.5, 1.0, "above", Verdict.INCONCLUSIVE),  # band straddles the margin
        (0.2, 0.5, 1.0, "above", Verdict.FAILS),  # band [-0.3, 0.7] below 1
        (1.0, 0.0, 1.0, "above", Verdict.INCONCLUSIVE),  # exactly at the margin
        (0.3, 0.1, 1.0, "below", Verdict.HOLDS),
        (0.95, 0.1, 1.0, "below", Verdict.INCONCLUSIVE),
        (1.5, 0.1, 1.0, "below", Verdict.FAILS),
        (math.inf, 0.3, 1.0, "above", Verdict.HOLDS),  # a diverged run as an infinite gap
        (math.inf, 0.3, 1.0, "below", Verdict.FAILS),
        (math.nan, 0.1, 1.0, "above", Verdict.INCONCLUSIVE),  # NaN never decides
        (5.0, math.inf, 1.0, "above", Verdict.INCONCLUSIVE),  # unmeasured noise never decides
    ],
)
def test_judge(effect, noise, margin, sense, want):
    assert judge(effect, noise, margin, sense) is want


def test_judge_rejects_bad_noise_and_margin():
    with pytest.raises(ValueError, match="noise must be >= 0"):
        judge(1.0, -0.1, 0.0)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        judge(1.0, math.nan, 0.0)
    with pytest.raises(ValueError, match="margin must be a finite"):
        judge(1.0, 0.1, math.inf)
    with pytest.raises(ValueError):
        judge(1.0, 0.1, 0.0, "sideways")


def test_two_se_and_binomial_noise():
    assert two_se([1.0, 3.0]) == pytest.approx(2.0)  # two seeds: their full range
    assert two_se([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2 * math.sqrt(5 / 3) / 2)
    assert two_se([1.0]) == math.inf and two_se([1.0, math.nan]) == math.inf
    assert binomial_noise(0.5, 100) == pytest.approx(0.1)
    assert binomial_noise(1.0, 50) == pytest.approx(1 / 50)  # a perfect score still has noise
    with pytest.raises(ValueError):
        binomial_noise(0.5, 0)


def test_claim_judge_uses_the_values_spread():
    # per-seed effects 2.0 and 2.6: mean 2.3, noise = their range 0.6 -> band [1.7, 2.9]
    c = Claim.judge("speedup", "2.9x faster", source="abstract", values=[2.0, 2.6], margin=2.0)
    assert c.effect == pytest.approx(2.3) and c.noise == pytest.approx(0.6)
    assert c.verdict is Verdict.INCONCLUSIVE and c.values == (2.0, 2.6)
    # a separately measured noise floor wins when it is larger than the spread
    c = Claim.judge(
        "k", "s", source="ours", values=[3.0, 3.1], margin=2.0, noise=1.5, noise_from="floor"
    )
    assert c.noise == pytest.approx(1.5) and c.verdict is Verdict.INCONCLUSIVE
    assert "floor" in c.noise_from
    # all seeds diverged alike: an infinite gap with no spread decides
    c = Claim.judge("k", "s", source="ours", values=[math.inf, math.inf], margin=1.0)
    assert c.verdict is Verdict.HOLDS
    c = Claim.judge("k", "s", source="ours", values=[1.0, math.inf], margin=0.5)
    assert c.verdict is Verdict.INCONCLUSIVE  # one diverged, one not: no noise estimate


def test_claim_judge_demands_noise_source_and_key():
    with pytest.raises(ValueError, match="needs its noise"):
        Claim.judge("k", "s", source="ours", values=1.0, margin=0.0)
    with pytest.raises(ValueError, match="source must be 'ours'"):
        Claim.judge("k", "s", source="a blog", values=1.0, margin=0.0, noise=0.0, noise_from="x")
    with pytest.raises(ValueError, match="say how the noise"):
        Claim.judge("k", "s", source="ours", values=1.0, margin=0.0, noise=0.0)
    with pytest.raises(ValueError, match="claim key"):
        Claim.judge("Bad Key", "s", source="ours", values=[1, 2], margin=0.0)
    with pytest.raises(ValueError, match="no measured values"):
        Claim.judge("k", "s", source="ours", values=[], margin=0.0)
    with pytest.raises(TypeError):  # the verdict is never set by hand
        Claim("k", "s", "ours", 1.0, 0.0, 0.0, Sense.ABOVE, "", "", "x", verdict="holds")


def test_claim_evidence_line():
    c = Claim.judge(
        "gap", "within 1%", source="ours", values=0.3, margin=1.0, sense="below",
        noise=0.2, noise_from="seeds", unit="%",
    )  # fmt: skip
    assert c.evidence() == "0.3 +/- 0.2 % (needs < 1)"
    assert c.verdict is Verdict.HOLDS


def _result(tmp_path, effect=2.0):
    c = Claim.judge(
        "k", "it is big", source="abstract", values=effect, margin=1.0, noise=0.1,
        noise_from="mc", measured=f"big: {effect}",
    )  # fmt: skip
    from tenfold.core.experiment import _jsonable

    rec = {
        "name": "toy/exp", "command": "tenfold run toy/exp --preset full", "created": "2026-12-01T00:00:00",
        "wall_time_s": 1.0, "machine": {"device": "CPU (Test CPU, 2 cores)"}, "versions": {"torch": "x"},
        "claims": _jsonable([c]), "tables": {"rows": [{"a": 1, "b": 0.123456}]},
        "metrics": {"m": 0.5},
    }  # fmt: skip
    d = tmp_path / "results" / "toy" / "exp"
    d.mkdir(parents=True, exist_ok=True)
    (d / "result.json").write_text(json.dumps(rec))
    return tmp_path


def test_docs_blocks_regenerate_and_catch_hand_edits(tmp_path):
    results = _result(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    doc = docs / "toy.md"
    doc.write_text(
        "# toy\n\n<!-- results: results/toy/exp/result.json claims -->\n<!-- /results -->\n\n"
        "<!-- results: results/toy/exp/result.json table=rows -->\nstale\n<!-- /results -->\n"
    )
    assert sync_docs(docs, results, check=True) == [f"{doc}: differs from its result files"]
    assert sync_docs(docs, results) == [f"{doc}: regenerated"]
    text = doc.read_text()
    assert "**holds**" in text and "2 +/- 0.1 (needs > 1)" in text and "paper (abstract)" in text
    assert "| 1 | 0.1235 |" in text and "CPU (Test CPU, 2 cores)" in text
    assert sync_docs(docs, results, check=True) == []
    doc.write_text(text.replace("| 1 | 0.1235 |", "| 1 | 0.2000 |"))  # a hand edit
    assert sync_docs(docs, results, check=True) == [f"{doc}: differs from its result files"]
    sync_docs(docs, results)
    _result(tmp_path, effect=0.5)  # the result file changes: the doc is stale
    assert sync_docs(docs, results, check=True) == [f"{doc}: differs from its result files"]
    # a block whose file is missing is reported, and the doc's other blocks still regenerate
    doc.write_text(
        doc.read_text() + "<!-- results: results/toy/gone.json claims -->\n<!-- /results -->\n"
    )
    problems = sync_docs(docs, results)
    assert any("cannot read" in p for p in problems) and f"{doc}: regenerated" in problems
    assert "0.5 +/- 0.1" in doc.read_text()


def test_docs_csv_block_with_selection(tmp_path):
    (tmp_path / "bench.csv").write_text("machine,M,ms\nCPU x,64,1.5\nCPU x,128,2.5\n")
    text = "<!-- results: bench.csv csv cols=M,ms where=M:128 -->\n<!-- /results -->"
    out = render_doc(text, tmp_path)
    assert "| M | ms |" in out and "| 128 | 2.5 |" in out and "| 64 |" not in out
    with pytest.raises(ValueError, match="no column 'zz' to select on"):
        render_doc(text.replace("where=M", "where=zz"), tmp_path)


@pytest.mark.parametrize(
    "spec, msg",
    [
        ("results/toy/missing.json claims", "cannot read"),
        ("results/toy/exp/result.json table=nope", "has no table 'nope'"),
        ("results/toy/exp/result.json table=rows cols=a,zz", "has no column"),
        ("results/toy/exp/result.json metrics cols=zz", "has no metric"),
        ("results/toy/exp/result.json figures", "show 'claims'"),
        ("results/toy/exp/result.json", "give a result file and what"),
    ],
)
def test_docs_block_errors_name_the_problem(tmp_path, spec, msg):
    results = _result(tmp_path)
    with pytest.raises(ValueError, match=msg):
        render_doc(f"<!-- results: {spec} -->\n<!-- /results -->", results)


def test_committed_docs_agree_with_committed_results():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    stale = sync_docs(root / "docs", root, check=True)
    assert not stale, f"docs disagree with results/ (run `tenfold docs`): {stale}"


def test_committed_results_record_effect_noise_and_margin():
    from pathlib import Path

    from tenfold.core.experiment import judge

    root = Path(__file__).resolve().parents[2]
    files = sorted((root / "results").rglob("result.json"))
    for f in files:
        rec = json.loads(f.read_text())
        for c in rec["claims"]:
            where = f"{f.relative_to(root)}: {c.get('key')}"
            for k in ("statement", "source", "effect", "noise", "margin", "sense", "noise_from"):
                assert k in c, f"{where} has no {k}"

            def num(x):
                return float(x)  # JSON keeps inf / nan as strings

            # the recorded verdict is the helper's verdict on the recorded numbers
            got = judge(num(c["effect"]), num(c["noise"]), num(c["margin"]), c["sense"])
            assert got.value == c["verdict"], where


def test_report_shows_the_evidence(tmp_path):
    from tenfold.core.report import render_report

    root = _result(tmp_path)
    rec = json.loads((root / "results/toy/exp/result.json").read_text())
    rec |= {"method": "core", "needs_gpu": "kernel speed", "_dir": tmp_path}
    rec["machine"]["gpu"] = None
    page = render_report({"toy/exp": rec})
    for text in ("paper (abstract)", "2 +/- 0.1 (needs &gt; 1)", "noise: mc", "<b>CPU</b>",
                 "needs a GPU: kernel speed", "big: 2.0"):  # fmt: skip
        assert text in page, text
    old = {**rec, "claims": [{"key": "k", "paper": "old", "measured": "m", "verdict": "holds"}]}
    page = render_report({"toy/exp": old})  # a result file from before the helper still renders
    assert "older than the verdict helper" in page


def test_docs_command(tmp_path, capsys):
    from tenfold.cli import main

    assert main(["docs", "--root", str(tmp_path)]) == 2  # no docs folder: a usage error
    assert "no docs folder" in capsys.readouterr().err
    root = _result(tmp_path)
    (root / "docs").mkdir()
    doc = root / "docs" / "toy.md"
    doc.write_text("<!-- results: results/toy/exp/result.json claims -->\n<!-- /results -->\n")
    assert main(["docs", "--check", "--root", str(root)]) == 1  # stale: the check fails
    assert "differs from its result files" in capsys.readouterr().err
    assert main(["docs", "--root", str(root)]) == 0
    assert main(["docs", "--check", "--root", str(root)]) == 0
    assert "**holds**" in doc.read_text()
