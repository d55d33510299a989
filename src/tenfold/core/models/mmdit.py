"""MMDiT (Esser et al. 2024, Stable Diffusion 3): image and text streams with their own
weights and one joint attention."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .backbone import TextBackboneConfig, add_patch_embedding, check_inputs
from .layers import FinalLayer, GeluMLP, JointAttention, TimestepEmbedder, modulate, unpatchify
from .text import TextEncoder

__all__ = ["MMDiTConfig", "MMDiTBlock", "MMDiT"]


@dataclass(frozen=True)
class MMDiTConfig(TextBackboneConfig):
    """MMDiT: image and text streams with their own weights, joint attention, per-stream
    adaLN from the timestep plus the pooled caption.

    ``mask_text_padding=True`` (default) hides the caption's padding tokens from the joint
    attention; Stable Diffusion 3 attends to every text token (``False``). We mask by
    default because our captions are a few words zero-padded to ``text_len`` and encoded by
    a small encoder trained from scratch, whose padding states carry no text (SD3's T5
    padding states do); PixArt's cross-attention masks them too, so the two caption
    backbones see the same conditioning.
    """

    mask_text_padding: bool = True


class MMDiTBlock(nn.Module):
    """One MMDiT block. With ``context_pre_only`` (the last block) the text stream only feeds
    keys and values to the joint attention and is not updated."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        context_pre_only: bool = False,
    ):
        super().__init__()
        ln = lambda: nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # noqa: E731
        self.context_pre_only = context_pre_only
        self.norm1_x, self.norm1_c, self.norm2_x = ln(), ln(), ln()
        self.attn = JointAttention(dim, n_heads, qk_norm=qk_norm, context_out=not context_pre_only)
        self.mlp_x = GeluMLP(dim, int(dim * mlp_ratio))
        self.adaLN_x = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.adaLN_c = nn.Sequential(
            nn.SiLU(), nn.Linear(dim, (2 if context_pre_only else 6) * dim)
        )
        if not context_pre_only:
            self.norm2_c = ln()
            self.mlp_c = GeluMLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, c: Tensor, cond: Tensor, c_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        sx, scx, gx, sx2, scx2, gx2 = self.adaLN_x(cond).chunk(6, dim=-1)  # (B, C) each
        mc = self.adaLN_c(cond).chunk(2 if self.context_pre_only else 6, dim=-1)
        ax, ac = self.attn(
            modulate(self.norm1_x(x), sx, scx), modulate(self.norm1_c(c), mc[0], mc[1]), c_mask
        )
        x = x + gx.unsqueeze(1) * ax  # (B, T, C)
        x = x + gx2.unsqueeze(1) * self.mlp_x(modulate(self.norm2_x(x), sx2, scx2))
        if self.context_pre_only:
            return x, c
        gc, sc2, scc2, gc2 = mc[2:]
        c = c + gc.unsqueeze(1) * ac  # (B, L, C)
        c = c + gc2.unsqueeze(1) * self.mlp_c(modulate(self.norm2_c(c), sc2, scc2))
        return x, c


class MMDiT(nn.Module):
    """MMDiT for caption-conditioned diffusion. ``forward(x, t, ids)`` as :class:`PixArt`."""

    def __init__(self, config: MMDiTConfig):
        super().__init__()
        self.config = c = config
        add_patch_embedding(self, c)
        self.t_embedder = TimestepEmbedder(c.dim)
        self.text_encoder = TextEncoder(
            c.text_vocab_size, c.text_dim, c.text_depth, c.text_heads, c.text_len
        )
        self.context_embedder = nn.Linear(c.text_dim, c.dim)
        self.pooled_embedder = nn.Sequential(
            nn.Linear(c.text_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim)
        )
        self.blocks = nn.ModuleList(
            MMDiTBlock(c.dim, c.n_heads, c.mlp_ratio, c.qk_norm, context_pre_only=i == c.depth - 1)
            for i in range(c.depth)
        )
        self.final_layer = FinalLayer(c.dim, c.patch_size, c.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT-style: Xavier linears, adaLN-Zero in every block and stream, zero final layer."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and not name.startswith("text_encoder"):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            for ada in (blk.adaLN_x, blk.adaLN_c):
                nn.init.zeros_(ada[-1].weight)
                nn.init.zeros_(ada[-1].bias)
        for lin in (self.final_layer.adaLN_modulation[-1], self.final_layer.linear):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        check_inputs(self, x, t, y, label_ndim=2)
        c = self.config
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        text, mask, pooled = self.text_encoder(y)  # (B, L, C_text), (B, L), (B, C_text)
        ctx = self.context_embedder(text)  # (B, L, C)
        cond = self.t_embedder(t) + self.pooled_embedder(pooled)  # (B, C)
        key_mask = mask if c.mask_text_padding else None
        for blk in self.blocks:
            h, ctx = blk(h, ctx, cond, key_mask)
        h = self.final_layer(h, cond)  # (B, T, p*p*C_out)
        return unpatchify(h, c.patch_size, c.out_channels)  # (B, C_out, H, W)


# The paper's sizes and tiny ones for digits on a CPU (head dim 32 for the tiny ones).
