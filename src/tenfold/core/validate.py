"""The one validation helper for configs, and the one finite-check policy for numeric APIs.

Configs (frozen dataclasses) call :func:`check_config` first thing in ``__post_init__``::

    @dataclass(frozen=True)
    class MyConfig:
        steps: int = 100
        lr: float = 1e-3
        betas: tuple[float, float] = (0.9, 0.999)
        schedule: str = "constant"
        widths: tuple[int, ...] = (32, 64)

        def __post_init__(self):
            check_config(self, steps=">=1", lr=">0", betas="[0,1)",
                         schedule=("constant", "cosine"), widths=">=1 pow2 increasing")

Every field is checked against its annotation, whether a rule names it or not: an ``int``
must be an integer (not a bool, not 2.5), a ``float`` a real, finite number (NaN and inf are
rejected unless the rule says ``inf``), a ``bool`` a bool, a ``str`` a string, an Enum one of
its values (a string is converted), a ``tuple[T, ...]`` a non-empty tuple of T (a list is
converted; the rule ``empty`` allows an empty one), ``X | None`` X or None. Fields of other
types (modules, callables) are left alone. Rules then bound the value (for a tuple: every
element) with space-separated words:

``>0`` ``>=1`` ``<1`` ``<=64``, intervals ``[0,1)`` ``(0,1]``, ``pow2`` (a power of two),
``inf`` (+-inf allowed), ``empty`` (an empty tuple allowed), ``increasing`` and ``unique``
(tuples), or a tuple/set of allowed values. Every failure raises :class:`ConfigError` (a
``ValueError``) that names the class, the field, the rule and the value:
``TrainConfig.lr must be > 0, got -1.0``. Checks across fields use :func:`config_fail`.

Numeric APIs follow one policy: scalar arguments that cannot work (NaN, inf, out of range)
are rejected with :func:`check_number`, and tensors with NaN/inf in them are *propagated*
(NaN in, NaN out, as PyTorch does) -- never turned into a finite-looking answer. Trainers
stop with a clear message when a loss or gradient is not finite. :func:`check_tensor` checks
a tensor argument's type, rank and dtype.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ConfigError",
    "check_config",
    "config_fail",
    "check_number",
    "check_int",
    "check_tensor",
    "check_array",
]


class ConfigError(ValueError):
    """A user-facing configuration problem (unknown name, field or bad value)."""


_CMP = re.compile(r"^(>=|<=|>|<)(-?[0-9.eE+-]+)$")
_IVL = re.compile(r"^([\[(])(-?[0-9.eE+-]+|-inf),(-?[0-9.eE+-]+|inf)([\])])$")
_WORDS = {"pow2", "inf", "empty", "increasing", "unique"}


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, str) else str(v)


class _Rule:
    """A parsed rule: bounds, flags and (optionally) a set of allowed values."""

    def __init__(self, spec: Any):
        self.bounds: list[tuple[str, float, str]] = []  # (op, number, text)
        self.flags: set[str] = set()
        self.choices: tuple | None = None
        if spec is None:
            return
        if isinstance(spec, (tuple, list, set, frozenset)):
            self.choices = tuple(spec)
            return
        if not isinstance(spec, str):
            raise TypeError(f"a rule is a string or a tuple of choices, got {spec!r}")
        for word in spec.replace(" ,", ",").replace(", ", ",").split():
            m = _CMP.match(word)
            if m:
                self.bounds.append((m.group(1), float(m.group(2)), word))
                continue
            m = _IVL.match(word)
            if m:
                lo, hi = float(m.group(2)), float(m.group(3))
                self.bounds.append((">=" if m.group(1) == "[" else ">", lo, word))
                self.bounds.append(("<=" if m.group(4) == "]" else "<", hi, word))
                continue
            if word in _WORDS:
                self.flags.add(word)
                continue
            raise ValueError(f"unknown rule word {word!r} in {spec!r}")

    def check_scalar(self, where: str, v: Any) -> None:
        if self.choices is not None:
            if v not in self.choices:
                raise ConfigError(
                    f"{where} must be one of {', '.join(map(_fmt, self.choices))}, got {_fmt(v)}"
                )
            return
        if not isinstance(v, numbers.Real) or isinstance(v, bool):
            if self.bounds or "pow2" in self.flags:
                raise ConfigError(f"{where} must be a number, got {_fmt(v)}")
            return
        if math.isnan(v):
            raise ConfigError(f"{where} must be a number, got nan")
        if math.isinf(v) and "inf" not in self.flags:
            raise ConfigError(f"{where} must be finite, got {v}")
        for op, x, text in self.bounds:
            ok = {">": v > x, ">=": v >= x, "<": v < x, "<=": v <= x}[op]
            if not ok:
                shown = text if text.startswith(("[", "(")) else f"{op} {text[len(op) :]}"
                verb = "in" if text.startswith(("[", "(")) else ""
                raise ConfigError(f"{where} must be {verb + ' ' if verb else ''}{shown}, got {v}")
        if "pow2" in self.flags and not (
            isinstance(v, numbers.Integral) and v > 0 and (int(v) & (int(v) - 1)) == 0
        ):
            raise ConfigError(f"{where} must be a power of two, got {v}")

    def check_tuple(self, where: str, v: tuple) -> None:
        if not v and "empty" not in self.flags:
            raise ConfigError(f"{where} must not be empty")
        for i, x in enumerate(v):
            self.check_scalar(f"{where}[{i}]", x)
        if "increasing" in self.flags and any(b <= a for a, b in zip(v, v[1:])):
            raise ConfigError(f"{where} must be strictly increasing, got {v}")
        if "unique" in self.flags and len(set(v)) != len(v):
            raise ConfigError(f"{where} must not repeat a value, got {v}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(where: str, v: Any, tp: Any, allow_inf: bool) -> Any:
    """``v`` checked against annotation ``tp`` (and converted where harmless), or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(where, v, a, allow_inf)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0] + (" (or None)" if type(None) in args else ""))
        names = " or ".join(_type_name(a) for a in args)
        raise ConfigError(f"{where} must be {names}, got {_fmt(v)}")
    if origin is typing.Literal:
        if v not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(_fmt, args))}, got {_fmt(v)}")
        return v
    if origin is tuple or tp is tuple:
        if isinstance(v, list):
            v = tuple(v)
        if not isinstance(v, tuple):
            raise ConfigError(f"{where} must be a tuple, got {_fmt(v)}")
        if args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise ConfigError(f"{where} must hold {len(args)} values, got {v}")
            return tuple(
                _coerce(f"{where}[{i}]", x, a, allow_inf) for i, (x, a) in enumerate(zip(v, args))
            )
        if args:
            return tuple(_coerce(f"{where}[{i}]", x, args[0], allow_inf) for i, x in enumerate(v))
        return v
    if tp is bool:
        if not isinstance(v, bool) and type(v).__name__ != "bool_":  # numpy's bool too
            raise ConfigError(f"{where} must be true or false, got {_fmt(v)}")
        return bool(v)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            if isinstance(v, float) and v.is_integer():
                return int(v)
            raise ConfigError(f"{where} must be an integer, got {_fmt(v)}")
        return int(v)
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ConfigError(f"{where} must be a number, got {_fmt(v)}")
        v = float(v)
        if math.isnan(v):
            raise ConfigError(f"{where} must be a number, got nan")
        if math.isinf(v) and not allow_inf:
            raise ConfigError(f"{where} must be finite, got {v}")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"{where} must be a string, got {_fmt(v)}")
        return v
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(v, tp):
            return v
        try:
            return tp(v)
        except (ValueError, TypeError):
            vals = ", ".join(_fmt(e.value) for e in tp)
            raise ConfigError(f"{where} must be one of {vals}, got {_fmt(v)}") from None
    return v  # other types (modules, callables, dicts): the config checks them itself


