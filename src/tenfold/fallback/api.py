"""Public API of fallback quantization: a config, a linear layer, ``apply_`` and statistics.

Every ``nn.Linear`` that ``apply_`` selects computes its three GEMMs

* forward      ``Y  = X W^T``   (reduction over in_features)
* grad_input   ``dX = dY W``    (reduction over out_features)
* grad_weight  ``dW = dY^T X``  (reduction over tokens)

each in the :class:`GemmMode` the config gives it. In ``int8_fallback`` mode the activation
X and the gradient dY are quantized block-wise to INT8 and the blocks that the
:class:`FallbackRule` marks as outliers run in 16-bit; weights are always INT8 per block
(their 16-bit copy serves the steps where the partner falls back). The numerics are those of
:mod:`tenfold.fallback._ref`; on a CUDA device with Triton the GEMMs run in
:mod:`tenfold.fallback.kernels`.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from torch import Tensor

from ..core.validate import ConfigError, check_config, check_tensor
from . import _ref
from ._ref import QTensor

__all__ = [
    "GemmMode",
    "FallbackRule",
    "Granularity",
    "FallbackConfig",
    "FallbackLinear",
    "LayerStats",
    "apply_",
    "fallback_linear",
    "fallback_stats",
    "reset_fallback_stats",
    "gemm_sqnr",
    "capture_linear_io",
    "SCHEMES",
]


class GemmMode(str, enum.Enum):
    """How one GEMM runs: in the input's own precision, INT8, or INT8 with 16-bit fallback."""

    FULL = "full"
    INT8 = "int8"
    INT8_FALLBACK = "int8_fallback"


class FallbackRule(str, enum.Enum):
    """Which activation/gradient blocks fall back to 16-bit (see :mod:`._ref`):

    * ``relative`` -- absmax > threshold x the tensor's median block absmax;
    * ``crest``    -- absmax > threshold x the block's RMS (a floor on its INT8 SQNR);
    * ``absolute`` -- absmax > threshold;
    * ``topk``     -- the ``threshold`` fraction of blocks with the largest absmax.
    """

    RELATIVE = "relative"
    CREST = "crest"
    ABSOLUTE = "absolute"
    TOPK = "topk"


class Granularity(str, enum.Enum):
    BLOCK = "block"
    TENSOR = "tensor"


class Backend(str, enum.Enum):
    AUTO = "auto"  # the Triton kernels for CUDA tensors when Triton imports, else reference
    REFERENCE = "reference"
    TRITON = "triton"


_HI_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


BLOCK_SIDES = (32, 64, 128)  # what the kernels compile well: powers of two, K tiles >= 32


