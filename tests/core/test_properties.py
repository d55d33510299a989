"""Property-based checks of small pure functions (hypothesis)."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tenfold.core.metrics import cosine, sqnr
from tenfold.core.train import batch_indices


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), bs=st.integers(1, 50), seed=st.integers(0, 2**31))
def test_batch_indices_visit_every_sample_once_per_epoch(n, bs, seed):
    steps = math.ceil(2 * n / bs)
    flat = torch.cat([batch_indices(n, bs, s, seed) for s in range(steps)])
    assert flat.shape == (steps * bs,)
    for e in range(2):  # the first two epochs are permutations of range(n)
        assert sorted(flat[e * n : (e + 1) * n].tolist()) == list(range(n))


@settings(max_examples=60, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 1000))
def test_sqnr_and_cosine_are_scale_invariant(scale, seed):
    g = torch.Generator().manual_seed(seed)
    ref = torch.randn(64, generator=g, dtype=torch.float64)
    out = ref + 0.1 * torch.randn(64, generator=g, dtype=torch.float64)
    assert math.isclose(sqnr(ref * scale, out * scale), sqnr(ref, out), rel_tol=1e-9)
    assert math.isclose(cosine(ref * scale, out * scale), cosine(ref, out), rel_tol=1e-9)
    assert -1.0 <= cosine(ref, out) <= 1.0 + 1e-12
