"""Reference transformer blocks and models (nanoGPT / DiT style).

Everything here is plain PyTorch and runs on the CPU. Methods reparametrise or wrap these
modules; they do not fork them.

* :class:`Attention` -- multi-head (and grouped-query) attention whose kernel is a pluggable
  function with the signature of :func:`torch.nn.functional.scaled_dot_product_attention`,
  optional QK-norm and rotary embeddings (RoPE).
* :class:`GeluMLP`, :class:`SwiGLU` -- the two MLP flavours.
* :class:`DiT` -- class-conditional Diffusion Transformer (Peebles & Xie 2023) with
  adaLN-Zero modulation.
* :class:`LM` -- Llama-style decoder (RMSNorm, RoPE, SwiGLU, optional GQA).

Width grows by adding heads at a fixed head dim (``dim = n_heads * head_dim``), as the muP
for diffusion transformers paper does. Presets live in :data:`DIT_MODELS` and
:data:`LM_MODELS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionFn",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "Attention",
    "GeluMLP",
    "SwiGLU",
    "modulate",
    "TimestepEmbedder",
    "LabelEmbedder",
    "DiTBlock",
    "FinalLayer",
    "DiTConfig",
    "DiT",
    "DIT_MODELS",
    "LMConfig",
    "LMBlock",
    "LM",
    "LM_MODELS",
    "set_attention_fn",
    "sincos_pos_embed_2d",
]

# An attention kernel: same signature as F.scaled_dot_product_attention, (B, H, T, D) layout.
AttentionFn = Callable[..., Tensor]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


# --------------------------------------------------------------------------------------
# Normalisation and rotary embeddings
# --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if elementwise_affine else None

    def forward(self, x: Tensor) -> Tensor:
        y = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        y = y.to(x.dtype)
        return y * self.weight if self.weight is not None else y


class RotaryEmbedding(nn.Module):
    """Rotary position embedding tables (Su et al. 2021), half-split ("NeoX") convention."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        _check(head_dim % 2 == 0, f"RoPE needs an even head_dim, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """positions: (T,) integer positions -> cos, sin of shape (T, head_dim)."""
        freqs = positions.to(self.inv_freq.dtype)[:, None] * self.inv_freq[None, :]  # (T, D/2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (T, D)
        return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x (B, H, T, D) by the tables cos, sin (T, D)."""
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, H, T, D)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


# --------------------------------------------------------------------------------------
# Attention and MLPs
# --------------------------------------------------------------------------------------


class Attention(nn.Module):
    """Multi-head self-attention with a pluggable kernel.

    ``attn_fn`` is any function with the signature of ``F.scaled_dot_product_attention``
    (``q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None``) over the
    (B, H, T, D) layout. Grouped-query attention (``n_kv_heads < n_heads``) repeats K and V
    before the call unless the kernel is marked ``supports_gqa = True`` (then it gets
    ``enable_gqa=True``).
    """

    def __init__(
        self,
        dim: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        qk_norm: bool = False,
        bias: bool = True,
        attn_fn: AttentionFn | None = None,
    ):
        super().__init__()
        n_kv_heads = n_kv_heads or n_heads
        _check(dim % n_heads == 0, f"dim={dim} is not divisible by n_heads={n_heads}")
        _check(
            n_heads % n_kv_heads == 0,
            f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}",
        )
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=bias)
        self.kv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_fn: AttentionFn = attn_fn or F.scaled_dot_product_attention

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        kv = self.kv(x).view(B, T, 2, self.n_kv_heads, self.head_dim)  # (B, T, 2, Hkv, D)
        k, v = kv.unbind(2)  # (B, T, Hkv, D) each
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, T, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        kwargs = {}
        if self.n_kv_heads != self.n_heads:
            if getattr(self.attn_fn, "supports_gqa", False):
                kwargs["enable_gqa"] = True
            else:
                rep = self.n_heads // self.n_kv_heads
                k = k.repeat_interleave(rep, dim=1)  # (B, H, T, D)
                v = v.repeat_interleave(rep, dim=1)  # (B, H, T, D)
        y = self.attn_fn(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)  # (B,H,T,D)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(y)


class GeluMLP(nn.Module):
    """Linear -> GELU(tanh) -> Linear, as in GPT-2 and DiT."""

    def __init__(self, dim: int, hidden: int, bias: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP of Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, C)


def _mlp(kind: str, dim: int, hidden: int, bias: bool) -> nn.Module:
    if kind == "gelu":
        return GeluMLP(dim, hidden, bias=bias)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias)
    raise ValueError(f"unknown mlp {kind!r}; choose 'gelu' or 'swiglu'")


def set_attention_fn(model: nn.Module, fn: AttentionFn | None) -> int:
    """Set the kernel of every :class:`Attention` in ``model``; ``None`` restores SDPA.

    Returns the number of attention modules changed.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, Attention):
            m.attn_fn = fn or F.scaled_dot_product_attention
            n += 1
    return n


