"""Reproductions of arXiv 2505.15270 at digits scale.

* ``mup/coord-check`` (:mod:`.coord_check`) -- coordinate check of DiT, U-ViT, PixArt-alpha and MMDiT, SP and muP.
* ``mup/lr-transfer`` (:mod:`.lr_transfer`) -- learning-rate sweeps of a class-conditional DiT (and, in ``full``,
  PixArt-alpha) on the digits with the EDM loss, over widths and log2 learning rates, SP and
  muP: does the best LR transfer, is wider better, how much faster is the wide muP model
  with the proxy's LR than SP at AdamW 1e-4, and what does the sweep cost.

Sweep points run in parallel worker processes (:mod:`tenfold.core.sweep`); each finished
point is a JSON file under ``<out>/mup/lr-transfer/sweep-<hash>/``, and a rerun of the same
config reuses them (``--set resume=false`` reruns everything).
"""

from .common import FAMILY_NAMES, HEAD_DIM, build_backbone
from .coord_check import FLAT_SLOPE, GROW_SLOPE, CoordCheckConfig
from .lr_transfer import LRTransferConfig, train_point, validation_loss

__all__ = [
    "FAMILY_NAMES",
    "FLAT_SLOPE",
    "GROW_SLOPE",
    "HEAD_DIM",
    "CoordCheckConfig",
    "LRTransferConfig",
    "build_backbone",
    "train_point",
    "validation_loss",
]
