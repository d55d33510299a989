"""The attention kernels compiled ahead of time for the GPUs the dispatcher sends them to
(sm_90 for every variant, sm_89 for FP8 P.V, sm_80 for FP16/INT8 P.V), at the constexprs and
launch options the wrappers choose, on this CPU machine, with the ptxas of the Triton wheel."""

import pytest

from conftest import aot_name, aot_over_shared_memory, aot_report, aot_spills


@pytest.fixture(scope="module")
def report():
    return aot_report("tenfold.attention.kernels")


def _name(r):
    return aot_name(r)


def test_every_kernel_compiles(report):
    assert {r["kernel"] for r in report} == {
        "quant_kernel", "fwd_kernel", "bwd_dkdv_kernel", "bwd_dq_kernel"
    }  # fmt: skip
    bad = [f"{_name(r)}: {r['error']}" for r in report if r["error"]]
    assert not bad, "\n".join(bad)


def test_shared_memory_within_each_architecture(report):
    over = aot_over_shared_memory(report)
    assert not over, "\n".join(over)


def test_every_kernel_is_compiled_as_a_launch_specialises_it(report):
    """Unit strides constant, aligned pointers and multiples of 16 marked, as when the
    wrapper launches on contiguous tensors: without that, the numbers describe a kernel
    that never runs (every pointer computed element by element)."""
    assert all(r["specialised"] for r in report)


def test_no_register_spills(report):
    """The launches (forward: 8 warps, 64 query rows at head dim 64 below Hopper; backward:
    3 stages) were chosen so that no kernel spills on any architecture."""
    spills = aot_spills(report)
    assert not spills, "\n".join(spills)
