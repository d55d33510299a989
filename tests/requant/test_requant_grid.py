"""Weight grids and bit packing (tenfold.requant.grid): what is stored is what is computed."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tenfold.requant import grid as G


@settings(max_examples=60, deadline=None)
@given(bits=st.integers(1, 8), n=st.integers(0, 300), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trips_every_width(bits, n, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (n,), generator=g)
    packed = G.pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-n * bits // 8)
    assert torch.equal(G.unpack_codes(packed, bits, n), codes)


def test_packing_is_little_endian_within_bytes():
    # codes 1, 2, 3 at 2 bits: 0b11_10_01 = 57
    assert G.pack_codes(torch.tensor([1, 2, 3]), 2).tolist() == [57]


@pytest.mark.parametrize(
    "codes, bits, match",
    [(torch.tensor([4]), 2, r"\[0, 3\]"), (torch.tensor([-1]), 3, r"\[0, 7\]"),
     (torch.tensor([0]), 9, "bits must be 1-8")],
)  # fmt: skip
def test_pack_refuses_codes_out_of_range(codes, bits, match):
    with pytest.raises(ValueError, match=match):
        G.pack_codes(codes, bits)


def test_unpack_refuses_a_stream_of_the_wrong_length_or_type():
    with pytest.raises(ValueError, match="10 codes of 3 bits need 4 bytes, got 3"):
        G.unpack_codes(torch.zeros(3, dtype=torch.uint8), 3, 10)
    with pytest.raises(ValueError, match="flat uint8"):
        G.unpack_codes(torch.zeros(4, dtype=torch.int32), 3, 10)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_rtn_error_is_at_most_half_a_step_and_zero_stays_exact(bits):
    torch.manual_seed(bits)
    w = torch.randn(16, 64)
    w[0, :8] = 0.0
    scale, zero = G.uniform_params(w, bits, 32)
    w_hat = G.uniform_dequant(G.uniform_codes(w, scale, zero, bits, 32), scale, zero, 32)
    step = scale.repeat_interleave(32, 1)
    assert ((w - w_hat).abs() <= step / 2 + 1e-6).all()
    assert torch.equal(w_hat[0, :8], torch.zeros(8))
    assert scale.dtype == torch.float32 and torch.equal(scale, scale.half().float())


def test_a_group_of_zeros_stays_zero_and_nan_propagates():
    w = torch.zeros(2, 8)
    w[1, 3] = float("nan")
    out = G.rtn(w, 4, 8)
    assert torch.equal(out[0], torch.zeros(8))
    assert torch.isnan(out[1]).all()


def test_group_size_must_divide_the_layer():
    assert G.groups_of(96, None) == 96
    with pytest.raises(ValueError, match="group size 64 does not divide the layer's 96"):
        G.groups_of(96, 64)


def test_weights_beyond_the_fp16_scale_range_are_refused():
    w = torch.tensor([[0.0, 1e9]])
    with pytest.raises(ValueError, match="fp16 range"):
        G.uniform_params(w, 4, 2)
