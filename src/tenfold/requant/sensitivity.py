"""Quantization-sensitivity metrics: how much the loss F changes when weights w move to their
quantized values w~ = w + dw, estimated element by element, against the exact change.

* ``exact_delta``: F(w~) - F(w), both on the same calibration batches.
* ``taylor1``: g . dw, with g the gradient at w.
* ``taylor2``: g . dw + 1/2 dw^T H dw, with H dw by a Hessian-vector product (double
  backward), never a dense Hessian; element-wise ``dw_i g_i + 1/2 dw_i (H dw)_i``.
* ``fisher``: 1/2 sum_i F_ii dw_i^2 with the empirical Fisher diagonal F_ii = mean over
  calibration sequences of the squared per-sequence gradient (as SqueezeLLM weighs weights).
* ``pqi``: the Post-quantization Integral, F(w~) - F(w) = int_0^1 grad F(w + t dw) . dw dt by a
  quadrature rule with ``points`` intervals; element-wise ``dw_i * sum_k c_k g_i(t_k)``:

  ========== ============================== ==========================
  rule       points t_k                     weights c_k
  ========== ============================== ==========================
  left       k/N, k = 0..N-1                1/N
  right      k/N, k = 1..N                  1/N
  midpoint   (k + 1/2)/N, k = 0..N-1        1/N
  trapezoid  k/N, k = 0..N                  1/N (1/(2N) at the ends)
  ========== ============================== ==========================

  The paper does not publish its rule; its numbers (the excess over the exact change halving
  with each doubling of N) behave like a one-sided rule. ``midpoint`` is the default here:
  its error falls four-fold per doubling for a smooth path.

Every metric takes ``loss_fn(model, batch) -> scalar tensor`` (default :func:`lm_loss`), the
calibration ``batches`` and ``quantized``: parameter name -> its quantized value. F is the
mean of ``loss_fn`` over the batches. Results are :class:`Sensitivity` (element-wise maps and
their sums); weights are restored afterwards even on an error.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..core.validate import check_int

__all__ = [
    "Quadrature",
    "Sensitivity",
    "lm_loss",
    "mean_loss",
    "exact_delta",
    "taylor1",
    "taylor2",
    "fisher",
    "pqi",
    "quadrature",
    "weights_at",
]


class Quadrature(str, enum.Enum):
    LEFT = "left"
    RIGHT = "right"
    MIDPOINT = "midpoint"
    TRAPEZOID = "trapezoid"


LossFn = Callable[[nn.Module, object], Tensor]


def lm_loss(model: nn.Module, batch: Tensor) -> Tensor:
    """Next-token cross-entropy of a causal LM on token ids ``batch`` (B, T): the model sees
    ``batch[:, :-1]`` and returns logits (B, T-1, V), or a tuple whose first item they are."""
    if not isinstance(batch, Tensor) or batch.dim() != 2 or batch.shape[1] < 2:
        raise ValueError("lm_loss needs token ids of shape (B, T) with T >= 2; pass your own "
                         "loss_fn for other models")  # fmt: skip
    out = model(batch[:, :-1])
    logits = out[0] if isinstance(out, tuple) else out  # (B, T-1, V)
    if logits.dtype != torch.float64:  # float64 models keep float64 losses (tiny dF)
        logits = logits.float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


@dataclass
class Sensitivity:
    """Element-wise estimates of each weight's share of the loss change, by parameter name."""

    element: dict[str, Tensor]

    @property
    def per_layer(self) -> dict[str, float]:
        return {k: float(v.double().sum()) for k, v in self.element.items()}

    @property
    def total(self) -> float:
        return float(sum(v.double().sum() for v in self.element.values()))


def quadrature(points: int, rule: Quadrature | str) -> list[tuple[float, float]]:
    """(t_k, c_k) of ``rule`` with ``points`` intervals on [0, 1] (table in the module text)."""
    n = check_int("points", points, ">=1")
    try:
        rule = Quadrature(rule)
    except ValueError:
        raise ValueError(
            f"rule must be one of {[r.value for r in Quadrature]}, got {rule!r}"
        ) from None
    if rule is Quadrature.LEFT:
        return [(k / n, 1 / n) for k in range(n)]
    if rule is Quadrature.RIGHT:
        return [((k + 1) / n, 1 / n) for k in range(n)]
    if rule is Quadrature.MIDPOINT:
        return [((k + 0.5) / n, 1 / n) for k in range(n)]
    return [(k / n, (0.5 if k in (0, n) else 1.0) / n) for k in range(n + 1)]