@dataclass(frozen=True)
class FallbackConfig:
    """INT8 training with 16-bit fallback for outlier blocks.

    ``block``: (rows, cols) of a quantization block of every matrix, as stored (X and dY:
    (tokens, features); W: (out, in)). Square blocks let the forward's INT8 copy of X serve
    the weight gradient unchanged. ``threshold`` belongs to ``rule``: a multiple of the
    median block absmax (``relative``), of the block's RMS (``crest``), an absolute level
    (``absolute``) or the fraction of blocks that fall back (``topk``).
    """

    forward: GemmMode = GemmMode.INT8_FALLBACK
    grad_input: GemmMode = GemmMode.INT8_FALLBACK
    grad_weight: GemmMode = GemmMode.INT8_FALLBACK
    granularity: Granularity = Granularity.BLOCK
    block: tuple[int, int] = (32, 32)
    rule: FallbackRule = FallbackRule.RELATIVE
    threshold: float = 8.0
    fallback_grads: bool = True
    sixteen_bit: str = "bf16"
    backend: Backend = Backend.AUTO
    track_stats: bool = True

    def __post_init__(self):
        check_config(self, block=">=1", threshold=">=0")
        set_ = object.__setattr__
        try:
            for name in ("forward", "grad_input", "grad_weight"):
                set_(self, name, GemmMode(getattr(self, name)))
            set_(self, "granularity", Granularity(self.granularity))
            set_(self, "rule", FallbackRule(self.rule))
            set_(self, "backend", Backend(self.backend))
        except ValueError as e:
            raise ValueError(f"FallbackConfig: {e}") from None
        block = tuple(self.block)
        if any(b not in BLOCK_SIDES for b in block):
            raise ConfigError(
                f"FallbackConfig.block sides must be one of {', '.join(map(str, BLOCK_SIDES))} "
                f"(powers of two >= 32: each side is the K tile of one of the INT8 GEMMs, and "
                f"INT8 tensor cores need K >= 32; a 256 side holds 64k values per quantize "
                f"program, more than the registers of a GPU), got {block}"
            )
        set_(self, "block", block)
        if self.sixteen_bit not in _HI_DTYPES:
            raise ValueError(
                f"FallbackConfig.sixteen_bit must be one of {sorted(_HI_DTYPES)}, "
                f"got {self.sixteen_bit!r}"
            )
        if self.granularity is Granularity.TENSOR and self.uses_fallback:
            raise ValueError(
                "FallbackConfig: per-tensor INT8 has a single block, so nothing can fall back; "
                "use granularity='block' with int8_fallback, or mode 'int8' per tensor"
            )
        if self.rule is FallbackRule.TOPK:
            if not 0.0 <= self.threshold <= 1.0:
                raise ValueError(
                    f"FallbackConfig.threshold is the fallback fraction for rule 'topk' and "
                    f"must be in [0, 1], got {self.threshold}"
                )
        elif not self.threshold > 0:
            raise ValueError(f"FallbackConfig.threshold must be > 0, got {self.threshold}")

    @property
    def uses_fallback(self) -> bool:
        return GemmMode.INT8_FALLBACK in (self.forward, self.grad_input, self.grad_weight)

    @property
    def hi_dtype(self) -> torch.dtype:
        return _HI_DTYPES[self.sixteen_bit]

    def quant_block(self) -> tuple[int, int] | None:
        return None if self.granularity is Granularity.TENSOR else self.block


#: The four schemes of the paper's comparison, by name (``full`` is no quantization).
SCHEMES: dict[str, FallbackConfig | None] = {
    "full": None,
    "int8_tensor": FallbackConfig(
        forward="int8", grad_input="int8", grad_weight="int8", granularity="tensor"
    ),
    "int8_block": FallbackConfig(forward="int8", grad_input="int8", grad_weight="int8"),
    "int8_fallback": FallbackConfig(),
}


@dataclass
class LayerStats:
    """Counts of one layer since the last reset: blocks of X (forward) and dY (backward)
    quantized and fallen back, and per column block of X how often it fell back."""

    x_blocks: int = 0
    x_fallback: int = 0
    dy_blocks: int = 0
    dy_fallback: int = 0
    x_col_fallback: Tensor | None = None
    calls: int = 0
    saved_bytes: int = 0  # X kept for the backward: int8 + scales + mask + 16-bit outliers
    bf16_bytes: int = 0  # the same X kept in BF16

    @property
    def x_rate(self) -> float:
        return self.x_fallback / self.x_blocks if self.x_blocks else 0.0

    @property
    def dy_rate(self) -> float:
        return self.dy_fallback / self.dy_blocks if self.dy_blocks else 0.0

    @property
    def rate(self) -> float:
        n = self.x_blocks + self.dy_blocks
        return (self.x_fallback + self.dy_fallback) / n if n else 0.0

    def _add_x(self, qt: QTensor) -> None:
        self.calls += 1
        self.saved_bytes += qt.nbytes()
        self.bf16_bytes += 2 * qt.shape[0] * qt.shape[1]
        if qt.mask is None:
            return
        self.x_blocks += qt.mask.numel()
        self.x_fallback += int(qt.mask.sum())
        cols = qt.mask.sum(0).cpu()
        self.x_col_fallback = cols if self.x_col_fallback is None else self.x_col_fallback + cols

    def _add_dy(self, qt: QTensor) -> None:
        if qt.mask is None:
            return
        self.dy_blocks += qt.mask.numel()
        self.dy_fallback += int(qt.mask.sum())


