"""Reproductions of arXiv 2503.01103 (Direct Discriminative Optimization) at CPU scale.

* ``ddo/toy`` (:mod:`.toy`) -- a 5x5 grid of tight 2-D Gaussians: a small EDM denoiser and
  a 2-token AR model before and after DDO self-play rounds.
* ``ddo/digits-diffusion`` and ``ddo/digits-ar`` (:mod:`.digits`) -- core's EDM DiT and a
  class-conditional LM of the 8x8 digits before and after DDO self-play rounds.
* ``ddo/grid`` (:mod:`.grid`) -- DDO's alpha/beta grid on the small digits DiT, through the
  core sweep runner.
"""

from . import digits, grid, toy

__all__ = ["digits", "grid", "toy"]
