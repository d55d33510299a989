"""Layers shared by every model family (nanoGPT / DiT style, plain PyTorch, CPU-friendly).

* :class:`PluggableAttention` -- the base of every attention module whose kernel is a
  function with the signature of :func:`torch.nn.functional.scaled_dot_product_attention`
  (``attn_fn``; ``None`` = SDPA, looked up at call time). :func:`set_attention_fn` is the one
  mechanism that swaps it: :class:`Attention` (self, GQA, QK-norm, RoPE),
  :class:`CrossAttention` (PixArt) and :class:`JointAttention` (MMDiT).
* :class:`GeluMLP`, :class:`SwiGLU` and :func:`make_mlp` -- the two MLP flavours.
* :class:`RMSNorm`, :class:`RotaryEmbedding`, :func:`apply_rope`.
* adaLN: :func:`modulate`, :class:`FinalLayer`; embedders: :class:`TimestepEmbedder`,
  :class:`LabelEmbedder` (with DiT's guidance dropout), :func:`sincos_pos_embed_2d`;
  :class:`PreNormBlock` (U-ViT, the caption encoder) and :func:`unpatchify`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionFn",
    "PluggableAttention",
    "set_attention_fn",
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rope",
    "Attention",
    "CrossAttention",
    "JointAttention",
    "GeluMLP",
    "SwiGLU",
    "make_mlp",
    "modulate",
    "TimestepEmbedder",
    "LabelEmbedder",
    "FinalLayer",
    "PreNormBlock",
    "unpatchify",
    "sincos_pos_embed_2d",
]

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


class PluggableAttention(nn.Module):
    """Base of every attention module with a swappable kernel. ``attn_fn`` is a function with
    the signature of ``F.scaled_dot_product_attention`` over the (B, H, T, D) layout, or
    ``None`` for SDPA itself, looked up at call time so that a patched
    ``F.scaled_dot_product_attention`` applies. Swap kernels with :func:`set_attention_fn`."""

    attn_fn: AttentionFn | None = None

    def kernel(self) -> AttentionFn:
        return self.attn_fn or F.scaled_dot_product_attention


def set_attention_fn(
    model: nn.Module,
    fn: AttentionFn | None,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> list[str]:
    """Set the kernel of every :class:`PluggableAttention` module (self, cross and joint
    attention) of ``model`` that ``filter_fn(module, name)`` accepts (default: all);
    ``None`` restores SDPA. Returns the names of the modules changed, in model order."""
    changed = []
    for name, m in model.named_modules():
        if isinstance(m, PluggableAttention) and (filter_fn is None or filter_fn(m, name)):
            m.attn_fn = fn
            changed.append(name)
    return changed


class Attention(PluggableAttention):
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
        norm_eps: float = 1e-6,
        qkv_bias: bool | None = None,
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
        qkv_bias = bias if qkv_bias is None else qkv_bias  # U-ViT: no q/k/v bias, a proj bias
        self.q = nn.Linear(dim, n_heads * self.head_dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * n_kv_heads * self.head_dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.attn_fn: AttentionFn | None = attn_fn  # None: F.scaled_dot_product_attention

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor] | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        cache: list[Tensor] | None = None,
    ) -> Tensor:
        """``cache``: a list that holds this layer's past keys and values ([] at the start of
        a sequence); x's tokens come after them and the list is extended in place
        (incremental decoding; causal attention over past and present)."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        kv = self.kv(x).view(B, T, 2, self.n_kv_heads, self.head_dim)  # (B, T, 2, Hkv, D)
        k, v = kv.unbind(2)  # (B, T, Hkv, D) each
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (B, Hkv, T, D)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if cache:
                past = cache[0].shape[2]
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)  # (B, Hkv, P+T, D)
                if is_causal and T > 1:  # query i sees keys up to past + i
                    i = torch.arange(T, device=x.device)[:, None]
                    attn_mask = torch.arange(past + T, device=x.device)[None] <= past + i
                is_causal = False  # (one new token sees every key: no mask)
            cache[:] = [k, v]
        kwargs = {}
        fn = self.kernel()
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
    """Linear -> GELU -> Linear: the tanh approximation as in GPT-2 and DiT (default), or
    ``approximate="none"`` for the exact GELU of U-ViT and BERT."""

    def __init__(self, dim: int, hidden: int, bias: bool = True, approximate: str = "tanh"):
        super().__init__()
        _check(
            approximate in ("tanh", "none"),
            f"approximate must be 'tanh' or 'none', got {approximate!r}",
        )
        self.approximate = approximate
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate=self.approximate))  # (B, T, C)


