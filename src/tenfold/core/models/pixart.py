"""PixArt-alpha (Chen et al. 2023): DiT blocks with cross-attention to caption tokens and
adaLN-single."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .backbone import TextBackboneConfig, add_patch_embedding, check_inputs
from .layers import Attention, CrossAttention, GeluMLP, TimestepEmbedder, unpatchify
from .text import TextEncoder

__all__ = ["PixArtConfig", "PixArtBlock", "PixArt"]


@dataclass(frozen=True)
class PixArtConfig(TextBackboneConfig):
    """PixArt-alpha: DiT blocks with cross-attention to caption tokens and adaLN-single."""


class PixArtBlock(nn.Module):
    """Self-attention, cross-attention, MLP; modulation = the shared adaLN-single vector plus
    this block's learned scale-shift table."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm)
        self.cross_attn = CrossAttention(dim, dim, n_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)

    def forward(self, x: Tensor, t6: Tensor, ctx: Tensor, ctx_mask: Tensor) -> Tensor:
        B, _, C = x.shape
        mods = self.scale_shift_table[None] + t6.reshape(B, 6, C)  # (B, 6, C)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods.chunk(
            6, dim=1
        )  # (B, 1, C)
        x = x + gate_msa * self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa)
        x = x + self.cross_attn(x, ctx, ctx_mask)
        return x + gate_mlp * self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)  # (B, T, C)


class PixArt(nn.Module):
    """PixArt-alpha for caption-conditioned diffusion. ``forward(x, t, ids)`` with caption
    token ids (B, L) (0 = padding; classifier-free guidance uses the empty caption)."""

    def __init__(self, config: PixArtConfig):
        super().__init__()
        self.config = c = config
        add_patch_embedding(self, c)
        self.t_embedder = TimestepEmbedder(c.dim)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(c.dim, 6 * c.dim))  # adaLN-single
        self.text_encoder = TextEncoder(
            c.text_vocab_size, c.text_dim, c.text_depth, c.text_heads, c.text_len
        )
        self.y_embedder = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.GELU(approximate="tanh"), nn.Linear(c.dim, c.dim)
        )
        self.blocks = nn.ModuleList(
            PixArtBlock(c.dim, c.n_heads, c.mlp_ratio, c.qk_norm) for _ in range(c.depth)
        )
        self.final_norm = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
        self.final_table = nn.Parameter(torch.randn(2, c.dim) / c.dim**0.5)
        self.final_linear = nn.Linear(c.dim, c.patch_size**2 * c.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PixArt's initialisation: Xavier linears; zero cross-attention output and final layer."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("text_encoder"):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        for lin in (self.t_embedder.mlp[0], self.t_embedder.mlp[2], self.t_block[1]):
            nn.init.normal_(lin.weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.cross_attn.proj.weight)
            nn.init.zeros_(blk.cross_attn.proj.bias)
        nn.init.zeros_(self.final_linear.weight)
        nn.init.zeros_(self.final_linear.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        check_inputs(self, x, t, y, label_ndim=2)
        c = self.config
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        te = self.t_embedder(t)  # (B, C)
        t6 = self.t_block(te)  # (B, 6C)
        text, mask, _ = self.text_encoder(y)  # (B, L, C_text), (B, L)
        ctx = self.y_embedder(text)  # (B, L, C)
        for blk in self.blocks:
            h = blk(h, t6, ctx, mask)  # (B, T, C)
        shift, scale = (self.final_table[None] + te[:, None]).chunk(2, dim=1)  # (B, 1, C)
        h = self.final_linear(self.final_norm(h) * (1 + scale) + shift)  # (B, T, p*p*C_out)
        return unpatchify(h, c.patch_size, c.out_channels)  # (B, C_out, H, W)
