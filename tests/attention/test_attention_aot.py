"""The attention kernels compiled ahead of time for the GPUs the dispatcher sends them to
(sm_90 for every variant, sm_89 for FP8 P.V, sm_80 for FP16/INT8 P.V), at the constexprs and
launch options the wrappers choose, on this CPU machine, with the ptxas of the Triton wheel."""

import pytest

from conftest import aot_name, aot_over_shared_memory, aot_report


@pytest.fixture(scope="module")
def report():
    return aot_report("tenfold.attention.kernels")


KEYS = ("D", "BLK", "SMOOTH", "BM", "PV", "CAUSAL")


def _name(r):
    return aot_name(r, KEYS)


def test_every_kernel_compiles(report):
    assert {r["kernel"] for r in report} == {
        "quant_kernel", "fwd_kernel", "bwd_dkdv_kernel", "bwd_dq_kernel"
    }  # fmt: skip
    bad = [f"{_name(r)}: {r['error']}" for r in report if r["error"]]
    assert not bad, "\n".join(bad)


def test_shared_memory_within_each_architecture(report):
    over = aot_over_shared_memory(report, KEYS)
    assert not over, "\n".join(over)


def test_no_register_spills_in_the_forward_kernels(report):
    """The forward is the hot kernel: its launch (8 warps; 64 query rows at head dim 64
    below Hopper) was chosen so that no variant spills on any architecture."""
    spills = [
        f"{_name(r)}: {r['spill_bytes']} B"
        for r in report
        if r["kernel"] == "fwd_kernel" and r["spill_bytes"]
    ]
    assert not spills, "\n".join(spills)
