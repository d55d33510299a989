"""The quantizers a user would pick instead, run on the same model in the same run: torchao's
``IntxWeightOnlyConfig`` (per-group asymmetric int-b, fp16 scales) and HQQ (half-quadratic
zero/scale optimisation, its PyTorch backend, fp16 meta). Both are optional (``pip install
tenfold[peers]``); :func:`peer_missing` says why one cannot run.

Bits per weight are counted from what each layer holds: ``bits_per_weight`` counts codes at
their nominal b bits plus the scales and zero points as stored; ``stored_bits_per_weight``
counts every byte in memory (torchao's CPU format keeps codes unpacked in int8; HQQ packs
them into int32 words).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .api import FilterFn, _check_model, select_layers
from .qlinear import _set_module

__all__ = ["PEERS", "peer_missing", "peer_quantize", "peer_bits_per_weight", "peer_rows"]

PEERS = ("torchao", "hqq")
_INSTALL = "pip install 'tenfold[peers]' (torchao==0.18.0, hqq==0.2.8.post1)"


def peer_missing(peer: str) -> str | None:
    """None when ``peer`` can run here, else the reason (what to install)."""
    if peer not in PEERS:
        raise ValueError(f"unknown peer {peer!r}; choose from {PEERS}")
    try:
        if peer == "torchao":
            _quiet_import_torchao()
        else:
            import hqq.core.quantize  # noqa: F401
    except Exception as e:  # an import error of any kind means: not usable here
        return f"{peer} is not usable ({type(e).__name__}: {e}); {_INSTALL}"
    return None


def _quiet_import_torchao():
    # torchao logs a warning for each CUDA extension a CPU build cannot load
    log = logging.getLogger("torchao")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        import torchao.quantization  # noqa: F401
    finally:
        log.setLevel(old)


class _HQQ(nn.Module):
    """An ``HQQLinear`` (fp16 compute) that takes and returns the caller's dtype."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.in_features, self.out_features = layer.in_features, layer.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x.to(torch.float16)).to(x.dtype)


def peer_quantize(
    model: nn.Module,
    peer: str,
    bits: int,
    group_size: int,
    skip: Sequence[str] = ("lm_head",),
    filter_fn: FilterFn | None = None,
) -> list[str]:
    """Quantize ``model``'s ``nn.Linear`` layers (the same selection as ``quantize_``) in
    place with ``peer`` at ``bits`` and ``group_size``; returns the layer names."""
    why = peer_missing(peer)
    if why:
        raise RuntimeError(why)
    if not 2 <= int(bits) <= 8:
        raise ValueError(f"bits must be 2-8 for a peer, got {bits}")
    names = select_layers(model, skip, filter_fn)
    if not names:
        raise ValueError("peer_quantize found no nn.Linear layer to quantize")
    _check_model(model, names, group_size)  # the checks quantize_ makes
    if peer == "torchao":
        from torchao.quantization import IntxWeightOnlyConfig, MappingType
        from torchao.quantization import quantize_ as ao_quantize
        from torchao.quantization.granularity import PerGroup

        cfg = IntxWeightOnlyConfig(
            weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group_size),
            mapping_type=MappingType.ASYMMETRIC, scale_dtype=torch.float16,
        )  # fmt: skip
        chosen = set(names)
        ao_quantize(model, cfg, filter_fn=lambda _m, fqn: fqn in chosen)
    else:
        from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

        qc = BaseQuantizeConfig(nbits=int(bits), group_size=int(group_size))
        for n in names:
            lin = copy.deepcopy(model.get_submodule(n)).float().cpu()
            h = HQQLinear(lin, qc, compute_dtype=torch.float16, device="cpu")
            _set_module(model, n, _HQQ(h))
    return names


def peer_rows(
    model: nn.Module,
    peers: Sequence[str],
    bits: Sequence[int],
    group_size: int,
    evaluate: Callable[[nn.Module], dict],
    skip: Sequence[str] = ("lm_head",),
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], list[str]]:
    """For each peer that can run here and each bit width, a copy of ``model`` quantized by
    it and measured: rows ``{peer, bits, bits_per_weight, stored_bits_per_weight,
    **evaluate(copy)}``; and the reasons (:func:`peer_missing`) of the peers that cannot."""
    rows, missing = [], []
    for p in peers:
        why = peer_missing(p)
        if why:
            missing.append(why)
            continue
        for b in bits:
            if log is not None:
                log(f"peer {p} {b}-bit")
            m = copy.deepcopy(model)
            peer_quantize(m, p, b, group_size, skip=skip)
            nominal, stored = peer_bits_per_weight(m)
            rows.append({"peer": p, "bits": b, "bits_per_weight": nominal,
                         "stored_bits_per_weight": stored, **evaluate(m)})  # fmt: skip
    return rows, missing


def _layer_bits(m: nn.Module) -> tuple[int, int, int] | None:
    """(weights, nominal bits, stored bits) of a peer-quantized layer, or None."""
    if isinstance(m, _HQQ):
        h = m.layer
        n = h.in_features * h.out_features
        meta = sum(v.numel() * v.element_size() * 8 for v in h.meta.values()
                   if isinstance(v, Tensor))  # fmt: skip
        stored = h.W_q.numel() * h.W_q.element_size() * 8 + meta
        return n, int(h.meta["nbits"]) * n + meta, stored
    w = getattr(m, "weight", None)
    if isinstance(m, nn.Linear) and type(w).__name__ == "IntxUnpackedToInt8Tensor":
        n = w.qdata.numel()
        bits = int(str(w.target_dtype).removeprefix("torch.int"))
        meta = sum(t.numel() * t.element_size() * 8 for t in (w.scale, w.zero_point))
        return n, bits * n + meta, n * w.qdata.element_size() * 8 + meta
    return None


def peer_bits_per_weight(model: nn.Module) -> tuple[float, float]:
    """(nominal, stored) bits per weight over the peer-quantized layers (module text)."""
    rows = [b for m in model.modules() if (b := _layer_bits(m)) is not None]
    if not rows:
        raise ValueError("the model has no peer-quantized layer")
    n = sum(r[0] for r in rows)
    return sum(r[1] for r in rows) / n, sum(r[2] for r in rows) / n
