"""The AFDM reproductions at their quick presets (the demo runs the same), directions
pinned where the quick scale settles them, and config errors."""

import pytest

from tenfold.afdm.repro import BerMobilityConfig
from tenfold.core.experiment import ConfigError, make_config, run_experiment


def test_ber_mobility_quick(tmp_path):
    res, run_dir = run_experiment("afdm/ber-mobility", "quick", out=tmp_path, progress=False)
    fast = next(c for c in res.claims if "high Doppler" in c.paper)
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
