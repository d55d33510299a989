"""ReQuant's pipeline behind :func:`tenfold.requant.quantize_`: base quantization layer by
layer, self-adaptive outliers under a global budget, and step-wise detach of significant
weights by PQI. Design choices, stated (the paper publishes neither algorithm):

* **Outliers** are a layer's largest-magnitude weights. They are set to 0 in the dense part
  (0 is always on the grid, so the dense part represents them exactly, and GPTQ spreads no
  error from them), the dense part is quantized again by the base method, and their
  original values go to the sparse part.
* **Self-adaptive ratio** (:func:`allocate_outliers`): for each layer l and each candidate
  ratio r in ``CANDIDATES`` x the budget ratio, the activation-weighted error
  ``e_l(r) = sum_ij H_jj (W - W_hat_r)_ij^2`` of RTN after removing the top-r weights (RTN as
  a cheap proxy for every base method; ``H_jj`` the calibration Hessian's diagonal, so
  ``e_l`` approximates the layer's output error). The ratios minimise ``sum_l e_l(r_l)``
  subject to ``sum_l r_l n_l <= budget``: each layer takes ``argmin_r e_l(r) + lambda r n_l``
  and ``lambda`` is bisected to the smallest value that meets the budget.
* **Significant weights**: in each of ``steps`` steps, PQI is computed on the model as it
  stands (the dense part quantized, the sparse part in place); among positions not yet
  sparse, the ``significant_ratio / steps`` share of all quantized weights with the largest
  (signed) PQI -- the ones whose quantization raises the loss most -- is chosen across all
  layers at once and goes back to its original value in the sparse part.
* ``random_picks`` replaces both choices by random positions of the same counts (seeded):
  the control that says whether the selection rules matter.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
from torch import Tensor

from . import grid as G
from .qlinear import QuantEmbedding, QuantLinear, QuantModule, _set_module
from .quantizers import InputStats, QuantWeight, rtn_quantize
from .sensitivity import _grad_at, _sequences, pqi

__all__ = [
    "allocate_outliers",
    "fisher_diagonal",
    "top_magnitude_mask",
    "requant_layers",
    "quantize_embedding",
    "CANDIDATES",
]

CANDIDATES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)  # x the budget ratio, tried in every layer


def top_magnitude_mask(w: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` largest |w| (ties broken by position)."""
    mask = torch.zeros(w.numel(), dtype=torch.bool)
    if k > 0:
        mask[torch.topk(w.detach().abs().reshape(-1), min(k, w.numel())).indices] = True
    return mask.view_as(w)


def _random_mask(w: Tensor, k: int, gen: torch.Generator) -> Tensor:
    mask = torch.zeros(w.numel(), dtype=torch.bool)
    mask[torch.randperm(w.numel(), generator=gen)[:k]] = True
    return mask.view_as(w)


def _weighted_error(w: Tensor, ratio: float, bits: int, group: int, h_diag: Tensor) -> float:
    k = round(ratio * w.numel())
    mask = top_magnitude_mask(w, k)
    dense = torch.where(mask, torch.zeros_like(w), w)
    w_hat = torch.where(mask, w, G.rtn(dense, bits, group))
    return float((((w - w_hat) ** 2) * h_diag[None, :]).sum())


def allocate_outliers(
    weights: dict[str, Tensor],
    h_diag: dict[str, Tensor],
    ratio: float,
    bits: int,
    groups: dict[str, int],
) -> dict[str, float]:
    """Per-layer outlier ratios whose weighted count stays within ``ratio`` of all weights
    (the rule in the module text)."""
    names = list(weights)
    sizes = {n: weights[n].numel() for n in names}
    budget = ratio * sum(sizes.values())
    cands = [ratio * c for c in CANDIDATES]
    err = {n: [_weighted_error(weights[n].float(), r, bits, groups[n], h_diag[n].float())
               for r in cands] for n in names}  # fmt: skip

    def pick(lam: float) -> dict[str, float]:
        return {n: min(cands, key=lambda r, n=n: err[n][cands.index(r)] + lam * r * sizes[n])
                for n in names}  # fmt: skip

    def used(choice: dict[str, float]) -> float:
        return sum(choice[n] * sizes[n] for n in names)

    if used(pick(0.0)) <= budget:
        return pick(0.0)
    lo, hi = 0.0, 1.0
    while used(pick(hi)) > budget and hi < 1e30:
        hi *= 10.0
    for _ in range(100):
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 1e6
        if used(pick(mid)) > budget:
            lo = mid
        else:
            hi = mid
        if lo > 0 and hi / lo < 1 + 1e-9:
            break
    return pick(hi)


def fisher_diagonal(model, names: list[str], batches, run) -> dict[str, Tensor]:
    """Mean squared per-sequence gradient of each layer's weight (the empirical Fisher
    diagonal SqueezeLLM weighs its k-means by), by layer name."""
    params = {f"{n}.weight": model.get_submodule(n).weight.detach() for n in names}
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    seqs = _sequences(batches)
    for s in seqs:
        g = _grad_at(model, list(params), params, [s], run)
        for n in params:
            acc[n] += g[n] ** 2
    return {n: acc[f"{n}.weight"] / len(seqs) for n in names}


