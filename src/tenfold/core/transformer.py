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


def _kernel(m: nn.Module) -> AttentionFn:
    # looked up at call time, so that a patched F.scaled_dot_product_attention applies
    return m.attn_fn or F.scaled_dot_product_attention


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
        self.attn_fn: AttentionFn | None = attn_fn  # None: F.scaled_dot_product_attention

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
        fn = _kernel(self)
        if self.n_kv_heads != self.n_heads:
            if getattr(fn, "supports_gqa", False):
                kwargs["enable_gqa"] = True
            else:
                rep = self.n_heads // self.n_kv_heads
                k = k.repeat_interleave(rep, dim=1)  # (B, H, T, D)
                v = v.repeat_interleave(rep, dim=1)  # (B, H, T, D)
        y = fn(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)  # (B, H, T, D)
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
    """Set the kernel of every attention module (self, cross and joint) in ``model``;
    ``None`` restores SDPA. Returns the number of attention modules changed.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, (Attention, CrossAttention, JointAttention)):
            m.attn_fn = fn
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


def unpatchify(x: Tensor, p: int, c: int) -> Tensor:
    """Tokens (B, T, p*p*C) of a square grid -> images (B, C, H, W)."""
    h = w = math.isqrt(x.shape[1])
    x = x.reshape(x.shape[0], h, w, p, p, c)  # (B, h, w, p, p, C)
    x = torch.einsum("nhwpqc->nchpwq", x)  # (B, C, h, p, w, q)
    return x.reshape(x.shape[0], c, h * p, w * p)  # (B, C, H, W)


def _check_inputs(model: nn.Module, x: Tensor, t: Tensor, y: Tensor, label_ndim: int) -> None:
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


def _add_patch_embedding(model: nn.Module, c: BackboneConfig) -> None:
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
class DiTConfig(BackboneConfig):
    """Configuration of a class-conditional DiT."""

    mlp: Literal["gelu", "swiglu"] = "gelu"
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    freq_dim: int = 256

    def __post_init__(self):
        super().__post_init__()
        _check(
            self.mlp in ("gelu", "swiglu"),
            f"DiTConfig.mlp must be 'gelu' or 'swiglu', got {self.mlp!r}",
        )
        _check(
            0.0 <= self.class_dropout_prob < 1.0, "DiTConfig.class_dropout_prob must be in [0, 1)"
        )
        _check(self.num_classes >= 1, "DiTConfig.num_classes must be >= 1")


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
        _add_patch_embedding(self, c)
        self.t_embedder = TimestepEmbedder(c.dim, c.freq_dim)
        self.y_embedder = LabelEmbedder(c.num_classes, c.dim, c.class_dropout_prob)
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
        _check_inputs(self, x, t, y, label_ndim=1)
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        cond = self.t_embedder(t) + self.y_embedder(y)  # (B, C)
        for blk in self.blocks:
            h = blk(h, cond)  # (B, T, C)
        h = self.final_layer(h, cond)  # (B, T, p*p*C_out)
        return self.unpatchify(h)  # (B, C_out, H, W)


# --------------------------------------------------------------------------------------
# Text conditioning, cross and joint attention
# --------------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """Queries from x (B, T, C), keys/values from a context (B, L, C_ctx), padding keys masked.
    Same pluggable kernel as :class:`Attention`."""

    def __init__(
        self,
        dim: int,
        context_dim: int,
        n_heads: int,
        qk_norm: bool = False,
        attn_fn: AttentionFn | None = None,
    ):
        super().__init__()
        _check(dim % n_heads == 0, f"dim={dim} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.q_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim) if qk_norm else nn.Identity()
        self.attn_fn: AttentionFn | None = attn_fn  # None: F.scaled_dot_product_attention

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        B, T, C = x.shape
        L = context.shape[1]
        q = self.q_norm(
            self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        )  # (B, H, T, D)
        k, v = self.kv(context).view(B, L, 2, self.n_heads, self.head_dim).unbind(2)  # (B, L, H, D)
        k, v = self.k_norm(k.transpose(1, 2)), v.transpose(1, 2)  # (B, H, L, D)
        mask = context_mask[:, None, None, :] if context_mask is not None else None  # (B, 1, 1, L)
        y = _kernel(self)(q, k, v, attn_mask=mask)  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class JointAttention(nn.Module):
    """MMDiT's joint attention: each stream (image x, text c) has its own QKV and output
    projections; attention runs over the concatenated sequence [c; x] (padding text masked)."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        qk_norm: bool = False,
        context_out: bool = True,
        attn_fn: AttentionFn | None = None,
    ):
        super().__init__()
        _check(dim % n_heads == 0, f"dim={dim} is not divisible by n_heads={n_heads}")
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.qkv_x, self.qkv_c = nn.Linear(dim, 3 * dim), nn.Linear(dim, 3 * dim)
        self.proj_x = nn.Linear(dim, dim)
        # the last MMDiT block only lends the text its keys and values ("context pre only")
        self.proj_c = nn.Linear(dim, dim) if context_out else None
        norm = (lambda: RMSNorm(self.head_dim)) if qk_norm else nn.Identity
        self.q_norm_x, self.k_norm_x, self.q_norm_c, self.k_norm_c = norm(), norm(), norm(), norm()
        self.attn_fn: AttentionFn | None = attn_fn  # None: F.scaled_dot_product_attention

    def _heads(
        self, t: Tensor, qkv: nn.Linear, qn: nn.Module, kn: nn.Module
    ) -> tuple[Tensor, Tensor, Tensor]:
        B, T, _ = t.shape
        q, k, v = qkv(t).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # (B, T, H, D)
        return qn(q.transpose(1, 2)), kn(k.transpose(1, 2)), v.transpose(1, 2)  # (B, H, T, D)

    def forward(
        self, x: Tensor, c: Tensor, c_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        B, T, C = x.shape
        L = c.shape[1]
        qx, kx, vx = self._heads(x, self.qkv_x, self.q_norm_x, self.k_norm_x)  # (B, H, T, D)
        qc, kc, vc = self._heads(c, self.qkv_c, self.q_norm_c, self.k_norm_c)  # (B, H, L, D)
        q, k, v = (
            torch.cat([qc, qx], 2),
            torch.cat([kc, kx], 2),
            torch.cat([vc, vx], 2),
        )  # (B, H, L+T, D)
        mask = None
        if c_mask is not None:
            keys = torch.cat(
                [c_mask, torch.ones(B, T, dtype=torch.bool, device=x.device)], 1
            )  # (B, L+T)
            mask = keys[:, None, None, :]  # (B, 1, 1, L+T)
        y = _kernel(self)(q, k, v, attn_mask=mask).transpose(1, 2)  # (B, L+T, H, D)
        yx = self.proj_x(y[:, L:].reshape(B, T, C))  # (B, T, C)
        yc = (
            self.proj_c(y[:, :L].reshape(B, L, C)) if self.proj_c is not None else None
        )  # (B, L, C)
        return yx, yc


class PreNormBlock(nn.Module):
    """Plain pre-LayerNorm transformer block (U-ViT, the text encoder); with ``skip=True`` it
    first fuses a long skip connection: x = Linear(concat(x, skip))."""

    def __init__(
        self,
        dim: int,
        n_heads: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        skip: bool = False,
    ):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio))

    def forward(
        self, x: Tensor, skip: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, T, C)
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


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
        name = type(self).__name__
        for f in ("text_vocab_size", "text_len", "text_dim", "text_depth", "text_heads"):
            _check(getattr(self, f) >= 1, f"{name}.{f} must be >= 1, got {getattr(self, f)}")
        _check(self.text_vocab_size >= 3, f"{name}.text_vocab_size must cover <pad>, <bos>, <unk>")
        _check(
            self.text_dim % self.text_heads == 0,
            f"{name}: text_dim={self.text_dim} is not divisible by text_heads={self.text_heads}",
        )


