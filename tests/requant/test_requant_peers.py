"""The peer quantizers (torchao IntxWeightOnlyConfig, HQQ) behind tenfold.requant.peers: they
run on the same selection as quantize_, their bits per weight are counted from what they
store, and bad requests get clear errors. Skipped, with the reason, where not installed."""

import copy

import pytest
import torch
import torch.nn as nn

from tenfold.requant.peers import PEERS, peer_bits_per_weight, peer_missing, peer_quantize


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 32))


def _need(peer):
    why = peer_missing(peer)
    if why:
        pytest.skip(why)


@pytest.mark.parametrize("peer", PEERS)
def test_peer_error_falls_with_bits(peer):
    _need(peer)
    net = _net()
    x = torch.randn(16, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y0 = net(x)
    errs = {}
    for bits in (2, 4, 8):
        m = copy.deepcopy(net)
        assert peer_quantize(m, peer, bits, 32, skip=()) == ["0", "2"]
        with torch.no_grad():
            y = m(x)
        assert y.dtype == torch.float32 and y.shape == y0.shape
        errs[bits] = float(((y - y0) ** 2).mean() / (y0**2).mean())
        nominal, stored = peer_bits_per_weight(m)
        assert bits < nominal <= bits + 1.5  # the codes plus a scale and zero per 32 weights
        assert stored >= nominal
    assert errs[8] < errs[4] < errs[2] < 0.5


def test_torchao_bits_count_its_fp16_scales_and_int8_zeros():
    _need("torchao")
    m = _net()
    peer_quantize(m, "torchao", 3, 32, skip=())
    nominal, stored = peer_bits_per_weight(m)
    assert nominal == pytest.approx(3 + (16 + 8) / 32)
    assert stored == pytest.approx(8 + (16 + 8) / 32)  # CPU format: codes unpacked in int8


def test_skip_and_selection_match_quantize_():
    _need("hqq")
    m = _net()
    assert peer_quantize(m, "hqq", 4, 32, skip=("2",)) == ["0"]
    assert isinstance(m[2], nn.Linear)


def test_peer_bad_requests():
    with pytest.raises(ValueError, match="unknown peer 'gguf'"):
        peer_missing("gguf")
    for peer in PEERS:
        if peer_missing(peer):
            with pytest.raises(RuntimeError, match="pip install"):
                peer_quantize(_net(), peer, 4, 32)
            continue
        with pytest.raises(ValueError, match="bits must be 2-8"):
            peer_quantize(_net(), peer, 1, 32, skip=())
        with pytest.raises(ValueError, match="group size 48 does not divide"):
            peer_quantize(_net(), peer, 4, 48, skip=())
        with pytest.raises(ValueError, match="no nn.Linear"):
            peer_quantize(nn.Sequential(nn.ReLU()), peer, 4, 32)
        bad = _net()
        with torch.no_grad():
            bad[0].weight[0, 0] = float("nan")
        with pytest.raises(ValueError, match="NaN/inf"):
            peer_quantize(bad, peer, 4, 32, skip=())
    with pytest.raises(ValueError, match="no peer-quantized layer"):
        peer_bits_per_weight(_net())


def test_peer_rows_measure_each_peer_and_bit_width():
    from tenfold.requant.peers import peer_rows

    net = _net()
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(2))
    rows, missing = peer_rows(net, PEERS, (3, 4), 32, lambda m: {"out": float(m(x).abs().sum())},
                              skip=())  # fmt: skip
    ran = [p for p in PEERS if peer_missing(p) is None]
    assert [(r["peer"], r["bits"]) for r in rows] == [(p, b) for p in ran for b in (3, 4)]
    assert len(missing) == len(PEERS) - len(ran)
    assert all(set(r) == {"peer", "bits", "bits_per_weight", "stored_bits_per_weight", "out"}
               for r in rows)  # fmt: skip
    assert isinstance(net[0], nn.Linear) and type(net[0].weight) is nn.Parameter  # untouched