# --------------------------------------------------------------------------------------
# The three GEMMs
# --------------------------------------------------------------------------------------


def _use_triton(x: Tensor, cfg: FallbackConfig) -> bool:
    if cfg.backend is Backend.REFERENCE:
        return False
    if cfg.backend is Backend.TRITON:
        return True
    if not x.is_cuda:
        return False
    from . import kernels

    return kernels.available()


def _quantize(x: Tensor, cfg: FallbackConfig, block, fallback: bool) -> QTensor:
    rule = cfg.rule.value if fallback else None
    if _use_triton(x, cfg):
        from . import kernels

        return kernels.quantize(x, block, rule, cfg.threshold, cfg.hi_dtype)
    return _ref._quantize(x, block, rule, cfg.threshold, cfg.hi_dtype)


def _gemm(a: QTensor, b: QTensor, cfg: FallbackConfig, like: Tensor) -> Tensor:
    if _use_triton(like, cfg):
        from . import kernels

        return kernels.mixed_gemm(a, b)
    return _ref._mixed_gemm_fast(a, b)


def _for_mode(q: QTensor, mode: GemmMode) -> QTensor:
    """dY quantized once for both backward GEMMs: a plain-INT8 GEMM ignores its marks."""
    return replace(q, mask=None, hi=None) if mode is GemmMode.INT8 and q.mask is not None else q


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in skip)


def _weight(w: Tensor, cfg: FallbackConfig, block, hi: bool) -> QTensor:
    qw = _quantize(w, cfg, block, fallback=False)
    return _ref.with_hi(qw, w, cfg.hi_dtype) if hi else qw


def _tblock(block):
    return None if block is None else (block[1], block[0])


class _FallbackLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, cfg: FallbackConfig, stats: LayerStats | None):
        # x: (M, K), weight: (N, K)
        block = cfg.quant_block()
        qx = None
        if cfg.forward is GemmMode.FULL:
            y = x @ weight.t()  # (M, N)
        else:
            qx = _quantize(x, cfg, block, cfg.forward is GemmMode.INT8_FALLBACK)
            if stats is not None:
                stats._add_x(qx)
            qw = _weight(weight, cfg, block, hi=qx.has_fallback)  # (N, K), blocks (br, bc)
            y = _gemm(qx, qw.t(), cfg, x).to(x.dtype)  # (M, N)
        if bias is not None:
            y = y + bias
        # the weight gradient reuses the forward's INT8 X when both GEMMs quantize X alike
        reuse = qx is not None and cfg.grad_weight is cfg.forward
        if reuse:
            ctx.qx = qx.compact()  # int8 + scales + mask + 16-bit outlier blocks only
            ctx.save_for_backward(weight)
        else:
            ctx.qx = None
            ctx.save_for_backward(x, weight)
        ctx.cfg, ctx.stats, ctx.has_bias = cfg, stats, bias is not None
        ctx.x_dtype = x.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        cfg: FallbackConfig = ctx.cfg
        block = cfg.quant_block()
        if ctx.qx is not None:
            (weight,) = ctx.saved_tensors
            x = None
        else:
            x, weight = ctx.saved_tensors
        dy = dy.contiguous()  # (M, N)
        dx = dw = db = None
        qdy = None
        int_modes = (GemmMode.INT8, GemmMode.INT8_FALLBACK)
        if cfg.grad_input in int_modes or cfg.grad_weight in int_modes:
            fb = cfg.fallback_grads and GemmMode.INT8_FALLBACK in (cfg.grad_input, cfg.grad_weight)
            qdy = _quantize(dy, cfg, block, fallback=fb)
            if ctx.stats is not None:
                ctx.stats._add_dy(qdy)
        if ctx.needs_input_grad[0]:
            if cfg.grad_input is GemmMode.FULL:
                dx = dy @ weight  # (M, K)
            else:
                a = _for_mode(qdy, cfg.grad_input)
                qw = _weight(weight, cfg, _tblock(block), hi=a.has_fallback)  # blocks (bc, br)
                dx = _gemm(a, qw, cfg, dy)  # (M, K)
            dx = dx.to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            if cfg.grad_weight is GemmMode.FULL:
                dw = dy.t() @ x  # (N, K)
            else:
                qx = ctx.qx.expand_hi() if ctx.qx is not None else None
                if qx is None:
                    qx = _quantize(x, cfg, block, cfg.grad_weight is GemmMode.INT8_FALLBACK)
                a = _for_mode(qdy, cfg.grad_weight)
                if a.has_fallback and qx.hi is None:
                    qx = _ref.with_dequantized_hi(qx, cfg.hi_dtype)
                if qx.has_fallback and a.hi is None:
                    a = _ref.with_hi(a, dy, cfg.hi_dtype)
                dw = _gemm(a.t(), qx, cfg, dy)  # (N, K)
            dw = dw.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = dy.sum(0)
        ctx.qx = None
        return dx, dw, db, None, None


