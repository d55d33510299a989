"""Real quantized layers: packed low-bit codes, fp16 scales and zero points (or a per-row fp16
codebook), AWQ's input-channel scale, and a sparse full-precision part in CSR -- dequantized
on the fly in ``forward`` -- and the save/load of a whole quantized model as one checked
safetensors file. :class:`QuantLinear` replaces an ``nn.Linear``, :class:`QuantEmbedding` an
``nn.Embedding`` (its table (num_embeddings, embedding_dim) is stored like a linear weight
(out, in), so groups run along the embedding dimension); both are :class:`QuantModule`.

The weight a :class:`QuantLinear` computes with is ``W = dense`` with the sparse positions
replaced by their stored values: ``dense = (code - zero) * scale`` per group (uniform) or
``codebook[row, code]``, divided by ``in_scale`` per input column when AWQ set one. Sparse
values are stored in fp16 with int32 column indices and int32 row pointers, so a sparse
weight costs 48 bits.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..core.io import CheckpointError, load_tensors, save_tensors
from . import grid as G

__all__ = [
    "QuantModule",
    "QuantLinear",
    "QuantEmbedding",
    "save_quantized",
    "load_quantized",
    "quantized_layers",
]

SPARSE_DTYPE = torch.float16
FILE_KIND = "tenfold.requant.model.v1"


class QuantModule(nn.Module):
    """A quantized weight (out, in) and how it is stored (see the module text); the layer
    types :class:`QuantLinear` and :class:`QuantEmbedding` add what they compute. Built by
    :func:`tenfold.requant.quantize_` or :meth:`from_parts`; :func:`load_quantized` rebuilds
    it from a file."""

    kind = "weight"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group: int,
        bias: bool = False,
        codebook: bool = False,
        in_scale: bool = False,
        nnz: int = 0,
    ):
        super().__init__()
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be 1-8, got {bits}")
        G.groups_of(in_features, group)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group = bits, group
        n = in_features * out_features
        ng = in_features // group
        self.register_buffer("packed", torch.zeros(-(-n * bits // 8), dtype=torch.uint8))
        if codebook:
            self.register_buffer("codebook", torch.zeros(out_features, 1 << bits,
                                                         dtype=G.SCALE_DTYPE))  # fmt: skip
            self.scale = self.zero = None
        else:
            self.codebook = None
            self.register_buffer("scale", torch.ones(out_features, ng, dtype=G.SCALE_DTYPE))
            self.register_buffer("zero", torch.zeros(out_features, ng, dtype=torch.uint8))
        if in_scale:
            self.register_buffer("in_scale", torch.ones(in_features, dtype=G.SCALE_DTYPE))
        else:
            self.in_scale = None
        self.register_buffer("sparse_crow", torch.zeros(out_features + 1, dtype=torch.int32))
        self.register_buffer("sparse_col", torch.zeros(nnz, dtype=torch.int32))
        self.register_buffer("sparse_val", torch.zeros(nnz, dtype=SPARSE_DTYPE))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_parts(
        cls,
        codes: Tensor,
        bits: int,
        group: int,
        scale: Tensor | None = None,
        zero: Tensor | None = None,
        codebook: Tensor | None = None,
        in_scale: Tensor | None = None,
        sparse_mask: Tensor | None = None,
        weight: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> QuantModule:
        """From integer codes (out, in), their grid (``scale``/``zero`` per group, or a
        per-row ``codebook``), AWQ's ``in_scale``, and a boolean ``sparse_mask`` (out, in) of
        the positions that keep their value from ``weight`` in the sparse part."""
        O, I = codes.shape
        nnz = int(sparse_mask.sum()) if sparse_mask is not None else 0
        if nnz and (weight is None or weight.shape != codes.shape):
            raise ValueError("a sparse part needs the full-precision weight of the same shape")
        m = cls(I, O, bits, group, bias is not None, codebook is not None, in_scale is not None,
                nnz)  # fmt: skip
        m.packed.copy_(G.pack_codes(codes, bits))
        if codebook is not None:
            m.codebook.copy_(codebook.to(G.SCALE_DTYPE))
        else:
            m.scale.copy_(scale.to(G.SCALE_DTYPE))
            m.zero.copy_(zero.round().to(torch.uint8))
        if in_scale is not None:
            m.in_scale.copy_(in_scale.to(G.SCALE_DTYPE))
        if nnz:
            rows, cols = sparse_mask.nonzero(as_tuple=True)  # row-major order
            counts = torch.bincount(rows, minlength=O)
            m.sparse_crow[1:] = torch.cumsum(counts, 0).to(torch.int32)
            m.sparse_col.copy_(cols.to(torch.int32))
            m.sparse_val.copy_(weight.detach()[rows, cols].to(SPARSE_DTYPE))
        if bias is not None:
            m.bias.data.copy_(bias.detach().float())
        return m

    # ------------------------------------------------------------------ computing
    def codes(self) -> Tensor:
        return G.unpack_codes(self.packed, self.bits, self.in_features * self.out_features).view(
            self.out_features, self.in_features
        )

    def dequantize(self) -> Tensor:
        """The fp32 weight (out, in) this layer computes with."""
        q = self.codes()  # (O, I)
        if self.codebook is not None:
            w = torch.gather(self.codebook.float(), 1, q)
        else:
            w = G.uniform_dequant(q, self.scale.float(), self.zero.float(), self.group)
        if self.in_scale is not None:
            w = w / self.in_scale.float()[None, :]
        if self.sparse_val.numel():
            counts = (self.sparse_crow[1:] - self.sparse_crow[:-1]).long()
            rows = torch.repeat_interleave(torch.arange(self.out_features), counts)
            w = w.index_put((rows, self.sparse_col.long()), self.sparse_val.float())
        return w

    # ------------------------------------------------------------------ accounting
    @property
    def nnz(self) -> int:
        return int(self.sparse_val.numel())

    def stored_bits(self) -> dict[str, int]:
        """Bits each part takes: codes, grid (scales + zeros, or codebook), AWQ scale and the
        sparse part (values, column indices, row pointers)."""
        grid = (self.codebook.numel() * 16 if self.codebook is not None
                else self.scale.numel() * 16 + self.zero.numel() * self.bits)  # fmt: skip
        sparse = self.nnz * (16 + 32) + (self.out_features + 1) * 32 if self.nnz else 0
        return {
            "codes": self.in_features * self.out_features * self.bits,
            "grid": grid,
            "in_scale": self.in_features * 16 if self.in_scale is not None else 0,
            "sparse": sparse,
        }

    @property
    def bits_per_weight(self) -> float:
        return sum(self.stored_bits().values()) / (self.in_features * self.out_features)

    def spec(self) -> dict:
        return {
            "type": self.kind, "in_features": self.in_features,
            "out_features": self.out_features, "bits": self.bits, "group": self.group,
            "bias": self.bias is not None, "codebook": self.codebook is not None,
            "in_scale": self.in_scale is not None, "nnz": self.nnz,
        }  # fmt: skip

    def _repr_kind(self) -> str:
        kind = "codebook" if self.codebook is not None else "uniform"
        return (f"bits={self.bits}, group={self.group}, {kind}, sparse={self.nnz}, "
                f"{self.bits_per_weight:.3f} bits/weight")  # fmt: skip


class QuantLinear(QuantModule):
    """``nn.Linear`` with a quantized weight (see the module text)."""

    kind = "linear"

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QuantLinear expects inputs with {self.in_features} features, "
                             f"got shape {tuple(x.shape)}")  # fmt: skip
        w = self.dequantize().to(x.dtype)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, {self._repr_kind()}"


class QuantEmbedding(QuantModule):
    """``nn.Embedding`` with a quantized table: ``weight`` rows are tokens, groups run along
    the embedding dimension. ``forward`` dequantizes the table and looks the indices up."""

    kind = "embedding"

    def __init__(self, num_embeddings: int, embedding_dim: int, bits: int, group: int,
                 codebook: bool = False, in_scale: bool = False, nnz: int = 0,
                 padding_idx: int | None = None):  # fmt: skip
        super().__init__(embedding_dim, num_embeddings, bits, group, False, codebook, in_scale,
                         nnz)  # fmt: skip
        if padding_idx is not None and not -num_embeddings <= padding_idx < num_embeddings:
            raise ValueError(f"padding_idx {padding_idx} is outside [0, {num_embeddings})")
        self.padding_idx = None if padding_idx is None else padding_idx % num_embeddings

    @property
    def num_embeddings(self) -> int:
        return self.out_features

    @property
    def embedding_dim(self) -> int:
        return self.in_features

    @classmethod
    def from_module(cls, q: QuantModule, padding_idx: int | None = None) -> QuantEmbedding:
        """The same stored weight as ``q`` (e.g. the quantized readout an embedding is tied
        to), as an embedding; every buffer is copied, so the values match exactly."""
        e = cls(q.out_features, q.in_features, q.bits, q.group, q.codebook is not None,
                q.in_scale is not None, q.nnz, padding_idx)  # fmt: skip
        e.load_state_dict({k: v for k, v in q.state_dict().items() if k != "bias"})
        return e.to(q.packed.device)

    @classmethod
    def from_parts(cls, codes: Tensor, bits: int, group: int, padding_idx: int | None = None,
                   **parts) -> QuantEmbedding:  # fmt: skip
        """As :meth:`QuantModule.from_parts` for a table (num_embeddings, embedding_dim)."""
        if parts.get("bias") is not None:
            raise ValueError("an embedding has no bias")
        return cls.from_module(QuantLinear.from_parts(codes, bits, group, **parts), padding_idx)

    def forward(self, idx: Tensor) -> Tensor:
        if idx.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"QuantEmbedding takes integer indices, got {idx.dtype}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_embeddings):
            raise IndexError(f"QuantEmbedding indices must lie in [0, {self.num_embeddings}), "
                             f"got [{int(idx.min())}, {int(idx.max())}]")  # fmt: skip
        return F.embedding(idx, self.dequantize(), self.padding_idx)

    def spec(self) -> dict:
        return {**super().spec(), "padding_idx": self.padding_idx}

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self._repr_kind()}"


def quantized_layers(model: nn.Module) -> dict[str, QuantModule]:
    return {n: m for n, m in model.named_modules() if isinstance(m, QuantModule)}


# ---------------------------------------------------------------------- files
def save_quantized(model: nn.Module, path: str | Path, meta: dict | None = None) -> int:
    """Write every tensor of ``model`` (packed layers included) and the layer specs to one
    checked safetensors file, atomically; returns its size in bytes."""
    layers = quantized_layers(model)
    if not layers:
        raise ValueError("the model has no QuantLinear layers: quantize it first (quantize_)")
    state = model.state_dict()
    specs = {n: m.spec() for n, m in layers.items()}
    save_tensors(path, state, {"kind": FILE_KIND, "layers": specs, "user": meta or {}})
    return Path(path).stat().st_size


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)


def _check_layer(path, name: str, m: QuantModule) -> None:
    """What a loaded layer must satisfy before it computes anything."""

    def bad(msg):
        raise CheckpointError(f"{path}: layer {name}: {msg}")

    if m.scale is not None:
        if not torch.isfinite(m.scale).all() or (m.scale <= 0).any():
            bad("scales must be finite and positive")
        if int(m.zero.max()) > (1 << m.bits) - 1:
            bad(f"zero points beyond {(1 << m.bits) - 1} for {m.bits} bits")
    if m.codebook is not None and not torch.isfinite(m.codebook).all():
        bad("codebook values must be finite")
    if m.in_scale is not None and (not torch.isfinite(m.in_scale).all() or (m.in_scale <= 0).any()):
        bad("input scales must be finite and positive")
    crow, col = m.sparse_crow.long(), m.sparse_col.long()
    if crow[0] != 0 or crow[-1] != m.nnz or (crow[1:] < crow[:-1]).any():
        bad("sparse row pointers must rise from 0 to the number of sparse values")
    if m.nnz and (int(col.min()) < 0 or int(col.max()) >= m.in_features):
        bad(f"sparse column indices must lie in [0, {m.in_features})")
    if not torch.isfinite(m.sparse_val).all():
        bad("sparse values must be finite")


def load_quantized(model: nn.Module, path: str | Path) -> list[str]:
    """Load a file of :func:`save_quantized` into ``model`` -- the same architecture, fresh or
    not -- replacing each quantized layer's ``nn.Linear`` (``nn.Embedding``) by its
    :class:`QuantLinear` (:class:`QuantEmbedding`).
    Everything is checked (checksum, kind, shapes, value ranges) before the model changes.
    Returns the names of the quantized layers."""
    tensors, meta = load_tensors(path)
    if meta.get("kind") != FILE_KIND:
        raise CheckpointError(f"{path}: not a quantized tenfold model (kind {meta.get('kind')!r})")
    specs = meta.get("layers")
    if not isinstance(specs, dict) or not specs:
        raise CheckpointError(f"{path}: no quantized layers listed")
    built: dict[str, QuantModule] = {}
    for name, s in specs.items():
        if not isinstance(s, dict):
            raise CheckpointError(f"{path}: layer {name}: bad spec {s!r}")
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(f"{path}: the model has no layer {name!r}") from None
        kind = s.get("type", "linear")  # files before QuantEmbedding hold linear layers only
        if kind not in ("linear", "embedding"):
            raise CheckpointError(f"{path}: layer {name}: unknown layer type {kind!r}")
        if kind == "embedding":
            if not isinstance(old, (nn.Embedding, QuantEmbedding)):
                raise CheckpointError(f"{path}: {name} is a {type(old).__name__}, not an "
                                      "embedding")  # fmt: skip
            have = (old.embedding_dim, old.num_embeddings)
        else:
            if not isinstance(old, (nn.Linear, QuantLinear)):
                raise CheckpointError(f"{path}: {name} is a {type(old).__name__}, not a linear "
                                      "layer")  # fmt: skip
            have = (old.in_features, old.out_features)
        if have != (s.get("in_features"), s.get("out_features")):
            raise CheckpointError(
                f"{path}: {name} is {have[0]} -> {have[1]} in the model but "
                f"{s.get('in_features')} -> {s.get('out_features')} in the file"
            )
        try:
            if kind == "embedding":
                pad = s.get("padding_idx")
                q = QuantEmbedding(s["out_features"], s["in_features"], int(s["bits"]),
                                   int(s["group"]), bool(s["codebook"]), bool(s["in_scale"]),
                                   int(s["nnz"]), None if pad is None else int(pad))  # fmt: skip
            else:
                q = QuantLinear(s["in_features"], s["out_features"], int(s["bits"]),
                                int(s["group"]), bool(s["bias"]), bool(s["codebook"]),
                                bool(s["in_scale"]), int(s["nnz"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: layer {name}: bad spec {s}: {e}") from None
        own = q.state_dict()
        for k, t in own.items():
            got = tensors.get(f"{name}.{k}")
            if got is None or got.shape != t.shape or got.dtype != t.dtype:
                what = "missing" if got is None else f"{got.dtype} {tuple(got.shape)}"
                raise CheckpointError(f"{path}: {name}.{k}: expected {t.dtype} "
                                      f"{tuple(t.shape)}, got {what}")  # fmt: skip
        q.load_state_dict({k: tensors[f"{name}.{k}"] for k in own})
        _check_layer(path, name, q)
        built[name] = q
    # the rest of the model: every other tensor present, with its shape and dtype
    rest = {k: v for k, v in model.state_dict().items()
            if not any(k.startswith(f"{n}.") for n in built)}  # fmt: skip
    layer_keys = {f"{n}.{k}" for n, q in built.items() for k in q.state_dict()}
    missing = sorted(set(rest) - set(tensors))
    unexpected = sorted(set(tensors) - set(rest) - layer_keys)
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not match the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")  # fmt: skip
    for k, v in rest.items():
        if tensors[k].shape != v.shape:
            raise CheckpointError(f"{path}: {k} is {tuple(tensors[k].shape)} in the file, "
                                  f"{tuple(v.shape)} in the model")  # fmt: skip
    device = next(iter(model.parameters()), torch.zeros(0)).device
    for name, q in built.items():
        _set_module(model, name, q.to(device))
    model.load_state_dict(tensors, strict=True)
    return list(built)


def model_bits_per_weight(model: nn.Module) -> float:
    """Bits per weight over the quantized layers, every stored part included."""
    layers = quantized_layers(model).values()
    n = sum(m.in_features * m.out_features for m in layers)
    return math.fsum(sum(m.stored_bits().values()) for m in layers) / n if n else float("nan")
