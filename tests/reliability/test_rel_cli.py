"""The command line under careless and hostile use: every user error exits with status 2 and
one line that names the problem (no traceback), and nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tenfold.cli import main


def _run(capsys, *args):
    try:
        rc = main(list(args))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _assert_usage_error(rc, err, needle):
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0], err


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["run", "core/dit-digits", "--set", "cfg_scale=nan"],
            "cfg_scale must be a number, got nan",
        ),
        (["run", "core/dit-digits", "--set", "lr=inf"], "lr must be finite"),
        (["run", "core/dit-digits", "--set", "lr=-1"], "lr must be > 0"),
        (["run", "core/dit-digits", "--set", "steps=1e400"], "steps takes an integer"),
        (
            ["run", "core/dit-digits", "--set", "batch_size=1000000000"],
            "batch_size must be in [1,1438]",
        ),
        (["run", "core/dit-digits", "--set", "ema_decay=1"], "ema_decay must be in (0,1)"),
        (["run", "core/dit-digits", "--set", "backbone=resnet"], "backbone"),
        (["run", "core/dit-digits", "--set", "steps"], "--set takes key=value"),
        (["run", "core/dit-digits", "--set", "=3"], "--set takes key=value"),
        (["run", "core/backbones-digits", "--set", "backbones="], "backbones must not be empty"),
        (["run", "core/backbones-digits", "--set", "backbones=dit,gan"], "gan"),
        (["run", "afdm/ber-mobility", "--set", "subcarrier_hz=0"], "subcarrier_hz must be > 0"),
        (["run", "afdm/ber-mobility", "--set", "carrier_hz=1e308"], "overflows"),
        (["run", "afdm/ber-mobility", "--set", "qam=8"], "qam must be one of 4, 16, 64"),
        (["run", "afdm/ber-mobility", "--set", "N=12.5"], "N takes an integer"),
        (["run", "afdm/ber-mobility", "--set", "esn0_db=1,nan"], "esn0_db[1] must be a number"),
        (["run", "afdm/xlmimo-rka", "--set", "antennas=2"], "antennas >= users"),
        (["run", "afdm/xlmimo-rka", "--set", "target_ber=0.7"], "target_ber must be in (0,0.5)"),
        (["run", "mup/lr-transfer", "--set", "heads=1"], "heads"),
        (["run", "mup/coord-check", "--set", "log2_lr=nan"], "log2_lr must be a number"),
        (["run", "mup/coord-check", "--set", "backbones=dit,dit"], "must not repeat"),
        (["run", "attention/accuracy", "--set", "head_dim=48"], "multiple of 32"),
        (["run", "attention/accuracy", "--set", "sources=dit,audio"], "sources"),
        (["run", "attention/train-8bit", "--set", "finetune_lr=0"], "finetune_lr must be > 0"),
        (["run", "fallback/pretrain", "--set", "schemes=int8_block"], "include 'full'"),
        (["run", "fallback/pretrain", "--set", "rule=median"], "rule"),
        (["run", "fallback/pretrain", "--set", "block=32"], "block takes 2 comma-separated values"),
        (["run", "fallback/finetune", "--set", "rare=0"], "rare must be in (0,1)"),
        (["run", "core/dit-digits", "--seed", "1.5"], "invalid int value"),
        (["run", "core/dit-digits", "--preset", ""], "unknown preset ''"),
        (["run", ""], "unknown experiment ''"),
        (["run", "../../etc/passwd"], "unknown experiment"),
        (["report", "-o"], "expected one argument"),
        (["docs", "--root", "/nonexistent/place"], "no docs folder"),
        (["run"], "the following arguments are required: name"),
        ([], "the following arguments are required"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, tmp_path, args, needle):
    if args[:1] == ["run"] and len(args) > 1:
        args = [*args, "--out", str(tmp_path / "runs")]
    rc, out, err = _run(capsys, *args)
    _assert_usage_error(rc, err, needle)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*"))


@pytest.mark.parametrize("where", ["file", "under-file", "dev-null"])
def test_run_out_that_cannot_hold_runs_is_a_usage_error(capsys, tmp_path, where):
    f = tmp_path / "f"
    f.write_text("keep me")
    out = {"file": f, "under-file": f / "x", "dev-null": "/dev/null/runs"}[where]
    rc, _, err = _run(capsys, "run", "afdm/ber-mobility", "--out", str(out))
    _assert_usage_error(rc, err, "a file is in the way")
    assert f.read_text() == "keep me"


def test_report_output_at_a_file_is_a_usage_error(capsys, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "out.html").write_text("mine")
    rc, _, err = _run(capsys, "report", str(tmp_path / "runs"), "-o", str(tmp_path / "out.html"))
    _assert_usage_error(rc, err, "cannot write the report")
    assert (tmp_path / "out.html").read_text() == "mine"


def test_report_on_a_file_instead_of_a_folder(capsys, tmp_path):
    (tmp_path / "r.json").write_text("{}")
    rc, _, err = _run(capsys, "report", str(tmp_path / "r.json"))
    _assert_usage_error(rc, err, "no runs folder")


def test_report_with_malformed_results_still_writes_and_warns(capsys, tmp_path):
    d = tmp_path / "runs" / "a" / "1"
    d.mkdir(parents=True)
    (d / "result.json").write_text(
        json.dumps({"name": "core/x", "created": "t", "claims": "holds"})
    )
    rc, out, err = _run(capsys, "report", str(tmp_path / "runs"), "-o", str(tmp_path / "rep"))
    assert rc == 0 and "wrote" in out
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "unreadable result files" in page and "must be a JSON array" in page


def test_docs_check_on_an_empty_docs_folder_is_clean(capsys, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "<!-- results: results/x.json claims -->\nold\n<!-- /results -->\n"
    )
    rc, _, err = _run(capsys, "docs", "--check", "--root", str(tmp_path))
    assert rc == 1 and "cannot read" in err and "Traceback" not in err


def test_a_real_subprocess_usage_error_has_no_traceback(tmp_path):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tenfold",
            "run",
            "core/dit-digits",
            "--set",
            "cfg_scale=nan",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "cfg_scale must be a number, got nan" in p.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_out_of_range_is_a_usage_error(capsys, tmp_path, seed):
    rc, _, err = _run(capsys, "run", "afdm/ber-mobility", "--seed", seed, "--out", str(tmp_path))
    _assert_usage_error(rc, err, "--seed must be in [0, 2^63)")
