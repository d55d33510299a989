"""U-ViT (Bao et al. 2023, baofff/U-ViT): everything is a token, long skips between
shallow and deep blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..validate import check_config
from .backbone import BackboneConfig, check_inputs
from .layers import LabelEmbedder, PreNormBlock, TimestepEmbedder, _check, unpatchify

__all__ = ["UViTConfig", "UViT"]


@dataclass(frozen=True)
class UViTConfig(BackboneConfig):
    """U-ViT: ``depth`` blocks = depth//2 in-blocks, one mid block, depth//2 out-blocks (odd).

    The defaults are those of baofff/U-ViT's configs: the time token is the raw sinusoid at
    model width (``mlp_time_embed=False``), q/k/v have no bias (``qkv_bias=False``), the MLP
    uses the exact GELU, and the label table keeps PyTorch's N(0, 1) init
    (``label_init_std=None``). ``mlp_time_embed=True`` adds U-ViT's optional time MLP
    (dim -> 4 dim -> dim); ``gelu="tanh"`` and ``label_init_std=0.02`` give DiT's choices.
    """

    depth: int = 5
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    conv_out: bool = True
    mlp_time_embed: bool = False
    qkv_bias: bool = False
    gelu: Literal["none", "tanh"] = "none"
    label_init_std: float | None = None

    def __post_init__(self):
        super().__post_init__()
        check_config(self, num_classes=">=1", class_dropout_prob="[0,1)", label_init_std=">0")
        _check(
            self.depth % 2 == 1,
            f"UViTConfig.depth must be odd (in-blocks, mid block, out-blocks), got {self.depth}",
        )
        _check(
            0.0 <= self.class_dropout_prob < 1.0, "UViTConfig.class_dropout_prob must be in [0, 1)"
        )
        _check(self.num_classes >= 1, "UViTConfig.num_classes must be >= 1")
        _check(
            self.gelu in ("none", "tanh"),
            f"UViTConfig.gelu must be 'none' or 'tanh', got {self.gelu!r}",
        )
        _check(
            self.label_init_std is None or self.label_init_std > 0,
            f"UViTConfig.label_init_std must be > 0 or None, got {self.label_init_std}",
        )


class UViT(nn.Module):
    """U-ViT for class-conditional diffusion: tokens [class, time, patches] with a learned
    position embedding, long skip connections, a linear patch decoder and a 3x3 output conv.
    ``forward(x, t, y)`` as :class:`DiT`."""

    extra_tokens = 2

    def __init__(self, config: UViTConfig):
        super().__init__()
        self.config = c = config
        self.x_embedder = nn.Conv2d(c.in_channels, c.dim, c.patch_size, stride=c.patch_size)
        self.t_embedder = TimestepEmbedder(
            c.dim, freq_dim=c.dim, mlp=c.mlp_time_embed, hidden=4 * c.dim
        )
        self.y_embedder = LabelEmbedder(c.num_classes, c.dim, c.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extra_tokens + c.num_patches, c.dim))
        half = c.depth // 2
        kw = dict(mlp_ratio=c.mlp_ratio, qk_norm=c.qk_norm, qkv_bias=c.qkv_bias, gelu=c.gelu)
        self.in_blocks = nn.ModuleList(PreNormBlock(c.dim, c.n_heads, **kw) for _ in range(half))
        self.mid_block = PreNormBlock(c.dim, c.n_heads, **kw)
        self.out_blocks = nn.ModuleList(
            PreNormBlock(c.dim, c.n_heads, skip=True, **kw) for _ in range(half)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.decoder_pred = nn.Linear(c.dim, c.patch_size**2 * c.out_channels)
        self.final_layer = (
            nn.Conv2d(c.out_channels, c.out_channels, 3, padding=1) if c.conv_out else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U-ViT's initialisation: truncated-normal(0.02) linears and position embedding, zero
        biases; the label table keeps PyTorch's N(0, 1) unless ``label_init_std`` is set."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.config.label_init_std is not None:
            nn.init.normal_(self.y_embedder.table.weight, std=self.config.label_init_std)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        check_inputs(self, x, t, y, label_ndim=1)
        c = self.config
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, C)
        # [label, time, patches], in baofff/U-ViT's order (the time token goes first, then the
        # label token in front of it)
        extra = torch.stack([self.y_embedder(y), self.t_embedder(t)], dim=1)  # (B, 2, C)
        h = torch.cat([extra, h], dim=1) + self.pos_embed  # (B, 2+T, C)
        skips = []
        for blk in self.in_blocks:
            h = blk(h)
            skips.append(h)
        h = self.mid_block(h)
        for blk in self.out_blocks:
            h = blk(h, skip=skips.pop())  # (B, 2+T, C)
        h = self.decoder_pred(self.norm(h))[:, self.extra_tokens :]  # (B, T, p*p*C_out)
        return self.final_layer(unpatchify(h, c.patch_size, c.out_channels))  # (B, C_out, H, W)
