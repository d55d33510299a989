"""Reproductions of arXiv 2503.15265 (DeepMesh) at CPU scale.

* ``mesh/tokenizer`` (:mod:`.tokenizer`) -- tokens per face of naive / BPT-like /
  DeepMesh-style tokenization on every shipped real mesh, round trip, encode speed.
* ``mesh/pretrain`` (:mod:`.pretrain`) -- the point-cloud-conditioned generator trained on
  the curated, decimated real meshes: validation NLL, validity with and without the
  constrained decoder, Chamfer of samples to their own vs another cloud.
* ``mesh/dpo`` (:mod:`.dpo`) -- DPO with automatic 3-D scores on the pre-trained model:
  scores on held-out clouds before and after, and the win rate.
"""

from . import dpo, pretrain, tokenizer

__all__ = ["dpo", "pretrain", "tokenizer"]
