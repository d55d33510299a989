"""The fallback kernels (block quantization, mixed INT8/16-bit GEMM) compiled ahead of time
for Ampere, Ada and Hopper at the tiles and launch options the wrappers choose, on this CPU
machine, with the ptxas of the Triton wheel."""

import pytest

from conftest import aot_name, aot_over_shared_memory, aot_report
from tenfold.fallback.api import BLOCK_SIDES


@pytest.fixture(scope="module")
def report():
    return aot_report("tenfold.fallback.kernels")


KEYS = ("BR", "BC", "S", "A_MASK", "B_MASK")


def _name(r):
    return aot_name(r, KEYS)


def test_every_kernel_compiles_for_every_block_side_the_config_allows(report):
    steps = {r["constexprs"]["S"] for r in report if r["kernel"] == "gemm_kernel"}
    assert {BLOCK_SIDES[0], BLOCK_SIDES[-1]} <= steps
    bad = [f"{_name(r)}: {r['error']}" for r in report if r["error"]]
    assert not bad, "\n".join(bad)


def test_shared_memory_within_each_architecture(report):
    over = aot_over_shared_memory(report, KEYS)
    assert not over, "\n".join(over)
