"""The AFDM reproductions at their quick presets (the demo runs the same), directions
pinned where the quick scale settles them, and config errors."""

import pytest

from tenfold.afdm.repro import BerMobilityConfig
from tenfold.core.experiment import ConfigError, make_config, run_experiment


def test_ber_mobility_quick(tmp_path):
    res, run_dir = run_experiment("afdm/ber-mobility", "quick", out=tmp_path, progress=False)
    fast = res.claim("high-doppler")
    assert fast.verdict.value == "holds", fast.measured
    m = res.metrics
    # BER falls with SNR for both waveforms at every speed
    for w in ("afdm", "ofdm"):
        for v in ("0", "120", "500"):
            assert m[f"ber_{w}_{v}kmh_20dB"] < m[f"ber_{w}_{v}kmh_0dB"] / 10
    assert "ber_mobility.png" in res.figures
    assert (run_dir / "result.json").exists()


@pytest.mark.parametrize(
    "values, msg",
    [
        ({"qam": 8}, "qam must be"),
        ({"n_paths": 12, "max_delay": 4}, "n_paths"),
        ({"speeds_kmh": (0.0, 5000.0)}, "orthogonality fails"),
        ({"N": 8}, "N must be >= 16"),
    ],
)
def test_config_errors(values, msg):
    with pytest.raises(ConfigError, match=msg):
        make_config(BerMobilityConfig, values)


def test_xlmimo_rka_quick(tmp_path):
    res, _ = run_experiment("afdm/xlmimo-rka", "quick", out=tmp_path, progress=False)
    afdm = res.claim("xlmimo-mobility")
    assert afdm.verdict.value == "holds", afdm.measured
    m = res.metrics
    # more rKA steps never hurt much, and the largest budget is close to direct RZF
    assert m["ber_AFDM_rKA_16K_15dB"] <= 2 * m["ber_AFDM_rKA_2K_15dB"]
    assert abs(m["gap_db_rka_16K"]) < 1.0
    cost = res.tables["precoding cost vs antennas"]
    assert [r["M"] for r in cost] == [64, 128, 256, 512]
    assert {"xlmimo_ber.png", "xlmimo_cost.png"} <= set(res.figures)


def test_rka_precode_direct_reference_agree():
    import numpy as np

    from tenfold.afdm import rka_precode, xlmimo_channel
    from tenfold.afdm.precoding import rzf_direct, rzf_direct_precode

    rng = np.random.default_rng(0)
    H = np.stack([xlmimo_channel(rng, 64, 4)[0] / 8 for _ in range(3)])
    s = rng.standard_normal((3, 4)) + 0j
    x = rzf_direct_precode(H, s, 0.1)
    np.testing.assert_allclose(x, np.einsum("fmk,fk->fm", rzf_direct(H, 0.1), s), atol=1e-12)
    xr = rka_precode(H, s, 0.1, 400, np.random.default_rng(1))
    assert np.linalg.norm(xr - x) / np.linalg.norm(x) < 1e-3