def fallback_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    config: FallbackConfig | None = None,
    stats: LayerStats | None = None,
) -> Tensor:
    """``F.linear`` with its three GEMMs quantized as ``config`` says. x: (..., in)."""
    cfg = config or FallbackConfig()
    if not isinstance(cfg, FallbackConfig):
        raise TypeError(f"config must be a FallbackConfig, got {type(cfg).__name__}")
    check_tensor("x", x, floating=True)
    check_tensor("weight", weight, ndim=2, floating=True)
    if x.ndim < 1:
        raise ValueError("x must be (..., in_features), got a scalar")
    if bias is not None and (not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],)):
        raise ValueError(
            f"bias must be ({weight.shape[0]},), got "
            + (str(tuple(bias.shape)) if isinstance(bias, Tensor) else type(bias).__name__)
        )
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"input has {x.shape[-1]} features but the weight expects {weight.shape[1]}"
        )
    if not x.is_floating_point():
        raise TypeError(f"fallback_linear needs a floating-point input, got {x.dtype}")
    lead = x.shape[:-1]
    y = _FallbackLinearFn.apply(x.reshape(-1, x.shape[-1]), weight, bias, cfg, stats)
    return y.view(*lead, weight.shape[0])


class FallbackLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, same state_dict) whose GEMMs run in INT8 with
    16-bit fallback. ``stats`` counts its fallback blocks since the last reset."""

    def __init__(self, in_features, out_features, bias=True, config=None, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.fallback_config = config or FallbackConfig()
        self.stats = LayerStats()

    @classmethod
    def from_linear(cls, linear: nn.Linear, config: FallbackConfig) -> FallbackLinear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, config, "meta")
        new.weight = linear.weight  # the same Parameter objects: optimizers and ties hold
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def forward(self, x: Tensor) -> Tensor:
        cfg = self.fallback_config
        stats = self.stats if cfg.track_stats and self.training else None
        return fallback_linear(x, self.weight, self.bias, cfg, stats)

    def extra_repr(self) -> str:
        c = self.fallback_config
        return (
            f"{super().extra_repr()}, fwd={c.forward.value}, dgrad={c.grad_input.value}, "
            f"wgrad={c.grad_weight.value}, block={c.block}, rule={c.rule.value}>{c.threshold}"
        )


FilterFn = Callable[[nn.Module, str], bool]


def apply_(
    model: nn.Module,
    config: FallbackConfig,
    filter_fn: FilterFn | None = None,
    skip: tuple[str, ...] = (),
) -> list[str]:
    """Swap the ``nn.Linear`` layers of ``model`` for :class:`FallbackLinear`, in place.

    ``filter_fn(module, name) -> bool`` picks layers (default: every ``nn.Linear``);
    ``skip`` holds glob patterns of names to leave alone (e.g. ``("lm_head",)``). Layers
    already swapped get the new config. Parameters, their names and ties are kept, so a
    state_dict saved before loads after and the optimizer needs no rebuild. Returns the
    names of the swapped layers.
    """
    if not isinstance(config, FallbackConfig):
        raise TypeError(f"apply_ needs a FallbackConfig, got {type(config).__name__}")
    swapped: list[str] = []
    for name, mod in list(model.named_modules()):
        if not isinstance(mod, nn.Linear) or not name:
            continue
        if _skipped(name, skip):
            continue
        if filter_fn is not None and not filter_fn(mod, name):
            continue
        if isinstance(mod, FallbackLinear):
            mod.fallback_config = config
        else:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, FallbackLinear.from_linear(mod, config))
        swapped.append(name)
    if not swapped:
        raise ValueError("apply_ found no nn.Linear layer to swap (check filter_fn and skip)")
    return swapped


def fallback_stats(model: nn.Module) -> dict[str, LayerStats]:
    """Statistics of every :class:`FallbackLinear` in ``model``, by module name."""
    return {n: m.stats for n, m in model.named_modules() if isinstance(m, FallbackLinear)}


def reset_fallback_stats(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, FallbackLinear):
            m.stats = LayerStats()


def gemm_sqnr(x: Tensor, weight: Tensor, dy: Tensor, config: FallbackConfig) -> dict[str, float]:
    """SQNR (dB) of the three GEMMs of one linear layer under ``config`` against float64:
    ``{"Y": ..., "dX": ..., "dW": ..., "rate": fallback rate of X and dY blocks}``.
    x: (M, in), weight: (out, in), dy: (M, out) -- e.g. from :func:`capture_linear_io`."""
    from tenfold.core.metrics import sqnr

    if not isinstance(config, FallbackConfig):
        raise TypeError(f"config must be a FallbackConfig, got {type(config).__name__}")
    for name, t in (("x", x), ("weight", weight), ("dy", dy)):
        check_tensor(name, t, ndim=2, floating=True)
    if x.shape[1] != weight.shape[1] or dy.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(
            f"need x (M, in), weight (out, in), dy (M, out); got {tuple(x.shape)}, "
            f"{tuple(weight.shape)}, {tuple(dy.shape)}"
        )
    x64, w64, dy64 = x.double(), weight.double(), dy.double()
    ref = {"Y": x64 @ w64.t(), "dX": dy64 @ w64, "dW": dy64.t() @ x64}
    xx = x.detach().float().clone().requires_grad_()
    ww = weight.detach().float().clone().requires_grad_()
    st = LayerStats()
    prev = torch.is_grad_enabled()
    with torch.enable_grad():
        y = _FallbackLinearFn.apply(xx, ww, None, config, st)
        y.backward(dy.float())
    torch.set_grad_enabled(prev)
    got = {"Y": y.detach(), "dX": xx.grad, "dW": ww.grad}
    out = {k: sqnr(ref[k], got[k].double()) for k in ref}
    out["rate"] = st.rate
    return out


def capture_linear_io(
    model: nn.Module, loss_fn: Callable[[nn.Module], Tensor], skip: tuple[str, ...] = ()
) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
    """Run ``loss_fn(model).backward()`` once and return, for every ``nn.Linear`` (not matching
    ``skip``), its input X (M, in), weight (out, in) and output gradient dY (M, out): the real
    tensors its three GEMMs see. Gradients left in the model are cleared."""
    xs: dict[str, Tensor] = {}
    dys: dict[str, Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or _skipped(name, skip):
            continue

        def fwd(m, inp, out, name=name):
            xs[name] = inp[0].detach().reshape(-1, inp[0].shape[-1])

        def bwd(m, gin, gout, name=name):
            dys[name] = gout[0].detach().reshape(-1, gout[0].shape[-1])

        hooks += [mod.register_forward_hook(fwd), mod.register_full_backward_hook(bwd)]
    try:
        loss_fn(model).backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
    mods = dict(model.named_modules())
    return {n: (xs[n], mods[n].weight.detach(), dys[n]) for n in xs if n in dys}
