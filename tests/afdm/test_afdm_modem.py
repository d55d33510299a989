"""Validation of the AFDM modem and channel: the DAFT is unitary, AFDM at c1 = c2 = 0 is
OFDM bit for bit, each path lands on its predicted DAFT-domain diagonal, AWGN BER matches
the closed form, and channels the waveform cannot serve raise instead of giving bad bits."""

import numpy as np
import pytest

from tenfold.afdm.channel import Paths, apply_channel, effective_matrix, random_paths
from tenfold.afdm.link import ber_awgn, simulate_ber, transmit_frame, wilson
from tenfold.afdm.modem import (
    add_prefix,
    afdm_params,
    daft,
    idaft,
    lmmse_detect,
    ofdm_params,
    qam_constellation,
    qam_demap_hard,
    qam_llr,
    qam_map,
)


def _cn(rng, *shape):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("N", [16, 64, 257])
def test_daft_is_unitary_and_inverts(N):
    rng = np.random.default_rng(0)
    p = afdm_params(N, 1, 1)
    x = _cn(rng, 3, N)
    y = daft(x, p.c1, p.c2)
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(idaft(y, p.c1, p.c2), x, atol=1e-12)
    A = daft(np.eye(N), p.c1, p.c2)  # rows: A applied to unit vectors -> A^T
    np.testing.assert_allclose(A.conj().T @ A, np.eye(N), atol=1e-12)


def test_afdm_at_zero_chirp_is_ofdm_bit_for_bit():
    rng = np.random.default_rng(1)
    p = ofdm_params(64, 8)
    x = qam_map(rng.integers(0, 2, (4, 128)), 4)
    s = transmit_frame(x, p)
    ofdm = np.fft.ifft(x, norm="ortho")
    ofdm = np.concatenate([ofdm[..., -8:], ofdm], -1)  # IFFT + cyclic prefix
    assert np.array_equal(s, ofdm)
    assert np.array_equal(daft(s[..., 8:], 0.0, 0.0), np.fft.fft(s[..., 8:], norm="ortho"))


@pytest.mark.parametrize("delay,doppler", [(0, 0), (2, 1), (3, -2), (1, 2)])
def test_each_path_lands_on_its_predicted_diagonal(delay, doppler):
    p = afdm_params(64, max_delay=3, max_doppler=2, k_nu=1)
    H = effective_matrix(Paths([1.0], [delay], [doppler]), p)
    loc = p.path_location(delay, doppler)
    rows, cols = np.nonzero(np.abs(H) > 1e-9)
    assert set((cols - rows) % 64) == {loc}  # y[q] = h x[(q + loc) mod N]
    np.testing.assert_allclose(np.abs(H[rows, cols]), 1.0, atol=1e-9)


def test_fractional_doppler_stays_in_its_band():
    # a fractional Doppler spreads a path around its diagonal; c1's guard k_nu holds most of it
    p = afdm_params(128, max_delay=4, max_doppler=1.5, k_nu=2)
    H = effective_matrix(Paths([1.0], [3], [1.3]), p)
    loc = p.path_location(3, 1)
    off = (np.arange(128)[None] - np.arange(128)[:, None] - loc) % 128
    off = np.minimum(off, 128 - off)
    energy = np.abs(H) ** 2
    assert energy[off <= 2].sum() / energy.sum() > 0.9


def test_prefix_is_chirp_periodic():
    p = afdm_params(32, 4, 1)
    s = idaft(_cn(np.random.default_rng(2), 32), p.c1, p.c2)
    e = add_prefix(s, p)
    n = np.arange(-4, 0)
    np.testing.assert_allclose(e[:4], s[32 + n] * np.exp(-2j * np.pi * p.c1 * (32**2 + 2 * 32 * n)))


@pytest.mark.parametrize("M,esn0", [(4, 4.0), (4, 8.0), (16, 10.0), (16, 14.0)])
def test_awgn_ber_matches_closed_form(M, esn0):
    p = afdm_params(64, 0, 0)
    res = simulate_ber(
        p, M, esn0, lambda r: Paths([1.0], [0], [0]), np.random.default_rng(3),
        target_errors=400, max_frames=4000,
    )  # fmt: skip
    lo, hi = wilson(res.errors, res.bits, conf=0.999)
    assert lo <= float(ber_awgn(M, esn0)) <= hi, (res, float(ber_awgn(M, esn0)))


def test_qam_gray_mapping_and_demapping():
    for M in (4, 16, 64):
        c = qam_constellation(M)
        assert np.isclose(np.mean(np.abs(c) ** 2), 1.0)
        d = np.abs(c[:, None] - c[None])
        dmin = d[d > 1e-9].min()
        k = int(np.log2(M))
        bits = (np.arange(M)[:, None] >> np.arange(k - 1, -1, -1)) & 1
        near = np.isclose(d, dmin)
        assert ((bits[:, None] != bits[None]).sum(-1)[near] == 1).all()  # Gray: 1 bit apart
        b = np.random.default_rng(M).integers(0, 2, (5, 6 * k))
        assert np.array_equal(qam_demap_hard(qam_map(b, M), M), b)
        llr = qam_llr(qam_map(b, M), M, 0.1)
        assert np.array_equal((llr < 0).astype(int), b)
    with pytest.raises(ValueError, match="square power of two"):
        qam_constellation(8)


def test_lmmse_dense_and_sparse_agree():
    rng = np.random.default_rng(4)
    p = afdm_params(64, 4, 1, k_nu=1)
    H = effective_matrix(random_paths(rng, 3, 4, 1.0, fractional_doppler=False), p)
    x = qam_map(rng.integers(0, 2, 128), 4)
    y = H @ x + 0.05 * _cn(rng, 64)
    np.testing.assert_allclose(
        lmmse_detect(H, y, 0.005, sparse_tol=1e-12), lmmse_detect(H, y, 0.005)
    )


def test_channels_the_waveform_cannot_serve_raise():
    with pytest.raises(ValueError, match="orthogonality fails"):
        afdm_params(32, max_delay=8, max_doppler=2, k_nu=1)
    p = afdm_params(64, max_delay=2, max_doppler=1)
    s = transmit_frame(np.ones(64, complex), p)
    with pytest.raises(ValueError, match="exceeds the prefix"):
        apply_channel(s, Paths([1.0], [5], [0.0]), p)
    with pytest.raises(ValueError, match="exceeds the prefix"):  # fractional-delay taps too
        apply_channel(s, Paths([1.0], [1.5], [0.0]), p)
    with pytest.raises(ValueError, match="shorter than the max delay"):
        afdm_params(64, max_delay=4, max_doppler=1, cp_len=2)
    with pytest.raises(ValueError, match="1-D of one length"):
        Paths([1.0, 0.5], [0], [0])


def test_docs_usage_runs_as_written():
    """The usage block of docs/afdm.md runs as written."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "afdm.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    ns: dict = {}
    exec(compile(code, "docs/afdm.md", "exec"), ns)
    assert 0 < ns["ber"].ber < ns["ber_ofdm"].ber < 0.1
    assert ns["x"].shape == (512,)
