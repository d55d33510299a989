"""muP for diffusion transformers: one call turns a model into its muP form and returns AdamW.

The rules are those of the muP Adam table (Tensor Programs V, Table 3, in the form of
Microsoft's ``mup`` package: ``MuReadout`` + ``MuAdamW``). Which tensors are "input",
"hidden" and "output" is found by shape, the way ``mup.set_base_shapes`` does it: the model
is built again (on the meta device, no memory) at ``base_width`` and at one more width; a
dimension that changes with width is an infinite dimension. Unlike ``mup``, nothing is stored
on the tensors: the per-parameter learning rates live in the optimizer's param groups, the
readout's multiplier is a plain float on a :class:`MuReadout` module (an ``nn.Linear`` with the
same parameter names), so the model works unchanged under ``torch.compile``, DDP, FSDP and a
plain ``state_dict`` round trip, and applying it twice is harmless.

Width grows by heads at a fixed head dim (the paper's setting), so attention keeps its
``1/sqrt(head_dim)`` scale: with a fixed head dim muP's ``1/d`` rule is the same up to a
constant.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..core.validate import check_config, check_number

__all__ = [
    "MuPConfig",
    "MuReadout",
    "ParamScaling",
    "Role",
    "clean_name",
    "mup_param_groups",
    "param_table",
    "parametrize_",
    "readout_modules",
    "unwrap",
]


class Role(str, enum.Enum):
    """What a tensor is to muP, found from how its shape changes with width."""

    INPUT = "input"  # fan-out grows with width, fan-in fixed: patch embed, first t-MLP layer
    HIDDEN = "hidden"  # both grow: attention, MLP, adaLN, second t-MLP layer
    OUTPUT = "output"  # fan-in grows, fan-out fixed: the final linear (a MuReadout)
    VECTOR = "vector"  # one width dim and no fan-in: biases, norm gains, embedding tables
    FIXED = "fixed"  # nothing grows: a fixed-width text encoder, U-ViT's output conv


@dataclass(frozen=True)
class MuPConfig:
    """muP settings. ``base_width`` is the width (``n_heads * head_dim``) at which the muP model
    equals its base parametrisation: learning rates tuned there transfer to any width.

    * ``readout_mult``: the output multiplier ``alpha_out`` (the readout computes
      ``W (readout_mult / width_mult) x``); tune it on the proxy like a learning rate.
    * ``readout_zero_init``: start the readout at zero (the paper's choice) instead of
      ``N(0, init_std^2 / base_fan_in)``.
    * ``init_std``: gain of the fan-in init ``N(0, init_std^2 / fan_in)`` of every input and
      hidden weight (adaLN modulation included: fan-in, not DiT's zero init).
    * ``embed_std``: std of embedding tables (class labels), constant in width.
    * ``vector_std``: std of other learned vectors that are not biases or norm gains
      (U-ViT's position embedding, PixArt's scale-shift tables), constant in width.
    """

    base_width: int
    readout_mult: float = 1.0
    readout_zero_init: bool = True
    init_std: float = 1.0
    embed_std: float = 1.0
    vector_std: float = 0.02

    def __post_init__(self):
        check_config(
            self,
            base_width=">=1",
            readout_mult=">0",
            init_std=">0",
            embed_std=">=0",
            vector_std=">=0",
        )


class MuReadout(nn.Linear):
    """The output layer of a muP model: ``linear(x * output_mult / width_mult)``.

    ``width_mult`` (fan-in over base fan-in) and ``output_mult`` are plain floats on the
    module; the parameters keep ``nn.Linear``'s names, so checkpoints of SP and muP models
    have the same keys.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        width_mult: float = 1.0,
        output_mult: float = 1.0,
        device=None,
        dtype=None,
    ):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.width_mult = float(width_mult)
        self.output_mult = float(output_mult)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x * (self.output_mult / self.width_mult), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, width_mult={self.width_mult:g}, output_mult={self.output_mult:g}"


@dataclass(frozen=True)
class ParamScaling:
    """How muP treats one parameter, relative to the base width.

    ``init_std``: the std it is drawn with (0: zeros, ``None``: the model's own init kept);
    ``lr_mult`` / ``wd_mult``: factors on the optimizer's LR and weight decay;
    ``forward_mult``: the multiplier on its layer's input (only the readout's is not 1).
    """

    name: str
    shape: tuple[int, ...]
    base_shape: tuple[int, ...]
    role: Role
    width_mult: float
    init_std: float | None
    lr_mult: float
    wd_mult: float
    forward_mult: float


_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm,)


def _is_norm(m: nn.Module) -> bool:
    return isinstance(m, _NORMS) or type(m).__name__ in ("RMSNorm", "LayerNorm")