class SwiGLU(nn.Module):
    """Gated MLP of Llama: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int, bias: bool = False):
        super().__init__()
        self.gate = nn.Linear(dim, hidden, bias=bias)
        self.up = nn.Linear(dim, hidden, bias=bias)
        self.down = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))  # (B, T, C)


def make_mlp(kind: str, dim: int, hidden: int, bias: bool) -> nn.Module:
    if kind == "gelu":
        return GeluMLP(dim, hidden, bias=bias)
    if kind == "swiglu":
        return SwiGLU(dim, hidden, bias=bias)
    raise ValueError(f"unknown mlp {kind!r}; choose 'gelu' or 'swiglu'")


class CrossAttention(PluggableAttention):
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
        y = self.kernel()(q, k, v, attn_mask=mask)  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class JointAttention(PluggableAttention):
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
        y = self.kernel()(q, k, v, attn_mask=mask).transpose(1, 2)  # (B, L+T, H, D)
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
        qkv_bias: bool = True,
        gelu: str = "tanh",
    ):
        super().__init__()
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, n_heads, qk_norm=qk_norm, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMLP(dim, int(dim * mlp_ratio), approximate=gelu)

    def forward(
        self, x: Tensor, skip: Tensor | None = None, attn_mask: Tensor | None = None
    ) -> Tensor:
        if self.skip_linear is not None:
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (B, T, C)
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        return x + self.mlp(self.norm2(x))  # (B, T, C)


# --------------------------------------------------------------------------------------
# Conditioning: adaLN modulation, embedders, the patch decoder
# --------------------------------------------------------------------------------------


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation: x (B, T, C), shift/scale (B, C)."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a scalar noise level followed by a 2-layer MLP (DiT:
    ``freq_dim`` -> dim -> dim). ``hidden`` sets the MLP's inner width (U-ViT's optional time
    MLP: dim -> 4 dim -> dim); ``mlp=False`` returns the raw sinusoid, which then needs
    ``freq_dim == dim`` (U-ViT's default, ``mlp_time_embed=False``)."""

    def __init__(
        self,
        dim: int,
        freq_dim: int = 256,
        max_period: float = 10000.0,
        mlp: bool = True,
        hidden: int | None = None,
    ):
        super().__init__()
        _check(
            mlp or freq_dim == dim, f"without an MLP freq_dim ({freq_dim}) must equal dim ({dim})"
        )
        self.freq_dim, self.max_period = freq_dim, max_period
        h = hidden or dim
        self.mlp = (
            nn.Sequential(nn.Linear(freq_dim, h), nn.SiLU(), nn.Linear(h, dim)) if mlp else None
        )

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
        if self.mlp is None:
            return self.features(t)  # (B, C)
        return self.mlp(self.features(t).to(self.mlp[0].weight.dtype))  # (B, C)


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra "null" row (label ``num_classes``) for
    classifier-free guidance when ``dropout_prob > 0``.

    With ``drop_in_model=True`` it drops labels itself in training, each with probability
    ``dropout_prob``, as DiT's ``LabelEmbedder`` does. By default the training task drops them
    (tenfold's tasks draw the mask from the step's generator, so DDP and resumed runs stay
    exact) and passes ``y`` with the null label already in place, or ``drop``.
    """

    def __init__(
        self, num_classes: int, dim: int, dropout_prob: float, drop_in_model: bool = False
    ):
        super().__init__()
        self.num_classes, self.dropout_prob = num_classes, dropout_prob
        self.drop_in_model = drop_in_model
        self.table = nn.Embedding(num_classes + (dropout_prob > 0), dim)

    _NO_NULL = (
        "this model has no null label: it was built with class_dropout_prob=0 "
        "(set class_dropout_prob > 0 for classifier-free guidance)"
    )

    @property
    def null_label(self) -> int:
        if self.dropout_prob <= 0:
            raise ValueError(self._NO_NULL)
        return self.num_classes

    def forward(self, y: Tensor, drop: Tensor | None = None) -> Tensor:
        """y (B,) labels in [0, num_classes] (num_classes = null); drop (B,) bool mask of
        labels replaced by the null label."""
        if drop is None and self.drop_in_model and self.training and self.dropout_prob > 0:
            drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
        if drop is not None:
            y = torch.where(drop, torch.full_like(y, self.null_label), y)
        if y.numel() and not torch.compiler.is_compiling():
            lo, hi = torch.stack(torch.aminmax(y)).tolist()  # one reduction, one sync
            if lo < 0 or hi >= self.table.num_embeddings:
                if hi == self.num_classes and self.dropout_prob <= 0:
                    raise ValueError(f"label {hi} asks for the null label, but {self._NO_NULL}")
                raise ValueError(
                    f"class labels must lie in [0, {self.num_classes}"
                    + (f"] ({self.num_classes} = null)" if self.dropout_prob > 0 else ")")
                    + f", got {lo}..{hi}"
                )
        return self.table(y)  # (B, C)


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