# --------------------------------------------------------------------------------------
# U-ViT (Bao et al. 2023): everything is a token, long skips between shallow and deep blocks
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UViTConfig(BackboneConfig):
    """U-ViT: ``depth`` blocks = depth//2 in-blocks, one mid block, depth//2 out-blocks (odd)."""

    depth: int = 5
    num_classes: int = 10
    class_dropout_prob: float = 0.1
    conv_out: bool = True

    def __post_init__(self):
        super().__post_init__()
        _check(
            self.depth % 2 == 1,
            f"UViTConfig.depth must be odd (in-blocks, mid block, out-blocks), got {self.depth}",
        )
        _check(
            0.0 <= self.class_dropout_prob < 1.0, "UViTConfig.class_dropout_prob must be in [0, 1)"
        )
        _check(self.num_classes >= 1, "UViTConfig.num_classes must be >= 1")


class UViT(nn.Module):
    """U-ViT for class-conditional diffusion: tokens [time, class, patches] with a learned
    position embedding, long skip connections, a linear patch decoder and a 3x3 output conv.
    ``forward(x, t, y)`` as :class:`DiT`."""

    extra_tokens = 2

    def __init__(self, config: UViTConfig):
        super().__init__()
        self.config = c = config
        self.x_embedder = nn.Conv2d(c.in_channels, c.dim, c.patch_size, stride=c.patch_size)
        self.t_embedder = TimestepEmbedder(c.dim)
        self.y_embedder = LabelEmbedder(c.num_classes, c.dim, c.class_dropout_prob)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.extra_tokens + c.num_patches, c.dim))
        half = c.depth // 2
        self.in_blocks = nn.ModuleList(
            PreNormBlock(c.dim, c.n_heads, c.mlp_ratio, c.qk_norm) for _ in range(half)
        )
        self.mid_block = PreNormBlock(c.dim, c.n_heads, c.mlp_ratio, c.qk_norm)
        self.out_blocks = nn.ModuleList(
            PreNormBlock(c.dim, c.n_heads, c.mlp_ratio, c.qk_norm, skip=True) for _ in range(half)
        )
        self.norm = nn.LayerNorm(c.dim)
        self.decoder_pred = nn.Linear(c.dim, c.patch_size**2 * c.out_channels)
        self.final_layer = (
            nn.Conv2d(c.out_channels, c.out_channels, 3, padding=1) if c.conv_out else nn.Identity()
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U-ViT's initialisation: truncated-normal(0.02) linears and position embedding."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.y_embedder.table.weight, std=0.02)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        _check_inputs(self, x, t, y, label_ndim=1)
        c = self.config
        h = self.x_embedder(x).flatten(2).transpose(1, 2)  # (B, T, C)
        extra = torch.stack([self.t_embedder(t), self.y_embedder(y)], dim=1)  # (B, 2, C)
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


# --------------------------------------------------------------------------------------
# PixArt-alpha (Chen et al. 2023): cross-attention to text, adaLN-single
# --------------------------------------------------------------------------------------


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
        _add_patch_embedding(self, c)
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
        _check_inputs(self, x, t, y, label_ndim=2)
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


# --------------------------------------------------------------------------------------
# MMDiT (Esser et al. 2024, Stable Diffusion 3): two streams, joint attention
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MMDiTConfig(TextBackboneConfig):
    """MMDiT: image and text streams with their own weights, joint attention, per-stream
    adaLN from the timestep plus the pooled caption."""


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

    def forward(self, x: Tensor, c: Tensor, cond: Tensor, c_mask: Tensor) -> tuple[Tensor, Tensor]:
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
        _add_patch_embedding(self, c)
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
        _check_inputs(self, x, t, y, label_ndim=2)
        c = self.config
        h = self.x_embedder(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, T, C)
        text, mask, pooled = self.text_encoder(y)  # (B, L, C_text), (B, L), (B, C_text)
        ctx = self.context_embedder(text)  # (B, L, C)
        cond = self.t_embedder(t) + self.pooled_embedder(pooled)  # (B, C)
        for blk in self.blocks:
            h, ctx = blk(h, ctx, cond, mask)
        h = self.final_layer(h, cond)  # (B, T, p*p*C_out)
        return unpatchify(h, c.patch_size, c.out_channels)  # (B, C_out, H, W)


# The paper's sizes and tiny ones for digits on a CPU (head dim 32 for the tiny ones).
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
