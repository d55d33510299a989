"""Reproductions of arXiv 2503.01103 (Direct Discriminative Optimization) at CPU scale.

* ``ddo/toy`` (:mod:`.toy`) -- a 5x5 grid of tight 2-D Gaussians: a small EDM denoiser and
  a 2-token AR model before and after DDO self-play rounds.
"""

from . import toy

__all__ = ["toy"]