def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Parameter name -> (owning module, attribute name), for the names of ``named_parameters``."""
    out = {}
    for mname, mod in model.named_modules():
        for pname, _ in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            out.setdefault(full, (mod, pname))
    return out


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def _base_models(model: nn.Module, cfg: MuPConfig) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The model rebuilt on the meta device (no memory) at its own width (its parameters may
    be sharded by FSDP), at ``base_width`` and at one head more."""
    mcfg = getattr(model, "config", None)
    if mcfg is None or not hasattr(mcfg, "widen") or not hasattr(mcfg, "head_dim"):
        raise TypeError(
            f"{type(model).__name__} has no .config with head_dim and widen(n_heads): pass "
            "base=<the model built at base_width> (and delta=<built at another width>)"
        )
    hd, width = mcfg.head_dim, mcfg.n_heads * mcfg.head_dim
    if cfg.base_width % hd:
        raise ValueError(
            f"MuPConfig.base_width={cfg.base_width} is not a multiple of the model's "
            f"head_dim={hd}: width grows by whole heads (try {max(hd, cfg.base_width // hd * hd)})"
        )
    if cfg.base_width > width:
        raise ValueError(
            f"MuPConfig.base_width={cfg.base_width} is larger than the model's width "
            f"n_heads*head_dim={width}: the base must be the narrow proxy"
        )
    heads = cfg.base_width // hd
    with torch.device("meta"):
        full = type(model)(mcfg)
        base = type(model)(mcfg.widen(n_heads=heads))
        delta = type(model)(mcfg.widen(n_heads=heads + 1))
    return full, base, delta


def param_table(
    model: nn.Module,
    config: MuPConfig,
    base: nn.Module | None = None,
    delta: nn.Module | None = None,
) -> list[ParamScaling]:
    """The muP treatment of every parameter of ``model`` (see :class:`ParamScaling`).

    For a model without ``.config.widen`` pass ``base`` (built at the base width) and
    ``delta`` (built at any other width), as with ``mup.set_base_shapes``.
    """
    if base is None or delta is None:
        model, base, delta = _base_models(model, config)
    shapes, bshapes, dshapes = _shapes(model), _shapes(base), _shapes(delta)
    if set(shapes) != set(bshapes) or set(shapes) != set(dshapes):
        missing = sorted(set(shapes) ^ set(bshapes) | set(shapes) ^ set(dshapes))[:5]
        raise ValueError(
            f"the model's parameters differ in name from the base model's ({missing}): its "
            "structure must not depend on width"
        )
    if all(bshapes[n] == dshapes[n] for n in bshapes):
        raise ValueError(
            "base and delta have the same shapes, so no dimension is found to grow with width "
            "and muP would change nothing: build delta at another width than base"
        )
    owners = _owners(model)
    rows = []
    for name, shape in shapes.items():
        bshape, dshape = bshapes[name], dshapes[name]
        if len(bshape) != len(shape):
            raise ValueError(f"{name}: rank {len(shape)} differs from the base's {len(bshape)}")
        inf = [i for i, (b, d) in enumerate(zip(bshape, dshape)) if b != d]
        mod, attr = owners[name]
        is_weight = attr == "weight"
        is_matrix = is_weight and isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd))
        fan_in_mult = shape[1] / bshape[1] if len(shape) >= 2 else 1.0
        if len(inf) > 2 or (len(inf) == 2 and inf != [0, 1]):
            raise ValueError(
                f"{name}: shape {shape} has width-dependent dims {inf}; muP here handles "
                "matrices (fan_out, fan_in, ...) with at most those two dims growing"
            )
        lr_mult, wd_mult, fwd = 1.0, 1.0, 1.0
        if not inf:
            role, wm = Role.FIXED, 1.0
            init = None
            if isinstance(mod, MuReadout) or _readout_bias(mod, attr, name, bshapes, dshapes):
                role, init = Role.OUTPUT, 0.0
        elif len(inf) == 2:
            role, wm = Role.HIDDEN, fan_in_mult
            lr_mult, wd_mult = 1.0 / wm, wm
            init = config.init_std / math.sqrt(_fan_in(shape))
        elif inf == [1] and is_weight and isinstance(mod, nn.Linear):
            role, wm = Role.OUTPUT, fan_in_mult
            fwd = config.readout_mult / wm
            init = 0.0 if config.readout_zero_init else config.init_std / math.sqrt(bshape[1])
        else:
            wm = shape[inf[0]] / bshape[inf[0]]
            if is_matrix and inf == [0]:
                role, init = Role.INPUT, config.init_std / math.sqrt(_fan_in(shape))
            elif is_weight and isinstance(mod, nn.Embedding):
                role, init = Role.INPUT, config.embed_std
            elif attr == "bias":
                role, init = Role.VECTOR, 0.0
            elif _is_norm(mod):
                role, init = Role.VECTOR, None  # ones / zeros of the norm, kept
            else:
                role, init = Role.VECTOR, config.vector_std
        rows.append(ParamScaling(name, shape, bshape, role, wm, init, lr_mult, wd_mult, fwd))
    return rows


def _readout_bias(mod, attr, name, bshapes, dshapes) -> bool:
    """The bias of a Linear whose weight is a readout (fan-in grows, fan-out fixed)."""
    if attr != "bias" or not isinstance(mod, nn.Linear):
        return False
    w = name[: -len("bias")] + "weight"
    return w in bshapes and bshapes[w][1] != dshapes[w][1] and bshapes[w][0] == dshapes[w][0]


