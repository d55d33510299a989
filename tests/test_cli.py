import os
import subprocess
import sys

import pytest

from tenfold.cli import main


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "tenfold", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        (
            ["run", "core/dit-digit"],
            "unknown experiment 'core/dit-digit' (did you mean core/dit-digits",
        ),
        (
            ["run", "core/dit-digits", "--set", "stepz=3"],
            "unknown field 'stepz' for DigitsDiffusionConfig (did you mean steps?)",
        ),
        (["run", "core/dit-digits", "--set", "steps=many"], "steps takes an integer, got 'many'"),
        (
            ["run", "core/dit-digits", "--set", "steps=0"],
            "core/dit-digits: DigitsDiffusionConfig.steps must be >= 1, got 0",
        ),
        (
            ["run", "core/dit-digits", "--set", "image_size=12"],
            "image_size must be one of 8, 16, got 12",
        ),
        (["run", "core/dit-digits", "--preset", "huge"], "unknown preset 'huge'"),
        (["run", "all", "--set", "steps=3"], "--set applies to one experiment"),
        (["report", "no-such-runs-dir"], "no runs folder"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "core/dit-digits", "--seed", "x"], "invalid int value"),
    ],
)
def test_user_errors_exit_2_with_one_clear_line(args, needle, tmp_path):
    p = (
        run_cli(*args, "--out", str(tmp_path))
        if args[0] == "run" and "--seed" not in args
        else run_cli(*args, cwd=tmp_path)
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert needle in lines[0]
    assert not any(tmp_path.rglob("result.json"))


def test_list_and_info(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "core/dit-digits" in out and "not implemented yet" in out and "afdm" in out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "gpu" in out and "triton" in out