def quantize_embedding(
    emb: nn.Embedding, cfg, group: int, tied: QuantModule | None = None
) -> QuantEmbedding:
    """``emb`` quantized by RTN on ``cfg``'s grid with magnitude outliers at
    ``cfg.outlier_ratio`` (or, when ``tied`` is given, the quantized weight of the linear
    layer it shares its table with)."""
    if tied is not None:
        return QuantEmbedding.from_module(tied, emb.padding_idx)
    w = emb.weight.detach().float()
    k = round(cfg.outlier_ratio_value * w.numel())
    mask = top_magnitude_mask(w, k) if k else None
    dense = torch.where(mask, torch.zeros_like(w), w) if mask is not None else w
    qw = rtn_quantize(dense, cfg.bits, group)
    return QuantEmbedding.from_parts(
        qw.codes, cfg.bits, group, padding_idx=emb.padding_idx, scale=qw.scale, zero=qw.zero,
        sparse_mask=mask, weight=w,
    ).to(emb.weight.device)  # fmt: skip


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def _build(qw: QuantWeight, mask: Tensor | None, weight: Tensor, bias: Tensor | None):
    return QuantLinear.from_parts(
        qw.codes, qw.bits, qw.group, scale=qw.scale, zero=qw.zero, codebook=qw.codebook,
        in_scale=qw.in_scale, sparse_mask=mask, weight=weight, bias=bias,
    ).to(weight.device)  # fmt: skip


def requant_layers(
    model: nn.Module,
    names: list[str],
    groups: dict[str, int],
    batches: list,
    run: Callable,
    cfg,
    progress: bool = False,
) -> list[str]:
    from .api import BaseQuantizer, _base, _capture

    originals: dict[str, nn.Linear] = {n: model.get_submodule(n) for n in names}
    weights = {n: m.weight.detach().float().clone() for n, m in originals.items()}
    biases = {n: (m.bias.detach().clone() if m.bias is not None else None)
              for n, m in originals.items()}  # fmt: skip
    need_stats = cfg.base in (BaseQuantizer.GPTQ, BaseQuantizer.AWQ) or (
        cfg.outlier_ratio_value > 0 and cfg.adaptive
    )
    fish: dict[str, Tensor] = {}
    if cfg.base is BaseQuantizer.SQUEEZELLM:  # Fisher diagonal of the original weights
        fish = fisher_diagonal(model, names, batches, run)
    stats: dict[str, InputStats] = {}
    qws: dict[str, QuantWeight] = {}
    sparse: dict[str, Tensor | None] = dict.fromkeys(names)  # bool masks of the sparse part

    bar = _bar(progress, len(names), f"{cfg.base.value} {cfg.bits}-bit")
    if need_stats and not cfg.sequential:  # every layer's inputs from one fp pass
        stats = _capture(model, names, batches, run)
    for n in names:  # 1. base, layer after layer
        if need_stats and cfg.sequential:
            stats[n] = _capture(model, [n], batches, run)[n]
        qws[n] = _base(cfg, weights[n], stats.get(n), groups[n], fish.get(n))
        _set_module(model, n, _build(qws[n], None, weights[n], biases[n]))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    gen = torch.Generator().manual_seed(cfg.seed)
    ratio = cfg.outlier_ratio_value
    if ratio > 0:  # 2. outliers
        if cfg.adaptive:
            h_diag = {n: torch.diag(stats[n].hessian) for n in names}
            ratios = allocate_outliers(weights, h_diag, ratio, cfg.bits, groups)
        else:
            ratios = dict.fromkeys(names, ratio)
        for n in names:
            k = round(ratios[n] * weights[n].numel())
            if k == 0:
                continue
            if cfg.random_picks:
                mask = _random_mask(weights[n], k, gen)
            else:
                mask = top_magnitude_mask(weights[n], k)
            dense = torch.where(mask, torch.zeros_like(weights[n]), weights[n])
            f = fish.get(n)
            f = torch.where(mask, torch.zeros_like(f), f) if f is not None else None
            qws[n] = _base(cfg, dense, stats.get(n), groups[n], f)
            sparse[n] = mask
            _set_module(model, n, _build(qws[n], sparse[n], weights[n], biases[n]))

    if cfg.significant_ratio > 0:  # 3. significant weights, step by step
        total = sum(w.numel() for w in weights.values())
        per_step = round(cfg.significant_ratio / cfg.steps * total)
        for _ in range(cfg.steps):
            current = {n: model.get_submodule(n).dequantize() for n in names}
            for n in names:  # the full-precision layers back, to take gradients
                _set_module(model, n, originals[n])
            try:
                sens = pqi(model, {f"{n}.weight": current[n] for n in names}, batches, run,
                           cfg.pqi_points, cfg.quadrature)  # fmt: skip
            finally:
                for n in names:
                    _set_module(model, n, _build(qws[n], sparse[n], weights[n], biases[n]))
            scores = []
            for n in names:
                s = sens.element[f"{n}.weight"].clone()
                if sparse[n] is not None:
                    s[sparse[n]] = -float("inf")
                scores.append(s.reshape(-1))
            flat = torch.cat(scores)
            if cfg.random_picks:  # the same count at random positions not yet sparse
                flat = torch.where(torch.isfinite(flat), torch.rand(flat.shape, generator=gen),
                                   flat)  # fmt: skip
            take = torch.topk(flat, min(per_step, flat.numel())).indices
            chosen = torch.zeros(flat.numel(), dtype=torch.bool)
            chosen[take] = True
            chosen &= torch.isfinite(flat)
            off = 0
            for n in names:
                c = chosen[off : off + weights[n].numel()].view_as(weights[n])
                off += weights[n].numel()
                if c.any():
                    sparse[n] = c if sparse[n] is None else (sparse[n] | c)
                    _set_module(model, n, _build(qws[n], sparse[n], weights[n], biases[n]))
    return names