# --------------------------------------------------------------------------------------
# DiT
# --------------------------------------------------------------------------------------


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x (B, T, C), shift/scale (B, C)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar noise level followed by a 2-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.freq_dim, self.max_period = freq_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def features(self, t: Tensor) -> Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(
            -math.log(self.max_period)
            * torch.arange(half, dtype=torch.float32, device=t.device)
            / half
        )  # (F/2,)
        args = t.float()[:, None] * freqs[None]  # (B, F/2)
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, F)

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(self.features(t).to(self.mlp[0].weight.dtype))  # (B, C)


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra "null" row used for classifier-free guidance."""

    def __init__(self, num_classes: int, dim: int, dropout_prob: float):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.table = nn.Embedding(num_classes + (dropout_prob > 0), dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor, drop: Tensor | None = None) -> Tensor:
        """y (B,) labels; drop (B,) bool mask of labels replaced by the null label."""
        if drop is not None:
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.table(y)  # (B, C)


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, n_heads: int, mlp_ratio: float, mlp: str, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm, bias=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _mlp(mlp, dim, int(dim * mlp_ratio), bias=True)
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


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to patches."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)  # (B, C) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p*p*C_out)


def sincos_pos_embed_2d(dim: int, grid: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding of a grid x grid token map -> (grid^2, dim)."""
    _check(dim % 4 == 0, f"2-D sincos embedding needs dim % 4 == 0, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # (D/4,)
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    out = []
    for pos in (xs.flatten(), ys.flatten()):  # width half first, as in MAE / DiT
        ang = pos.double()[:, None] * omega[None]  # (T, D/4)
        out += [torch.sin(ang), torch.cos(ang)]
    return torch.cat(out, dim=1).float()  # (T, D)


@dataclass(frozen=True)
class DiTConfig:
    """Configuration of a class-conditional DiT. ``dim = n_heads * head_dim``."""

    input_size: int = 8
    in_channels: int = 1
    patch_size: int = 2
    depth: int = 4
    n_heads: int = 4
    head_dim: int = 32
    mlp_ratio: float = 4.0
    mlp: Literal["gelu", "swiglu"] = "gelu"
    qk_norm: bool = False
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    learn_sigma: bool = False
    freq_dim: int = 256

    def __post_init__(self):
        for name in ("input_size", "in_channels", "patch_size", "depth", "n_heads", "head_dim"):
            _check(
                getattr(self, name) >= 1,
                f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}",
            )
        _check(
            self.input_size % self.patch_size == 0,
            f"DiTConfig: input_size={self.input_size} is not divisible by patch_size={self.patch_size}",
        )
        _check(
            self.dim % 4 == 0,
            f"DiTConfig: dim = n_heads*head_dim = {self.dim} must be divisible by 4",
        )
        _check(
            self.mlp in ("gelu", "swiglu"),
            f"DiTConfig.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}",
        )
        _check(
            0.0 <= self.class_dropout_prob < 1.0, "DiTConfig.class_dropout_prob must be in [0, 1)"
        )
        _check(self.mlp_ratio > 0, "DiTConfig.mlp_ratio must be > 0")
        _check(self.num_classes >= 1, "DiTConfig.num_classes must be >= 1")

    @property
    def dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    def widen(self, n_heads: int) -> DiTConfig:
        """The same model with more (or fewer) heads at the same head dim."""
        return replace(self, n_heads=n_heads)


# name -> (depth, n_heads, head_dim, patch_size). The paper's sizes (head dim 64) and tiny
# ones for digits on a CPU. Use with DiTConfig(**DIT_MODELS[name], input_size=..., ...).
DIT_MODELS: dict[str, dict] = {
    "DiT-XL/2": dict(depth=28, n_heads=16, head_dim=72, patch_size=2),
    "DiT-L/2": dict(depth=24, n_heads=16, head_dim=64, patch_size=2),
    "DiT-B/2": dict(depth=12, n_heads=12, head_dim=64, patch_size=2),
    "DiT-S/2": dict(depth=12, n_heads=6, head_dim=64, patch_size=2),
    "DiT-T/2": dict(depth=6, n_heads=4, head_dim=32, patch_size=2),
    "DiT-Digits/2": dict(depth=4, n_heads=4, head_dim=32, patch_size=2),
    "DiT-Digits/1": dict(depth=4, n_heads=4, head_dim=32, patch_size=1),
}


