"""muP for diffusion transformers (arXiv 2505.15270): tune the learning rate on a narrow proxy,
train the wide model with it. See ``docs/mup.md``.

    from tenfold.mup import MuPConfig, parametrize_
    opt = parametrize_(model, MuPConfig(base_width=64), lr=2**-7)
"""

from ..core.experiment import MethodInfo
from .api import (
    MuPConfig,
    MuReadout,
    ParamScaling,
    Role,
    mup_param_groups,
    param_table,
    parametrize_,
    readout_modules,
    unwrap,
)

METHOD = MethodInfo(
    "mup",
    "2505.15270",
    "muP for diffusion transformers",
    "learning rates tuned on a small DiT/U-ViT/PixArt/MMDiT transfer to a wide one",
)

__all__ = [
    "METHOD",
    "MuPConfig",
    "MuReadout",
    "ParamScaling",
    "Role",
    "mup_param_groups",
    "param_table",
    "parametrize_",
    "readout_modules",
    "unwrap",
]
