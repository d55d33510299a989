"""The models the reproductions quantize: tenfold's LM pretrained on the Python docs with the
core recipe (cached by its settings), its calibration and held-out token windows."""

from __future__ import annotations

import torch

from ...core.data import lm_batch
from ...core.tasks.lm import LMRunSpec, build_lm, lm_streams, pretrained_lm

NAMESPACE = "requant"
VERSION = 1

QUICK_LM = dict(n_layer=2, n_heads=2, head_dim=32, block_size=64, pretrain_steps=400)
FULL_LM = dict(n_layer=4, n_heads=4, head_dim=32, block_size=128, pretrain_steps=3000)


def lm_spec(cfg) -> LMRunSpec:
    return LMRunSpec(
        n_layer=cfg.n_layer, n_heads=cfg.n_heads, head_dim=cfg.head_dim,
        block_size=cfg.block_size, pretrain_steps=cfg.pretrain_steps, steps=0, seed=cfg.seed,
    )  # fmt: skip


def windows(stream: torch.Tensor, n: int, block: int, seed: int) -> torch.Tensor:
    """``n`` seeded windows of ``block + 1`` tokens (input and next-token target in one)."""
    g = torch.Generator().manual_seed(seed)
    x, y = lm_batch(stream, n, block, g)
    return torch.cat([x[:, :1], y], 1)  # (n, block + 1)


def pretrained(cfg, progress: bool = False):
    """(model in eval mode, base streams) of the pretrained LM (trained once, then cached)."""
    spec = lm_spec(cfg)
    base, _ = lm_streams(spec)
    torch.manual_seed(spec.seed)
    model = build_lm(spec, base.vocab_size)
    model.load_state_dict(pretrained_lm(spec, base, NAMESPACE, VERSION, progress=progress))
    return model.eval(), base
