"""The base post-training weight quantizers, written here: RTN, GPTQ, AWQ and SqueezeLLM.

Each takes one layer's weight W (out, in) -- and, except RTN, what the calibration data
showed that layer -- and returns a :class:`QuantWeight`: integer codes on per-group grids
(:mod:`.grid`), plus AWQ's per-input-channel scale. Design choices, stated:

* **RTN**: per-group asymmetric min-max (:func:`.grid.rtn`).
* **GPTQ** (Frantar et al. 2023): Hessian ``H = 2/n sum x x^T`` of the layer inputs (float64),
  dead inputs (zero diagonal) pinned, damping ``damp * mean(diag H)``, the upper Cholesky
  factor of ``H^-1``, columns quantized one at a time with the error spread over the columns
  not yet quantized, lazily in blocks of ``block`` columns. A group's grid is set from the
  *updated* weights when its first column comes up. With ``act_order`` columns go in order
  of decreasing ``diag H`` and the grids are set from the original weights beforehand
  (static groups), so groups stay contiguous in the stored layout.
* **AWQ** (Lin et al. 2024): a per-input-channel scale ``s = mean|x|^alpha`` (normalised to a
  geometric mean of 1), alpha searched on a grid of ``grid`` points in [0, 1) to minimise
  ``||X W^T - X (Q(W diag s) diag s^-1)^T||^2`` on the calibration inputs. The scale is kept
  with the layer (``in_scale``) instead of being folded into the previous norm, so any
  ``nn.Linear`` can take it. The weight-clipping search of the AWQ paper is not done.
* **SqueezeLLM** (Kim et al. 2024): a non-uniform codebook of 2^b fp16 values per output row,
  by k-means weighted by the diagonal Fisher information of each weight (the mean squared
  per-sequence gradient): Lloyd iterations from a uniform grid over the row's range, empty
  clusters kept where they were, the final codes chosen against the fp16-rounded codebook.
  Its dense-and-sparse outliers are ReQuant's outlier step with the same ratio
  (``outlier_ratio="auto"``, 0.45 %, ``adaptive=False`` for SqueezeLLM's own uniform rule).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from . import grid as G

__all__ = [
    "QuantWeight",
    "rtn_quantize",
    "gptq_quantize",
    "awq_quantize",
    "squeezellm_quantize",
    "InputStats",
]


@dataclass
class QuantWeight:
    """One quantized weight: codes (out, in) on per-group uniform grids (scale, zero of shape
    (out, in // group)) or on a per-row ``codebook`` (out, 2^bits), and AWQ's input-channel
    scale (in,) or None."""

    codes: Tensor
    scale: Tensor | None
    zero: Tensor | None
    bits: int
    group: int
    in_scale: Tensor | None = None
    codebook: Tensor | None = None

    def dequantize(self) -> Tensor:
        if self.codebook is not None:
            w = torch.gather(self.codebook.float(), 1, self.codes)  # (O, I)
        else:
            w = G.uniform_dequant(self.codes, self.scale, self.zero, self.group)  # (O, I)
        if self.in_scale is not None:
            w = w / self.in_scale.float()[None, :]
        return w


class InputStats:
    """What calibration shows one linear layer, accumulated batch by batch: the Hessian
    ``2/n sum x x^T`` (float64), the mean |x| per input channel, and up to ``keep`` input rows
    (for AWQ's search), sampled evenly."""

    def __init__(self, in_features: int, keep: int = 4096):
        self.n = 0
        self.H = torch.zeros(in_features, in_features, dtype=torch.float64)
        self.abs_sum = torch.zeros(in_features, dtype=torch.float64)
        self.keep = keep
        self.rows: list[Tensor] = []
        self.kept = 0

    def add(self, x: Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)  # (n, I)
        self.H += 2.0 * x.T @ x
        self.abs_sum += x.abs().sum(0)
        self.n += x.shape[0]
        if self.kept < self.keep:
            take = x[: self.keep - self.kept].float()
            self.rows.append(take)
            self.kept += take.shape[0]

    @property
    def hessian(self) -> Tensor:
        if self.n == 0:
            raise ValueError("no calibration inputs reached this layer")
        return self.H / self.n

    @property
    def mean_abs(self) -> Tensor:
        return (self.abs_sum / max(self.n, 1)).float()

    @property
    def sample(self) -> Tensor:
        return torch.cat(self.rows) if self.rows else torch.zeros(0, self.H.shape[0])


def _uniform(w: Tensor, bits: int, group: int) -> QuantWeight:
    scale, zero = G.uniform_params(w, bits, group)
    return QuantWeight(G.uniform_codes(w, scale, zero, bits, group), scale, zero, bits, group)


def rtn_quantize(w: Tensor, bits: int, group: int) -> QuantWeight:
    """Round-to-nearest on per-group min-max grids."""
    return _uniform(w, bits, group)


def gptq_quantize(
    w: Tensor,
    H: Tensor,
    bits: int,
    group: int,
    damp: float = 0.01,
    block: int = 128,
    act_order: bool = False,
) -> QuantWeight:
    """GPTQ of ``w`` (out, in) with the input Hessian ``H`` (in, in); see the module text."""
    O, I = w.shape
    if H.shape != (I, I):
        raise ValueError(f"the Hessian must be ({I}, {I}) for a weight {tuple(w.shape)}, "
                         f"got {tuple(H.shape)}")  # fmt: skip
    qmax = (1 << bits) - 1
    W = w.detach().to(torch.float64).clone()
    H = H.detach().to(torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static = None
    if act_order:
        static = G.uniform_params(W.float(), bits, group)
        perm = torch.argsort(torch.diag(H), descending=True)
    else:
        perm = torch.arange(I)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(I, dtype=torch.float64)
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    except RuntimeError:
        raise ValueError(
            f"GPTQ: the damped Hessian is not positive definite (damp={damp}); raise damp "
            "or give more calibration data"
        ) from None
    n_groups = I // group
    scale = torch.zeros(O, n_groups)
    zero = torch.zeros(O, n_groups)
    if static is not None:
        scale, zero = static
    codes = torch.zeros(O, I, dtype=torch.int64)
    for i1 in range(0, I, block):
        i2 = min(i1 + block, I)
        W1 = W[:, i1:i2].clone()
        Err = torch.zeros_like(W1)
        Hb = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = int(perm[i1 + i])
            g = col // group
            if static is None and col % group == 0:  # the group starts: grid from now-W
                span = torch.cat([W1[:, i:], W[:, i2:]], 1)[:, :group]
                s, z = G.uniform_params(span.float(), bits, group)
                scale[:, g], zero[:, g] = s[:, 0], z[:, 0]
            s, z = scale[:, g].double(), zero[:, g].double()
            x = W1[:, i]
            q = torch.clamp(torch.round(x / s) + z, 0, qmax)
            q = torch.nan_to_num(q, nan=0.0)
            codes[:, col] = q.to(torch.int64)
            err = (x - (q - z) * s) / Hb[i, i]
            W1[:, i:] -= err[:, None] * Hb[i, i:][None, :]
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]
    return QuantWeight(codes, scale.float(), zero.float(), bits, group)


def awq_quantize(
    w: Tensor, stats: InputStats, bits: int, group: int, grid: int = 20
) -> QuantWeight:
    """AWQ's activation-aware scale search (see the module text)."""
    X = stats.sample  # (n, I)
    if X.shape[0] == 0:
        raise ValueError("AWQ needs calibration inputs for the layer; none reached it")
    W = w.detach().float()
    ref = X @ W.T  # (n, O)
    mean_abs = stats.mean_abs.clamp(min=1e-8)
    best, best_err = None, float("inf")
    for k in range(grid):
        alpha = k / grid
        s = mean_abs.pow(alpha)
        s = s / torch.sqrt(s.max() * s.min())
        s = s.to(G.SCALE_DTYPE).float()  # stored in fp16: search what is stored
        qw = _uniform(W * s[None, :], bits, group)
        qw.in_scale = s
        err = float(((X @ qw.dequantize().T - ref) ** 2).sum())
        if err < best_err:
            best, best_err = qw, err
    if best is None:  # NaN everywhere: keep alpha = 0 (plain RTN), NaN propagates
        best = _uniform(W, bits, group)
        best.in_scale = torch.ones(W.shape[1])
    return best


def _nearest(w: Tensor, cb: Tensor) -> Tensor:
    """Index of the nearest codebook value per weight; ``cb`` (O, K) sorted along K."""
    mids = (cb[:, 1:] + cb[:, :-1]) / 2  # (O, K-1)
    return torch.searchsorted(mids.contiguous(), w.contiguous())  # (O, I) in [0, K-1]


def squeezellm_quantize(w: Tensor, fisher_diag: Tensor, bits: int, iters: int = 20) -> QuantWeight:
    """Fisher-weighted k-means codebooks, one per output row (see the module text)."""
    if fisher_diag.shape != w.shape:
        raise ValueError(f"the Fisher diagonal must have the weight's shape {tuple(w.shape)}, "
                         f"got {tuple(fisher_diag.shape)}")  # fmt: skip
    W = w.detach().float()
    f = fisher_diag.detach().float().clamp(min=0) + 1e-12  # a weight of 0 still counts a bit
    O, I = W.shape
    K = 1 << bits
    lo, hi = W.min(1, keepdim=True).values, W.max(1, keepdim=True).values
    cb = lo + (hi - lo) * torch.linspace(0, 1, K)[None, :]  # (O, K)
    for _ in range(iters):
        codes = _nearest(W, cb)
        num = torch.zeros(O, K).scatter_add_(1, codes, f * W)
        den = torch.zeros(O, K).scatter_add_(1, codes, f)
        new = torch.where(den > 0, num / den.clamp(min=1e-30), cb)
        new, _ = torch.sort(new, 1)
        if torch.equal(new, cb):
            break
        cb = new
    cb = torch.sort(cb.to(G.SCALE_DTYPE).float(), 1).values  # what is stored is what is used
    if torch.isnan(W).any():
        cb = torch.where(torch.isnan(W).any(1, keepdim=True), float("nan"), cb)
    codes = _nearest(torch.nan_to_num(W), torch.nan_to_num(cb))
    return QuantWeight(codes, None, None, bits, I, codebook=cb)
