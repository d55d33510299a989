"""AFDM for XL-MIMO (arXiv 2503.10525): a link-level simulator of affine frequency division
multiplexing (DAFT modem, chirp-periodic prefix, doubly dispersive channels, LMMSE in the
DAFT domain; OFDM on the same code path) and multi-user near-field XL-MIMO precoding by
regularised zero forcing, directly or by randomized Kaczmarz. NumPy/SciPy only.

    from tenfold.afdm import afdm_params, random_paths, simulate_ber
    p = afdm_params(N=128, max_delay=8, max_doppler=2.0, k_nu=1)
    ber = simulate_ber(p, 4, 12.0, lambda rng: random_paths(rng, 4, 8, 2.0), rng)
"""

from ..core.experiment import MethodInfo
from .channel import (
    Paths,
    apply_channel,
    doppler_from_speed,
    effective_matrix,
    near_field_response,
    random_paths,
    xlmimo_channel,
)
from .link import BER, ber_awgn, simulate_ber, transmit_frame, wilson
from .modem import (
    AFDMParams,
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
    remove_prefix,
)
from .precoding import (
    normalize_power,
    rka_convergence,
    rka_precode,
    rzf_direct,
    rzf_flops,
    rzf_rka,
)

METHOD = MethodInfo(
    "afdm",
    "2503.10525",
    "AFDM XL-MIMO",
    "affine-frequency-division multiplexing with randomized-Kaczmarz precoding",
)

__all__ = [
    "METHOD",
    "BER",
    "AFDMParams",
    "Paths",
    "add_prefix",
    "afdm_params",
    "apply_channel",
    "ber_awgn",
    "daft",
    "doppler_from_speed",
    "effective_matrix",
    "idaft",
    "lmmse_detect",
    "near_field_response",
    "normalize_power",
    "ofdm_params",
    "qam_constellation",
    "qam_demap_hard",
    "qam_llr",
    "qam_map",
    "random_paths",
    "remove_prefix",
    "rka_convergence",
    "rka_precode",
    "rzf_direct",
    "rzf_flops",
    "rzf_rka",
    "simulate_ber",
    "transmit_frame",
    "wilson",
    "xlmimo_channel",
]
