"""Direct Discriminative Optimization (arXiv 2503.01103): GAN-like fine-tuning of diffusion
and autoregressive models whose discriminator is the likelihood ratio of the model to a
frozen reference, in self-play rounds. See ``docs/ddo.md``.

    from tenfold.ddo import DDOConfig, ddo_loss
    out = ddo_loss(model, ref, real_x, fake_x, DDOConfig(alpha=1.0, beta=0.05))
    out.loss.backward()   # out.accuracy, out.margin: the implicit discriminator
"""

from ..core.experiment import MethodInfo
from .api import (
    DDOConfig,
    DDOOutput,
    check_reference,
    ddo_loss,
    ddo_objective,
    diffusion_log_ratio,
    sequence_log_prob,
)
from .selfplay import DiffusionFakes, RoundRecord, SelfPlayConfig, TokenFakes, self_play

METHOD = MethodInfo(
    "ddo",
    "2503.01103",
    "Direct Discriminative Optimization",
    "GAN-like fine-tuning of diffusion and AR models without a discriminator",
)

__all__ = [
    "METHOD",
    "DDOConfig",
    "DDOOutput",
    "DiffusionFakes",
    "RoundRecord",
    "SelfPlayConfig",
    "TokenFakes",
    "check_reference",
    "ddo_loss",
    "ddo_objective",
    "diffusion_log_ratio",
    "self_play",
    "sequence_log_prob",
]