class DiT(nn.Module):
    """Class-conditional Diffusion Transformer.

    ``forward(x, t, y)``: x (B, C, H, W) noisy input, t (B,) noise conditioning (for EDM,
    ``c_noise = ln(sigma) / 4``), y (B,) integer labels, where ``num_classes`` is the null
    label used by classifier-free guidance. Returns (B, C_out, H, W).
    """

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = c = config
        self.x_embedder = nn.Conv2d(c.in_channels, c.dim, c.patch_size, stride=c.patch_size)
        self.t_embedder = TimestepEmbedder(c.dim, c.freq_dim)
        self.y_embedder = LabelEmbedder(c.num_classes, c.dim, c.class_dropout_prob)
        grid = c.input_size // c.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed_2d(c.dim, grid)[None], persistent=False)
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
        c, p = self.config.out_channels, self.config.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)  # (B, h, w, p, p, C)
        x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, q)
        return x.reshape(x.shape[0], c, h * p, w * p)  # (B, C, H, W)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        c = self.config
        if (
            x.ndim != 4
            or x.shape[1] != c.in_channels
            or x.shape[-1] != c.input_size
            or x.shape[-2] != c.input_size
        ):
            raise ValueError(
                f"DiT expects x of shape (B, {c.in_channels}, {c.input_size}, {c.input_size}), "
                f"got {tuple(x.shape)}"
            )
        if t.shape != (x.shape[0],) or y.shape != (x.shape[0],):
            raise ValueError(
                f"DiT expects t and y of shape ({x.shape[0]},), got {tuple(t.shape)} and {tuple(y.shape)}"
            )
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        cond = self.t_embedder(t) + self.y_embedder(y)  # (B, C)
        for blk in self.blocks:
            h = blk(h, cond)  # (B, T, C)
        h = self.final_layer(h, cond)  # (B, T, p*p*C_out)
        return self.unpatchify(h)  # (B, C_out, H, W)


# --------------------------------------------------------------------------------------
# LM
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LMConfig:
    """Llama-style decoder. ``dim = n_heads * head_dim``; ``mlp_hidden=None`` gives 8/3*dim
    rounded up to a multiple of 64."""

    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 4
    n_heads: int = 4
    n_kv_heads: int | None = None
    head_dim: int = 32
    mlp: Literal["gelu", "swiglu"] = "swiglu"
    mlp_hidden: int | None = None
    qk_norm: bool = False
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_heads", "head_dim"):
            _check(
                getattr(self, name) >= 1, f"LMConfig.{name} must be >= 1, got {getattr(self, name)}"
            )
        _check(
            self.head_dim % 2 == 0, f"LMConfig.head_dim must be even for RoPE, got {self.head_dim}"
        )
        kv = self.n_kv_heads or self.n_heads
        _check(
            kv >= 1 and self.n_heads % kv == 0,
            f"LMConfig: n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads}",
        )
        _check(
            self.mlp in ("gelu", "swiglu"),
            f"LMConfig.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}",
        )

    @property
    def dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def hidden(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "gelu":
            return 4 * self.dim
        return 64 * math.ceil(8 * self.dim / 3 / 64)


LM_MODELS: dict[str, dict] = {
    "llama-7b": dict(n_layer=32, n_heads=32, head_dim=128, mlp_hidden=11008, block_size=4096),
    "lm-small": dict(n_layer=6, n_heads=6, head_dim=64),
    "lm-tiny": dict(n_layer=4, n_heads=4, head_dim=32),
}


class LMBlock(nn.Module):
    def __init__(self, c: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(c.dim, c.n_heads, c.n_kv_heads, qk_norm=c.qk_norm, bias=False)
        self.mlp_norm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = _mlp(c.mlp, c.dim, c.hidden, bias=False)

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor]) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rope, is_causal=True)  # (B, T, C)
        return x + self.mlp(self.mlp_norm(x))  # (B, T, C)


class LM(nn.Module):
    """Decoder-only language model. ``forward(idx, targets=None) -> (logits, loss)``."""

    def __init__(self, config: LMConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.dim)
        self.rope = RotaryEmbedding(c.head_dim, c.rope_base)
        self.blocks = nn.ModuleList(LMBlock(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.lm_head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.reset_parameters()
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)."""
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02
                if name.endswith(("proj.weight", "down.weight", "fc2.weight")):
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: Tensor, targets: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        c = self.config
        if idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"LM expects integer token ids of shape (B, T), got {idx.dtype} {tuple(idx.shape)}"
            )
        B, T = idx.shape
        if c.block_size < T:
            raise ValueError(f"sequence length {T} exceeds block_size={c.block_size}")
        rope = self.rope(torch.arange(T, device=idx.device))  # (T, D) x2
        x = self.tok_emb(idx)  # (B, T, C)
        for blk in self.blocks:
            x = blk(x, rope)  # (B, T, C)
        logits = self.lm_head(self.norm(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, c.vocab_size), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of idx (B, T) (no KV cache: reference)."""
        for _ in range(max_new_tokens):
            ctx = idx[:, -self.config.block_size :]
            logits = self(ctx)[0][:, -1, :] / max(temperature, 1e-6)  # (B, V)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
                logits[logits < v[:, [-1]]] = -float("inf")
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
