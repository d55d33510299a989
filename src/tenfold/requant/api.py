"""Public API of ReQuant: a config and one verb, ``quantize_``.

``quantize_(model, RequantConfig(...), calib)`` replaces every selected ``nn.Linear`` of
``model`` by a :class:`~tenfold.requant.qlinear.QuantLinear`, in place, and returns the
names of the layers it replaced. Steps, each switchable for the ablation:

1. **Base quantization**, layer after layer in module order (``rtn``, ``gptq``, ``awq``,
   ``squeezellm``): each layer sees calibration inputs that went through the layers
   quantized before it (``sequential=False``: inputs of the full-precision model). SqueezeLLM's codebooks are per output row (``group_size`` does not
   apply) and weighted by the Fisher diagonal, measured once on the original model.
2. **Outliers** (``outlier_ratio`` > 0 or ``"auto"``): the largest-magnitude weights leave
   the dense part for a sparse full-precision part, and the dense rest is quantized again
   by the base method (its grid no longer stretched by them). How many per layer is
   *self-adaptive* under a global budget (:func:`tenfold.requant.requant.allocate_outliers`):
   each layer's activation-weighted error is measured at a few ratios and a Lagrange
   multiplier splits the budget where it lowers the summed error most.
3. **Significant weights** (``significant_ratio`` > 0): in ``steps`` equal steps, the weights
   with the largest PQI (:func:`tenfold.requant.sensitivity.pqi`, recomputed on the current
   model between steps) go back to full precision in the sparse part.

Everything a layer stores -- packed codes, fp16 grid, sparse values and indices -- counts in
its ``bits_per_weight``.

**Embeddings** (``embeddings=True``): every selected ``nn.Embedding`` becomes a
:class:`~tenfold.requant.qlinear.QuantEmbedding` on the same per-group grid (groups along
the embedding dimension) by RTN whatever the base: an embedding's input is one-hot, so the
Hessian GPTQ and AWQ use is diagonal (token frequencies) and calibration has nothing to add
beyond RTN. Outliers at ``outlier_ratio`` are taken out by magnitude (uniform rule); the PQI
detach applies to linear layers only. An embedding tied to a linear layer that is quantized
(the readout, when ``skip`` leaves it in) takes that layer's quantized weight, so the tie
holds in value.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch import Tensor

from ..core.validate import ConfigError, check_config, config_fail
from . import grid as G
from .qlinear import QuantLinear, _set_module
from .quantizers import (
    InputStats,
    QuantWeight,
    awq_quantize,
    gptq_quantize,
    rtn_quantize,
    squeezellm_quantize,
)
from .sensitivity import Quadrature, lm_loss

__all__ = [
    "BaseQuantizer",
    "RequantConfig",
    "quantize_",
    "select_layers",
    "select_embeddings",
    "FilterFn",
]

FilterFn = Callable[[nn.Module, str], bool]
CALIB_BATCH = 8  # sequences per calibration batch when calib is one tensor


class BaseQuantizer(str, enum.Enum):
    RTN = "rtn"
    GPTQ = "gptq"
    AWQ = "awq"
    SQUEEZELLM = "squeezellm"


@dataclass(frozen=True)
class RequantConfig:
    """What ``quantize_`` does (see the module text).

    ``outlier_ratio``: share of each layer's weights moved to the sparse part as outliers
    (a fraction, e.g. 0.0025 for AWQ's 0.25 %), ``"auto"`` for the 0.45 % SqueezeLLM's own
    rule uses, spread over layers self-adaptively; 0 switches it off. ``adaptive=False``
    takes the same ratio in every layer (the ablation's "base rule").
    ``significant_ratio``: share of weights detached by PQI, in ``steps`` steps; 0 off.
    ``calib_size``: how many calibration sequences are used (the first ones).
    ``random_picks``: outliers and significant weights at random positions (same counts,
    seeded by ``seed``): the ablation's control for the selection rules.
    ``sequential``: calibrate each layer on inputs that went through the layers quantized
    before it (one calibration pass per layer, as GPTQ does); False takes every layer's
    inputs from one pass of the full-precision model (one pass in all: faster on deep models,
    slightly less accurate).
    ``embeddings``: quantize the ``nn.Embedding`` tables too (RTN, see the module text).
    """

    base: BaseQuantizer = BaseQuantizer.GPTQ
    bits: int = 4
    group_size: int | None = 128
    outlier_ratio: float | Literal["auto"] = 0.0
    adaptive: bool = True
    significant_ratio: float = 0.0
    steps: int = 2
    pqi_points: int = 8
    quadrature: Quadrature = Quadrature.MIDPOINT
    calib_size: int = 64
    damp: float = 0.01
    act_order: bool = False
    gptq_block: int = 128
    awq_grid: int = 20
    skip: tuple[str, ...] = ("lm_head",)
    random_picks: bool = False
    sequential: bool = True
    embeddings: bool = False
    seed: int = 0

    def __post_init__(self):
        r = self.outlier_ratio  # by hand first: a number or "auto"
        ok = r == "auto" or (
            isinstance(r, (int, float)) and not isinstance(r, bool) and 0.0 <= r < 0.5
        )
        if not ok:
            raise ConfigError(
                f"RequantConfig.outlier_ratio must be a fraction in [0, 0.5) or 'auto', got {r!r}"
            )
        if r != "auto":
            object.__setattr__(self, "outlier_ratio", float(r))
        check_config(
            self, bits="[2,8]", group_size=">=1", significant_ratio="[0,0.5)", steps=">=1",
            pqi_points=">=1", calib_size=">=1", damp="[0,1]", gptq_block=">=1 pow2",
            awq_grid=">=1", skip="empty", seed=">=0",
        )  # fmt: skip
        if self.outlier_ratio_value + self.significant_ratio >= 0.5:
            config_fail(self, "outlier_ratio + significant_ratio must stay below 0.5")

    @property
    def outlier_ratio_value(self) -> float:
        return 0.0045 if self.outlier_ratio == "auto" else float(self.outlier_ratio)


# ---------------------------------------------------------------------- layer selection
def select_layers(
    model: nn.Module, skip: Sequence[str] = (), filter_fn: FilterFn | None = None
) -> list[str]:
    """Names of the ``nn.Linear`` layers ``quantize_`` would take, in module order."""
    return _select(model, nn.Linear, skip, filter_fn)


def select_embeddings(
    model: nn.Module, skip: Sequence[str] = (), filter_fn: FilterFn | None = None
) -> list[str]:
    """Names of the ``nn.Embedding`` tables ``quantize_(..., embeddings=True)`` would take."""
    return _select(model, nn.Embedding, skip, filter_fn)


def _select(model, kind, skip, filter_fn) -> list[str]:
    out = []
    for name, mod in model.named_modules():
        if not name or not isinstance(mod, kind) or isinstance(mod, QuantLinear):
            continue
        if any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name.split(".")[-1], p)
               for p in skip):  # fmt: skip
            continue
        if filter_fn is not None and not filter_fn(mod, name):
            continue
        out.append(name)
    return out


def _calibration(calib, size: int) -> list:
    if isinstance(calib, Tensor):
        if calib.dim() < 1 or calib.shape[0] == 0:
            raise ValueError("the calibration data is empty")
        n = min(size, calib.shape[0])
        return [calib[i : min(i + CALIB_BATCH, n)] for i in range(0, n, CALIB_BATCH)]
    try:
        batches = list(calib)
    except TypeError:
        raise TypeError(f"calib must be a tensor of sequences or a list of batches, got "
                        f"{type(calib).__name__}") from None  # fmt: skip
    if not batches:
        raise ValueError("the calibration data is empty: give at least one batch")
    out, n = [], 0
    for b in batches:
        if n >= size:
            break
        if isinstance(b, Tensor) and b.dim() >= 1:
            if b.shape[0] == 0:
                raise ValueError("a calibration batch is empty")
            b = b[: size - n]
            n += b.shape[0]
        else:
            n += 1
        out.append(b)
    return out


def _capture(model, names: list[str], batches, run: Callable) -> dict[str, InputStats]:
    """Run the calibration batches once and accumulate what each layer in ``names`` gets."""
    stats = {n: InputStats(model.get_submodule(n).in_features) for n in names}
    hooks = []
    for n in names:

        def hook(_m, args, st=stats[n]):
            st.add(args[0])

        hooks.append(model.get_submodule(n).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for b in batches:
                run(model, b)
    finally:
        for h in hooks:
            h.remove()
    for n, st in stats.items():
        if st.n == 0:
            raise ValueError(f"no calibration input reached layer {n}: check calib and loss_fn")
    return stats


def _base(
    cfg: RequantConfig,
    w: Tensor,
    stats: InputStats | None,
    group: int,
    fisher: Tensor | None = None,
) -> QuantWeight:
    if cfg.base is BaseQuantizer.SQUEEZELLM:
        return squeezellm_quantize(w, fisher, cfg.bits)
    if cfg.base is BaseQuantizer.RTN:
        return rtn_quantize(w, cfg.bits, group)
    if cfg.base is BaseQuantizer.GPTQ:
        return gptq_quantize(w, stats.hessian, cfg.bits, group, cfg.damp, cfg.gptq_block,
                             cfg.act_order)  # fmt: skip
    return awq_quantize(w, stats, cfg.bits, group, cfg.awq_grid)


def _check_model(
    model: nn.Module, names: list[str], group_size: int | None, per_row: bool = False
) -> dict[str, int]:
    """Refuse NaN/inf weights and groups that do not divide a layer; the group length of each
    layer (``per_row``: one group per row of the linear layers, as SqueezeLLM's codebooks)."""
    groups = {}
    for n in names:
        m = model.get_submodule(n)
        if not torch.isfinite(m.weight).all():
            bad = int((~torch.isfinite(m.weight)).sum())
            raise ValueError(f"layer {n} has {bad} NaN/inf weights: quantizing them would hide "
                             "it; fix or skip the layer")  # fmt: skip
        if isinstance(m, nn.Embedding):
            if m.max_norm is not None:
                raise ValueError(f"embedding {n} renormalises its rows (max_norm): a quantized "
                                 "table cannot; skip it")  # fmt: skip
            cols = m.embedding_dim
        elif per_row:
            groups[n] = m.in_features
            continue
        else:
            cols = m.in_features
        try:
            groups[n] = G.groups_of(cols, group_size)
        except ValueError as e:
            raise ValueError(f"layer {n}: {e}") from None
    return groups


def quantize_(
    model: nn.Module,
    config: RequantConfig,
    calib,
    filter_fn: FilterFn | None = None,
    loss_fn: Callable | None = None,
    progress: bool = False,
) -> list[str]:
    """Quantize ``model``'s linear layers in place (see the module text); returns their names.

    ``calib``: calibration data -- a tensor of sequences (N, T) or a list of batches;
    ``loss_fn(model, batch) -> scalar`` runs the model on a batch (default
    :func:`~tenfold.requant.sensitivity.lm_loss`, next-token loss of a causal LM); it drives
    the calibration passes and, for ReQuant's significant weights, the PQI.
    ``filter_fn(module, name) -> bool`` narrows the layers; ``config.skip`` holds glob
    patterns of names left alone."""
    from .requant import quantize_embedding, requant_layers

    if not isinstance(config, RequantConfig):
        raise TypeError(f"quantize_ needs a RequantConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_ needs an nn.Module, got {type(model).__name__}")
    names = select_layers(model, config.skip, filter_fn)
    embs = select_embeddings(model, config.skip, filter_fn) if config.embeddings else []
    if not names and not embs:
        what = "nn.Linear or nn.Embedding" if config.embeddings else "nn.Linear"
        raise ValueError(f"quantize_ found no {what} layer to quantize (check filter_fn and "
                         "config.skip)")  # fmt: skip
    groups = _check_model(model, names + embs, config.group_size,
                          per_row=config.base is BaseQuantizer.SQUEEZELLM)  # fmt: skip
    batches = _calibration(calib, config.calib_size)
    run = loss_fn or lm_loss
    # an embedding tied to a linear layer being quantized takes that layer's result
    tied = {e: n for e in embs for n in names
            if model.get_submodule(n).weight is model.get_submodule(e).weight}  # fmt: skip
    if names:
        requant_layers(model, names, groups, batches, run, config, progress)
    for e in embs:
        src = model.get_submodule(tied[e]) if e in tied else None
        _set_module(model, e, quantize_embedding(model.get_submodule(e), config, groups[e], src))
    return names + embs
