"""The shared Triton helpers: the architecture the launch rules take, and the argument checks
of the ahead-of-time compile and its command line (the compiles themselves are in
tests/attention/test_attention_aot.py and tests/fallback/test_fallback_aot.py)."""

import os
import subprocess
import sys

import pytest
import torch

from tenfold.core.triton_util import aot_compile, cuda_arch


def test_cuda_arch_is_hopper_off_the_gpu():
    assert cuda_arch(torch.zeros(2)) == 90


def test_aot_compile_refuses_arguments_the_kernel_does_not_have():
    pytest.importorskip("triton")
    from tenfold.fallback import _triton as T

    with pytest.raises(ValueError, match=r"quant_kernel has no arguments \['rows'\]"):
        aot_compile(T.quant_kernel, {"BR": 32, "BC": 32}, {}, args={"rows": 64})


def _cli(*argv, interpret=False):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "tenfold.core.triton_util", *argv],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "argv, interpret, message",
    [
        ((), False, "name the kernel modules"),
        (("--csv",), False, "--csv needs a file name"),
        (("tenfold.fallback.kernels",), True, "unset TRITON_INTERPRET"),
    ],
)
def test_aot_command_line_says_what_is_missing(argv, interpret, message):
    pytest.importorskip("triton")
    p = _cli(*argv, interpret=interpret)
    assert p.returncode == 2
    assert message in p.stderr
