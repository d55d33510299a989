"""A Llama-style decoder-only language model (RMSNorm, RoPE, SwiGLU, optional GQA and
QK-norm), nanoGPT's ``model.py`` in shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validate import check_config
from .layers import Attention, RMSNorm, RotaryEmbedding, _check, make_mlp

__all__ = ["LMConfig", "LMBlock", "LM"]


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
    norm_eps: float = 1e-5  # every RMSNorm, the q/k norms included
    tie_embeddings: bool = True
    # "gpt2": N(0, 0.02) with residual projections scaled by 1/sqrt(2 n_layer) (nanoGPT);
    # "llama": plain N(0, 0.02) everywhere (Hugging Face Llama's initializer_range)
    init: Literal["gpt2", "llama"] = "gpt2"

    def __post_init__(self):
        check_config(
            self,
            vocab_size=">=1",
            block_size=">=1",
            n_layer=">=1",
            n_heads=">=1",
            n_kv_heads=">=1",
            head_dim=">=2",
            mlp_hidden=">=1",
            rope_base=">0",
            norm_eps=">0",
        )
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
        _check(
            self.init in ("gpt2", "llama"),
            f"LMConfig.init must be 'gpt2' or 'llama', got {self.init!r}",
        )
        _check(
            self.norm_eps > 0 and math.isfinite(self.norm_eps) and self.rope_base > 0,
            f"LMConfig.norm_eps and rope_base must be > 0, got {self.norm_eps}, {self.rope_base}",
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


class LMBlock(nn.Module):
    def __init__(self, c: LMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attn = Attention(
            c.dim, c.n_heads, c.n_kv_heads, qk_norm=c.qk_norm, bias=False, norm_eps=c.norm_eps
        )
        self.mlp_norm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = make_mlp(c.mlp, c.dim, c.hidden, bias=False)

    def forward(
        self, x: Tensor, rope: tuple[Tensor, Tensor], cache: list[Tensor] | None = None
    ) -> Tensor:
        x = x + self.attn(self.attn_norm(x), rope, is_causal=True, cache=cache)  # (B, T, C)
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
        """``init="gpt2"``: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer);
        ``init="llama"``: N(0, 0.02) for every matrix. Biases zero, norms one."""
        for name, p in self.named_parameters():
            if p.ndim == 2:
                std = 0.02
                residual = name.endswith(("proj.weight", "down.weight", "fc2.weight"))
                if residual and self.config.init == "gpt2":
                    std = 0.02 / math.sqrt(2 * self.config.n_layer)
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        cache: list[list[Tensor]] | None = None,
        prefix: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``cache``: one list per block (``LM.new_cache()``) of the keys and values of the
        tokens seen so far; ``idx`` continues them (incremental decoding) and the cache
        grows in place. ``prefix`` (B, P, dim): embeddings placed before ``idx`` (a
        condition such as point-cloud or image tokens); they take positions like tokens,
        enter the cache, and get no logits (``logits`` is (B, T, V) for ``idx`` only)."""
        c = self.config
        if idx.ndim != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"LM expects integer token ids of shape (B, T), got {idx.dtype} {tuple(idx.shape)}"
            )
        B, T = idx.shape
        past = cache[0][0].shape[2] if cache and cache[0] else 0
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(
                f"cache must hold one list per block ({len(self.blocks)}), got {len(cache)}"
            )
        P = 0
        if prefix is not None:
            if prefix.ndim != 3 or prefix.shape[0] != B or prefix.shape[2] != c.dim:
                raise ValueError(
                    f"prefix must have shape (B={B}, P, dim={c.dim}), got {tuple(prefix.shape)}"
                )
            P = prefix.shape[1]
        if c.block_size < past + P + T:
            raise ValueError(f"sequence length {past + P + T} exceeds block_size={c.block_size}")
        rope = self.rope(torch.arange(past, past + P + T, device=idx.device))  # (P+T, D) x2
        x = self.tok_emb(idx)  # (B, T, C)
        if P:
            x = torch.cat([prefix.to(x.dtype), x], dim=1)  # (B, P+T, C)
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, None if cache is None else cache[i])  # (B, P+T, C)
        logits = self.lm_head(self.norm(x[:, P:]))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, c.vocab_size), targets.reshape(-1))
        return logits, loss

    def new_cache(self) -> list[list[Tensor]]:
        """An empty key/value cache for :meth:`forward` (one list per block)."""
        return [[] for _ in self.blocks]

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Sample ``max_new_tokens`` continuations of idx (B, T). With ``use_cache`` (and
        while the sequence fits in ``block_size``) each new token costs one token's forward
        pass over cached keys and values; otherwise the window is recomputed (reference)."""
        cache = self.new_cache() if use_cache else None
        fed = 0  # tokens of idx the cache holds
        for _ in range(max_new_tokens):
            if cache is not None and idx.shape[1] <= self.config.block_size:
                logits = self(idx[:, fed:], cache=cache)[0][:, -1, :]
                fed = idx.shape[1]
            else:
                logits = self(idx[:, -self.config.block_size :])[0][:, -1, :]
            logits = logits / max(temperature, 1e-6)  # (B, V)
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
                logits[logits < v[:, [-1]]] = -float("inf")
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
        return idx
