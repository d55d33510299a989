"""The caption encoder of the text-conditioned backbones (PixArt-alpha, MMDiT): a small
bidirectional transformer trained with the diffusion model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .layers import PreNormBlock

__all__ = ["TextEncoder"]


class TextEncoder(nn.Module):
    """Small bidirectional transformer over caption token ids (0 = padding), trained with the
    diffusion model. ``forward(ids) -> tokens (B, L, C), mask (B, L) bool, pooled (B, C)``."""

    def __init__(
        self, vocab_size: int, dim: int = 64, depth: int = 2, n_heads: int = 2, max_len: int = 8
    ):
        super().__init__()
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        self.blocks = nn.ModuleList(PreNormBlock(dim, n_heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        n_tok = ids.shape[1]
        if n_tok > self.max_len:
            raise ValueError(
                f"captions of {n_tok} tokens exceed the text encoder's max_len={self.max_len}"
            )
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"caption token ids must lie in [0, {self.vocab_size}); got {ids.min()}..{ids.max()}"
            )
        mask = ids != 0  # (B, L)
        h = self.tok(ids) + self.pos[:, :n_tok]  # (B, L, C)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, L)
        for blk in self.blocks:
            h = blk(h, attn_mask=key_mask)
        h = self.norm(h)  # (B, L, C)
        w = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * w).sum(1) / w.sum(1).clamp_min(1)  # (B, C)
        return h, mask, pooled