def _fan_in(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])


def _swap_readouts(model: nn.Module, table: list[ParamScaling], cfg: MuPConfig) -> None:
    out_w = {
        r.name[: -len(".weight")]: r
        for r in table
        if r.role is Role.OUTPUT and r.name.endswith("weight")
    }
    for mname, row in out_w.items():
        parent_name, _, child = mname.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if isinstance(old, MuReadout):  # applied before: update, never rescale twice
            old.width_mult, old.output_mult = row.width_mult, cfg.readout_mult
            continue
        new = MuReadout(
            old.in_features,
            old.out_features,
            bias=old.bias is not None,
            width_mult=row.width_mult,
            output_mult=cfg.readout_mult,
            device="meta",
        )
        new.weight, new.bias = old.weight, old.bias  # the same Parameter objects
        new.train(old.training)
        setattr(parent, child, new)


@torch.no_grad()
def _init(model: nn.Module, table: list[ParamScaling], generator: torch.Generator | None) -> None:
    params = dict(model.named_parameters())
    for row in table:
        if row.init_std is None:
            continue
        p = params[row.name]
        if row.init_std == 0:
            p.zero_()
        else:
            p.normal_(0.0, row.init_std, generator=generator)


_WRAPPERS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside DDP / FSDP / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module) or inner is model:
            return model
        model = inner


def clean_name(name: str) -> str:
    """A parameter name without the prefixes DDP, FSDP and ``torch.compile`` add."""
    parts = [p for p in name.split(".") if p not in _WRAPPERS]
    if parts and parts[0] == "module":
        parts = parts[1:]
    return ".".join(parts)


def mup_param_groups(
    model: nn.Module, table: list[ParamScaling], lr: float, weight_decay: float = 0.0
) -> list[dict]:
    """Optimizer param groups with muP's per-parameter LR and weight decay; each group also
    names its role and parameters (``mup_role``, ``mup_names``). ``model`` may be wrapped in
    DDP, FSDP (``use_orig_params=True``) or ``torch.compile``: its parameters are matched to
    the table by name."""
    check_number("lr", lr, ">0")
    check_number("weight_decay", weight_decay, ">=0")
    rows = {r.name: r for r in table}
    groups: dict[tuple, dict] = {}
    for wname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = clean_name(wname)
        if name not in rows:
            raise ValueError(f"parameter {wname!r} is not in the muP table of this model")
        row = rows[name]
        key = (row.role.value, row.lr_mult, row.wd_mult)
        g = groups.setdefault(
            key,
            {
                "params": [],
                "lr": lr * row.lr_mult,
                "weight_decay": weight_decay * row.wd_mult,
                "mup_role": row.role.value,
                "mup_names": [],
            },
        )
        g["params"].append(p)
        g["mup_names"].append(row.name)
    return list(groups.values())


def parametrize_(
    model: nn.Module,
    config: MuPConfig,
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    init: bool = True,
    generator: torch.Generator | None = None,
    base: nn.Module | None = None,
    delta: nn.Module | None = None,
    optimizer_cls: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
) -> torch.optim.Optimizer:
    """Make ``model`` muP in place and return its optimizer (AdamW by default).

    * the output linear (fan-in grows with width, fan-out fixed) becomes a :class:`MuReadout`
      with multiplier ``readout_mult / width_mult``;
    * with ``init=True`` (default) every parameter is drawn as in :func:`param_table`: fan-in
      init of input and hidden weights, zero readout, width-independent vectors; pass
      ``init=False`` before loading a checkpoint (or simply load after: init is not a rescale);
    * for FSDP, apply it to the bare model, wrap, and call it again with ``init=False`` to get
      the optimizer over the wrapped parameters;
    * hidden weights get LR ``lr * base_width / width`` (and weight decay times its inverse,
      so the per-step decay is width-independent, as ``mup.MuAdamW``); all others ``lr``.

    ``lr`` is the learning rate tuned at the base width. Raises ``ValueError`` for a base
    width that is not a whole number of heads or is wider than the model.
    """
    check_number("lr", lr, ">0")
    check_number("eps", eps, ">0")
    check_number("weight_decay", weight_decay, ">=0")
    if len(tuple(betas)) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    for i, b in enumerate(betas):
        check_number(f"betas[{i}]", b, "[0,1)")
    inner = unwrap(model)
    table = param_table(inner, config, base=base, delta=delta)
    _swap_readouts(inner, table, config)
    if init:
        if inner is not model:
            raise ValueError(
                "initialise before wrapping: call parametrize_(model, ...) on the bare model, "
                "then wrap it (DDP/FSDP/torch.compile) and call it again with init=False for "
                "the optimizer over the wrapped parameters"
            )
        _init(model, table, generator)
    groups = mup_param_groups(model, table, lr, weight_decay)
    return optimizer_cls(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def readout_modules(model: nn.Module) -> Iterable[tuple[str, MuReadout]]:
    """The :class:`MuReadout` layers of a model (empty for a standard-parametrised one)."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, MuReadout))
