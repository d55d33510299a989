"""The shared core: what two or more methods use, and nothing that names a method.

``models`` (DiT, U-ViT, PixArt-alpha, MMDiT, the LM, the BERT encoder), ``diffusion`` (EDM),
``train`` (the trainer), ``data`` (embedded datasets), ``metrics`` (pure functions),
``tasks`` (reusable experiment recipes), ``io`` (atomic, checked files and caches),
``experiment`` and ``report`` (claims, verdicts, results, the HTML report).
"""

from .experiment import MethodInfo

METHOD = MethodInfo(
    "core",
    "",
    "Shared core: DiT/U-ViT/PixArt/MMDiT/LM models, EDM diffusion, trainer, metrics",
    "the foundation every method builds on",
)