def check_config(obj: Any, **rules: Any) -> None:
    """Check (and normalise) every field of dataclass ``obj``; see the module docstring."""
    cls = type(obj)
    unknown = set(rules) - {f.name for f in dataclasses.fields(obj)}
    if unknown:
        raise TypeError(f"check_config({cls.__name__}): rules for unknown fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        where = f"{cls.__name__}.{f.name}"
        rule = _Rule(rules.get(f.name))
        v = getattr(obj, f.name)
        tp = hints.get(f.name, Any)
        new = _coerce(where, v, tp, allow_inf="inf" in rule.flags)
        if new is not v:
            object.__setattr__(obj, f.name, new)
        if new is None:
            continue
        if isinstance(new, tuple):
            rule.check_tuple(where, new)
        elif isinstance(new, enum.Enum):
            rule.check_scalar(where, new.value if rule.choices and new not in rule.choices else new)
        else:
            rule.check_scalar(where, new)


def config_fail(obj: Any, message: str) -> typing.NoReturn:
    """Raise the ConfigError of a check across fields: ``config_fail(self, "a must be < b")``."""
    raise ConfigError(f"{type(obj).__name__}: {message}")


def check_number(name: str, value: Any, rule: str = "", integer: bool = False) -> float | int:
    """A scalar argument of a numeric API: a real number (an integer if ``integer``), finite
    unless ``rule`` has ``inf``, within ``rule``. Returns it as float (or int)."""
    r = _Rule(rule or None)
    tp = int if integer else float
    v = _coerce(name, value, tp, allow_inf="inf" in r.flags)
    r.check_scalar(name, v)
    return v


def check_int(name: str, value: Any, rule: str = "") -> int:
    return int(check_number(name, value, rule, integer=True))


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Iterable[int] | None = None,
    dtypes: Iterable[Any] | None = None,
    floating: bool = False,
    nonempty: bool = True,
) -> None:
    """A tensor argument: a ``torch.Tensor`` of rank ``ndim`` (or one of them), dtype in
    ``dtypes`` (or any floating dtype if ``floating``), with elements unless ``nonempty``
    is False. Non-finite values are not rejected: they must propagate."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in dims:
            want = " or ".join(map(str, dims))
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if x.dtype not in dtypes:
            raise TypeError(
                f"{name} must have dtype {' or '.join(map(str, dtypes))}, got {x.dtype}"
            )
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")


def check_array(name: str, x: Any, *, ndim: int | Iterable[int] | None = None, finite: bool = True):
    """A numpy array argument of a numeric (simulation) API, returned as an array: numbers,
    rank ``ndim``, non-empty, and (by default) finite -- a simulation fed NaN would report a
    finite-looking error rate, so it is refused instead."""
    import numpy as np

    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - any conversion failure is the caller's bad input
        raise TypeError(f"{name} must be an array of numbers: {e}") from None
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be an array of numbers, got dtype {a.dtype}")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if a.ndim not in dims:
            want = " or ".join(map(str, dims))
            raise ValueError(f"{name} must have {want} dimensions, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    if finite and not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).sum())
        raise ValueError(f"{name} has {bad} non-finite (NaN or inf) value(s)")
    return a