def _holders(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """id(parameter) -> every (module, attribute) holding it (tied weights have several)."""
    out: dict[int, list[tuple[nn.Module, str]]] = {}
    for mod in model.modules():
        for attr, p in mod._parameters.items():
            if p is not None:
                out.setdefault(id(p), []).append((mod, attr))
    return out


def _params(model: nn.Module, names: Sequence[str]) -> dict[str, nn.Parameter]:
    named = dict(model.named_parameters())
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"the model has no parameters {missing[:5]}")
    return {n: named[n] for n in names}


@contextlib.contextmanager
def weights_at(model: nn.Module, values: dict[str, Tensor]) -> Iterator[None]:
    """Within the block, parameter ``name`` of ``model`` is the tensor ``values[name]`` (which
    may require grad); every holder of a tied parameter sees it; restored on exit."""
    params = _params(model, list(values))
    holders = _holders(model)
    saved = []
    try:
        for name, p in params.items():
            v = values[name]
            if v.shape != p.shape:
                raise ValueError(f"{name}: value of shape {tuple(v.shape)} for a parameter of "
                                 f"shape {tuple(p.shape)}")  # fmt: skip
            for mod, attr in holders[id(p)]:
                saved.append((mod, attr, p))
                mod._parameters[attr] = v
        yield
    finally:
        for mod, attr, p in reversed(saved):
            mod._parameters[attr] = p


def _batches(batches) -> list:
    b = list(batches)
    if not b:
        raise ValueError("no calibration batches: pass a non-empty list")
    return b


def mean_loss(model: nn.Module, batches, loss_fn: LossFn = lm_loss) -> float:
    """F: the mean of ``loss_fn`` over ``batches`` (no gradients), in float64."""
    with torch.no_grad():
        vals = [float(loss_fn(model, b).double()) for b in _batches(batches)]
    return sum(vals) / len(vals)


def _check(model: nn.Module, quantized: dict[str, Tensor]) -> dict[str, nn.Parameter]:
    if not quantized:
        raise ValueError("quantized is empty: give parameter name -> quantized value")
    params = _params(model, list(quantized))
    for n, p in params.items():
        if quantized[n].shape != p.shape:
            raise ValueError(f"{n}: quantized value of shape {tuple(quantized[n].shape)} for "
                             f"a parameter of shape {tuple(p.shape)}")  # fmt: skip
    return params


def exact_delta(model, quantized, batches, loss_fn: LossFn = lm_loss) -> float:
    """F(w~) - F(w) on the same batches."""
    _check(model, quantized)
    batches = _batches(batches)
    base = mean_loss(model, batches, loss_fn)
    with weights_at(model, {k: v.detach().to(model.get_parameter(k).dtype)
                            for k, v in quantized.items()}):  # fmt: skip
        new = mean_loss(model, batches, loss_fn)
    return new - base


def _grad_at(model, names, point: dict[str, Tensor], batches, loss_fn) -> dict[str, Tensor]:
    """The gradient of F at parameter values ``point`` (float32), averaged over batches."""
    leaves = {n: point[n].detach().clone().requires_grad_(True) for n in names}
    acc = {n: torch.zeros_like(leaves[n], dtype=torch.float32) for n in names}
    with weights_at(model, leaves):
        for b in batches:
            loss = loss_fn(model, b)
            gs = torch.autograd.grad(loss, [leaves[n] for n in names], allow_unused=True)
            for n, g in zip(names, gs):
                if g is not None:
                    acc[n] += g.float()
    return {n: a / len(batches) for n, a in acc.items()}


def _deltas(params, quantized) -> dict[str, Tensor]:
    return {n: (quantized[n].detach().float() - p.detach().float()) for n, p in params.items()}


