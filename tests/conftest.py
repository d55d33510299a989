import os

import pytest
import torch

# Triton kernels are tested on the CPU through the interpreter. Triton reads TRITON_INTERPRET
# when it is first imported (its own tl.* helpers are jitted then), so it is set here, before
# any test or torch.compile imports triton. With a GPU the kernels run on it for real.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cache(tmp_path_factory):
    """Tests train their own digits classifier into a fresh cache: nothing from ~/.cache.
    Under pytest-xdist the workers share one such cache (its writes are atomic), so what one
    worker trained the others reuse."""
    old = os.environ.get("TENFOLD_CACHE")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = tmp_path_factory.getbasetemp().parent / "tenfold-cache"
        shared.mkdir(exist_ok=True)
        os.environ["TENFOLD_CACHE"] = str(shared)
    else:
        os.environ["TENFOLD_CACHE"] = str(tmp_path_factory.mktemp("tenfold-cache"))
    yield
    if old is None:
        os.environ.pop("TENFOLD_CACHE", None)
    else:
        os.environ["TENFOLD_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``python_docs`` need the Python documentation corpus (Debian's
    python3-doc); where it is missing they are skipped with the reason and the fix."""
    from tenfold.core.data import _python_docs_dir

    if _python_docs_dir() is not None:
        return
    skip = pytest.mark.skip(
        reason="Debian's python3-doc is not installed (make install does it when run as root)"
    )
    for item in items:
        if "python_docs" in item.keywords:
            item.add_marker(skip)


def aot_report(module: str, csv_path=None) -> list[dict]:
    """Compile ``module``'s Triton kernels (its ``aot_specs()``) for their GPU architectures
    in a subprocess without TRITON_INTERPRET (interpreted kernels cannot be compiled), with
    the ptxas of the Triton wheel; skip with the reason where that is impossible. With
    ``csv_path`` the command also writes its CSV there."""
    import importlib.util
    import json
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    probe = subprocess.run(
        [sys.executable, "-c", "from tenfold.core.triton_util import _ptxas; print(_ptxas(90) or '')"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if not probe.stdout.strip():
        pytest.skip("the Triton wheel has no ptxas (or no NVIDIA backend) on this machine")
    p = subprocess.run(
        [sys.executable, "-m", "tenfold.core.triton_util", module]
        + (["--csv", str(csv_path)] if csv_path else []),
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout)


def aot_name(r: dict) -> str:
    """A compiled kernel's row of :func:`aot_report`, named as in the CSV."""
    return f"{r['kernel']} sm_{r['arch']} {r['label']}"


def aot_spills(report: list[dict]) -> list[str]:
    """The compiled kernels that spill registers."""
    return [f"{aot_name(r)}: {r['spill_bytes']} B" for r in report if r.get("spill_bytes")]


def aot_over_shared_memory(report: list[dict]) -> list[str]:
    """The compiled kernels that need more shared memory than their architecture has."""
    from tenfold.core.triton_util import SHARED_LIMIT

    return [
        f"{aot_name(r)}: {r['shared']} B > {SHARED_LIMIT[r['arch']]} B"
        for r in report
        if not r["error"] and r["shared"] > SHARED_LIMIT[r["arch"]]
    ]
