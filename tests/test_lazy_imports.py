"""``import tenfold`` and its methods never import Triton (kernels load on first use)."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["tenfold.cli", "tenfold.fallback", "tenfold.attention"])
def test_importing_a_method_does_not_import_triton(module):
    code = f"import sys, {module}; print('triton' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ}
    )
    assert out.stdout.strip() == "False", out.stderr
