"""DiT (Peebles & Xie 2023): a class-conditional Diffusion Transformer with adaLN-Zero,
as in facebookresearch/DiT ``models.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from ..validate import check_config
from .backbone import BackboneConfig, add_patch_embedding, check_inputs
from .layers import (
    Attention,
    FinalLayer,
    LabelEmbedder,
    TimestepEmbedder,
    _check,
    make_mlp,
    modulate,
    unpatchify,
)

__all__ = ["DiTConfig", "DiTBlock", "DiT"]


@dataclass(frozen=True)
class DiTConfig(BackboneConfig):
    """Configuration of a class-conditional DiT."""

    mlp: Literal["gelu", "swiglu"] = "gelu"
    num_classes: int = 10
    class_dropout_prob: float = 0.1  # > 0 adds the null label (num_classes) for guidance
    # True: the label embedder drops labels itself in training, as DiT's does; False: the
    # training task passes the null label (tenfold's tasks, which stay exact under DDP/resume)
    class_dropout_in_model: bool = False
    freq_dim: int = 256

    def __post_init__(self):
        super().__post_init__()
        check_config(self, num_classes=">=1", class_dropout_prob="[0,1)", freq_dim=">=2")
        _check(
            self.mlp in ("gelu", "swiglu"),
            f"DiTConfig.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}",
        )
        _check(
            0.0 <= self.class_dropout_prob < 1.0, "DiTConfig.class_dropout_prob must be in [0, 1)"
        )
        _check(self.num_classes >= 1, "DiTConfig.num_classes must be >= 1")


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, mlp: str, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm, bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = make_mlp(mlp, dim, int(dim * mlp_ratio), bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: Tensor, c: Tensor, rope: tuple[Tensor, Tensor] | None = None) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=-1)  # each (B, C)
        x = x + gate_msa.unsqueeze(1) * self.attn(
            modulate(self.norm1(x), shift_msa, scale_msa), rope
        )
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x  # (B, T, C)


class DiT(nn.Module):
    """Class-conditional Diffusion Transformer.

    ``forward(x, t, y)``: x (B, C, H, W) noisy input, t (B,) noise conditioning (for EDM,
    ``c_noise = ln(sigma) / 4``), y (B,) integer labels, where ``num_classes`` is the null
    label used by classifier-free guidance. Returns (B, C_out, H, W).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = c = config
        add_patch_embedding(self, c)
        self.t_embedder = TimestepEmbedder(c.dim, c.freq_dim)
        self.y_embedder = LabelEmbedder(
            c.num_classes, c.dim, c.class_dropout_prob, c.class_dropout_in_model
        )
        self.blocks = nn.ModuleList(
            DiTBlock(c.dim, c.n_heads, c.mlp_ratio, c.mlp, c.qk_norm) for _ in range(c.depth)
        )
        self.final_layer = FinalLayer(c.dim, c.patch_size, c.out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT's initialisation: Xavier linears, adaLN-Zero, zero final layer."""

        def _basic(m):
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

        self.apply(_basic)
        w = self.x_embedder.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.bias)
        nn.init.normal_(self.y_embedder.table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for blk in self.blocks:
            nn.init.zeros_(blk.adaLN_modulation[-1].weight)
            nn.init.zeros_(blk.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x: Tensor) -> Tensor:
        """(B, T, p*p*C) -> (B, C, H, W)."""
        return unpatchify(x, self.config.patch_size, self.config.out_channels)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        check_inputs(self, x, t, y, label_ndim=1)
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        cond = self.t_embedder(t) + self.y_embedder(y)  # (B, C)
        for blk in self.blocks:
            h = blk(h, cond)  # (B, T, C)
        h = self.final_layer(h, cond)  # (B, T, p*p*C_out)
        return self.unpatchify(h)  # (B, C_out, H, W)
