"""The fallback kernels (block quantization, mixed INT8/16-bit GEMM) compiled ahead of time
for Ampere, Ada and Hopper at the tiles and launch options the wrappers choose, on this CPU
machine, with the ptxas of the Triton wheel."""

import csv

import pytest

from conftest import aot_name, aot_over_shared_memory, aot_report, aot_spills
from tenfold.fallback.api import BLOCK_SIDES


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("aot") / "aot.csv"
    return aot_report("tenfold.fallback.kernels", csv_path=path), path


@pytest.fixture(scope="module")
def report(compiled):
    return compiled[0]


def _name(r):
    return aot_name(r)


def test_every_kernel_compiles_for_every_block_side_the_config_allows(report):
    steps = {r["constexprs"]["S"] for r in report if r["kernel"] == "gemm_kernel"}
    assert {BLOCK_SIDES[0], BLOCK_SIDES[-1]} <= steps
    bad = [f"{_name(r)}: {r['error']}" for r in report if r["error"]]
    assert not bad, "\n".join(bad)


def test_shared_memory_within_each_architecture(report):
    over = aot_over_shared_memory(report)
    assert not over, "\n".join(over)


def test_no_register_spills(report):
    """The GEMM's epilogue adds its INT8 and 16-bit parts one after the other (two live
    tiles, not four), and below Hopper the 16-bit path takes 128 x 64 tiles."""
    spills = aot_spills(report)
    assert not spills, "\n".join(spills)


def test_the_csv_holds_every_compiled_kernel(compiled):
    from tenfold.core.triton_util import CSV_FIELDS

    report, path = compiled
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(r["kernel"], r["arch"], r["config"]) for r in rows] == [
        (r["kernel"], f"sm_{r['arch']}", r["label"]) for r in report
    ]
    assert [int(r["spill_bytes"]) for r in rows] == [r["spill_bytes"] for r in report]
    assert {r["method"] for r in rows} == {"fallback"}
