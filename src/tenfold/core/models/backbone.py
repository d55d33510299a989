"""What the image diffusion backbones (DiT, U-ViT, PixArt-alpha, MMDiT) share: their config
fields, the patch embedding and the input checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from ..validate import check_config
from .layers import _check, sincos_pos_embed_2d

__all__ = ["BackboneConfig", "TextBackboneConfig", "check_inputs", "add_patch_embedding"]


def check_inputs(model: nn.Module, x: Tensor, t: Tensor, y: Tensor, label_ndim: int) -> None:
    """Clear errors for the (x, t, y) of an image backbone; y is labels (B,) or ids (B, L)."""
    c, name = model.config, type(model).__name__
    want = (c.in_channels, c.input_size, c.input_size)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
        raise ValueError(
            f"{name} expects x of shape (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
        )
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} expects t of shape ({x.shape[0]},), got {tuple(t.shape)}")
    what = "class labels of shape (B,)" if label_ndim == 1 else "caption token ids of shape (B, L)"
    if (
        y.ndim != label_ndim
        or y.shape[0] != x.shape[0]
        or y.dtype not in (torch.int64, torch.int32)
    ):
        raise ValueError(
            f"{name} expects y as integer {what} with B={x.shape[0]}, got {y.dtype} {tuple(y.shape)}"
        )


def add_patch_embedding(model: nn.Module, c: BackboneConfig) -> None:
    """``model.x_embedder`` (patchify conv) and a fixed 2-D sin-cos ``model.pos_embed`` buffer,
    shared by DiT, PixArt-alpha and MMDiT (U-ViT learns its position embedding)."""
    model.x_embedder = nn.Conv2d(c.in_channels, c.dim, c.patch_size, stride=c.patch_size)
    grid = c.input_size // c.patch_size
    model.register_buffer("pos_embed", sincos_pos_embed_2d(c.dim, grid)[None], persistent=False)


@dataclass(frozen=True)
class BackboneConfig:
    """Fields shared by the image diffusion backbones (DiT, U-ViT, PixArt-alpha, MMDiT).

    ``dim = n_heads * head_dim``: width grows by heads at a fixed head dim (:meth:`widen`).
    """

    input_size: int = 8
    in_channels: int = 1
    patch_size: int = 2
    depth: int = 4
    n_heads: int = 4
    head_dim: int = 32
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    learn_sigma: bool = False

    def __post_init__(self):
        check_config(
            self,
            input_size=">=1",
            in_channels=">=1",
            patch_size=">=1",
            depth=">=1",
            n_heads=">=1",
            head_dim=">=1",
            mlp_ratio=">0",
        )
        name = type(self).__name__
        for f in ("input_size", "in_channels", "patch_size", "depth", "n_heads", "head_dim"):
            _check(getattr(self, f) >= 1, f"{name}.{f} must be >= 1, got {getattr(self, f)}")
        _check(
            self.input_size % self.patch_size == 0,
            f"{name}: input_size={self.input_size} is not divisible by patch_size={self.patch_size}",
        )
        _check(
            self.dim % 4 == 0, f"{name}: dim = n_heads*head_dim = {self.dim} must be divisible by 4"
        )
        _check(self.mlp_ratio > 0, f"{name}.mlp_ratio must be > 0, got {self.mlp_ratio}")

    @property
    def dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    def widen(self, n_heads: int):
        """The same model with more (or fewer) heads at the same head dim."""
        return replace(self, n_heads=n_heads)


@dataclass(frozen=True)
class TextBackboneConfig(BackboneConfig):
    """Image backbone conditioned on captions through a small :class:`TextEncoder` whose width
    (``text_dim``) is fixed: only the image transformer is widened."""

    text_vocab_size: int = 64
    text_len: int = 8
    text_dim: int = 64
    text_depth: int = 2
    text_heads: int = 2

    def __post_init__(self):
        super().__post_init__()
        check_config(
            self,
            text_vocab_size=">=3",
            text_len=">=1",
            text_dim=">=1",
            text_depth=">=1",
            text_heads=">=1",
        )
        name = type(self).__name__
        for f in ("text_vocab_size", "text_len", "text_dim", "text_depth", "text_heads"):
            _check(getattr(self, f) >= 1, f"{name}.{f} must be >= 1, got {getattr(self, f)}")
        _check(self.text_vocab_size >= 3, f"{name}.text_vocab_size must cover <pad>, <bos>, <unk>")
        _check(
            self.text_dim % self.text_heads == 0,
            f"{name}: text_dim={self.text_dim} is not divisible by text_heads={self.text_heads}",
        )