def taylor1(model, quantized, batches, loss_fn: LossFn = lm_loss) -> Sensitivity:
    """First-order Taylor: g_i dw_i with g at the original weights."""
    params = _check(model, quantized)
    batches, names = _batches(batches), list(params)
    dw = _deltas(params, quantized)
    g = _grad_at(model, names, {n: p.detach() for n, p in params.items()}, batches, loss_fn)
    return Sensitivity({n: g[n] * dw[n] for n in names})


def taylor2(model, quantized, batches, loss_fn: LossFn = lm_loss) -> Sensitivity:
    """Second-order Taylor: g_i dw_i + 1/2 dw_i (H dw)_i, H dw by double backward."""
    params = _check(model, quantized)
    batches, names = _batches(batches), list(params)
    dw = _deltas(params, quantized)
    leaves = {n: params[n].detach().clone().requires_grad_(True) for n in names}
    g_acc = {n: torch.zeros_like(dw[n]) for n in names}
    hv_acc = {n: torch.zeros_like(dw[n]) for n in names}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # fused attention kernels have no double backward: the math one is plain autograd
    with weights_at(model, leaves), sdpa_kernel(SDPBackend.MATH):
        for b in batches:
            loss = loss_fn(model, b)
            gs = torch.autograd.grad(loss, [leaves[n] for n in names], create_graph=True,
                                     allow_unused=True)  # fmt: skip
            dot = sum((g.float() * dw[n]).sum() for n, g in zip(names, gs) if g is not None)
            if not isinstance(dot, Tensor) or not dot.requires_grad:
                continue
            hvs = torch.autograd.grad(dot, [leaves[n] for n in names], allow_unused=True)
            for n, g, hv in zip(names, gs, hvs):
                if g is not None:
                    g_acc[n] += g.detach().float()
                if hv is not None:
                    hv_acc[n] += hv.float()
    k = len(batches)
    return Sensitivity({n: (g_acc[n] / k) * dw[n] + 0.5 * dw[n] * (hv_acc[n] / k) for n in names})


def _sequences(batches) -> list:
    out = []
    for b in batches:
        if isinstance(b, Tensor) and b.dim() >= 1:
            out.extend(b[i : i + 1] for i in range(b.shape[0]))
        else:
            out.append(b)
    return out


def fisher(model, quantized, batches, loss_fn: LossFn = lm_loss) -> Sensitivity:
    """1/2 F_ii dw_i^2 with the empirical Fisher diagonal of per-sequence gradients."""
    params = _check(model, quantized)
    seqs, names = _sequences(_batches(batches)), list(params)
    dw = _deltas(params, quantized)
    point = {n: p.detach() for n, p in params.items()}
    acc = {n: torch.zeros_like(dw[n]) for n in names}
    for s in seqs:
        g = _grad_at(model, names, point, [s], loss_fn)
        for n in names:
            acc[n] += g[n] ** 2
    return Sensitivity({n: 0.5 * (acc[n] / len(seqs)) * dw[n] ** 2 for n in names})


def pqi(
    model,
    quantized,
    batches,
    loss_fn: LossFn = lm_loss,
    points: int = 32,
    rule: Quadrature | str = Quadrature.MIDPOINT,
    progress: Callable[[int, int], None] | None = None,
) -> Sensitivity:
    """The Post-quantization Integral: dw_i times the quadrature of g_i along the straight
    path from w to w~ (table in the module text); ``progress(k, n)`` after each point."""
    params = _check(model, quantized)
    batches, names = _batches(batches), list(params)
    nodes = quadrature(points, rule)
    dw = _deltas(params, quantized)
    w0 = {n: p.detach().float() for n, p in params.items()}
    avg = {n: torch.zeros_like(dw[n]) for n in names}
    for k, (t, c) in enumerate(nodes):
        point = {n: (w0[n] + t * dw[n]).to(params[n].dtype) for n in names}
        g = _grad_at(model, names, point, batches, loss_fn)
        for n in names:
            avg[n] += c * g[n]
        if progress is not None:
            progress(k + 1, len(nodes))
    return Sensitivity({n: avg[n] * dw[n] for n in names})
