"""Experiments, claims and results: the registry behind ``tenfold run``.

An experiment is a registered function from a typed config (a frozen dataclass with named
presets ``quick`` and ``full``) and a :class:`RunContext` to a :class:`Result`: metrics,
tables, figures and :class:`Claim` s. ``run_experiment`` saves
``<out>/<name>/<stamp>/result.json`` plus the figures (PNG), with the config, seed, wall
time, machine, package versions and git commit.

Register one with::

    @experiment("core/dit-digits", DiTDigitsConfig, presets={"quick": {...}, "full": {...}},
                summary="...")
    def dit_digits(cfg: DiTDigitsConfig, ctx: RunContext) -> Result: ...

Methods declare themselves: a subpackage ``tenfold.<key>`` whose ``__init__`` defines
``METHOD = MethodInfo(key, arxiv, title, gives)`` is a method, and the experiments of its
``repro`` module (or package) are registered when the registry is first read. Core names no
method: :func:`methods` finds them; :func:`all_methods` adds the ones the project's roadmap
(``tenfold.roadmap.PLANNED``) lists as not implemented yet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import importlib
import importlib.util
import json
import math
import os
import pkgutil
import platform
import re
import subprocess
import sys
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .io import atomic_write_text
from .validate import ConfigError

__all__ = [
    "Verdict",
    "Sense",
    "judge",
    "two_se",
    "binomial_noise",
    "evidence_line",
    "Claim",
    "Result",
    "RunContext",
    "Experiment",
    "ConfigError",
    "MethodInfo",
    "methods",
    "all_methods",
    "experiment",
    "registry",
    "get",
    "make_config",
    "parse_overrides",
    "run_experiment",
    "make_run_dir",
    "check_result",
    "machine_info",
]


class Verdict(str, enum.Enum):
    HOLDS = "holds"
    FAILS = "fails"
    INCONCLUSIVE = "inconclusive"


_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class Sense(str, enum.Enum):
    """Which way a claim's effect must clear its margin: ``above`` (effect > margin, e.g. a
    speed-up of at least 2x) or ``below`` (effect < margin, e.g. a loss gap under 1 %)."""

    ABOVE = "above"
    BELOW = "below"


def judge(effect: float, noise: float, margin: float, sense: Sense | str = "above") -> Verdict:
    """The one verdict rule. The measured ``effect`` carries a noise band ``effect +/- noise``;
    the claim ``holds`` when the whole band clears ``margin`` on the claim's side, ``fails``
    when the whole band sits on the other side, and is ``inconclusive`` when the band
    straddles the margin (the effect is inside the noise) or the effect is NaN.

    ``noise`` must be >= 0 (``inf`` = not measured: never decides); an infinite effect (a
    diverged run turned into an infinite gap) is judged like any other value."""
    sense = Sense(sense)
    effect, noise, margin = float(effect), float(noise), float(margin)
    if math.isnan(noise) or noise < 0:
        raise ValueError(f"noise must be >= 0 (inf when unknown), got {noise}")
    if not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number, got {margin}")
    if math.isnan(effect) or math.isinf(noise):
        return Verdict.INCONCLUSIVE
    lo, hi = effect - noise, effect + noise
    if sense is Sense.BELOW:
        lo, hi = -hi, -lo
        margin = -margin
    if lo > margin:
        return Verdict.HOLDS
    if hi < margin:
        return Verdict.FAILS
    return Verdict.INCONCLUSIVE


def two_se(values: Sequence[float]) -> float:
    """Two standard errors of the mean of ``values`` (n >= 2): the noise of a mean over seeds
    or samples. For two seeds it is their full range. ``inf`` for fewer than two finite
    values, so that one measurement never decides on its own."""
    v = [float(x) for x in values]
    if len(v) < 2 or not all(math.isfinite(x) for x in v):
        return math.inf
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return 2.0 * sd / math.sqrt(len(v))


def binomial_noise(p: float, n: int) -> float:
    """Two standard errors of a rate ``p`` measured on ``n`` independent samples (at least
    one sample's worth, 1/n, so a rate of exactly 0 or 1 still carries its noise)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return max(2.0 * math.sqrt(max(p * (1.0 - p), 0.0) / n), 1.0 / n)


@dataclass(frozen=True)
class Claim:
    """What the paper says, what this run measured, and whether it holds at this scale.

    Build one with :meth:`Claim.judge` (the one verdict helper); the verdict is never set by
    hand. ``key`` is a stable name (lowercase, ``[a-z0-9_.-]``, unique within an experiment):
    tests and tools select a claim by key, so its prose can be reworded freely.

    ``statement``: the claim, quoted from the paper when ``source`` cites it (``"abstract"``,
    ``"paper, Table 2"``...), or our own hypothesis when ``source`` is ``"ours"`` (then it
    says why it is tested). ``effect`` +/- ``noise`` (in ``unit``) against ``margin``, stated
    up front, in the direction ``sense``; ``noise_from`` says how the noise was measured,
    ``values`` are the per-seed (or per-sample) effects when there are several."""

    key: str
    statement: str
    source: str
    effect: float
    noise: float
    margin: float
    sense: Sense
    unit: str
    measured: str
    noise_from: str
    values: tuple[float, ...] = ()
    note: str = ""
    verdict: Verdict = field(init=False)

    def __post_init__(self):
        if not isinstance(self.key, str) or not _KEY.match(self.key):
            raise ValueError(f"claim key must match {_KEY.pattern}, got {self.key!r}")
        if not self.source or not (
            self.source == "ours" or self.source.startswith(("abstract", "paper"))
        ):
            raise ValueError(
                f"claim {self.key!r}: source must be 'ours' or cite the paper ('abstract', "
                f"'paper, Table 2', ...), got {self.source!r}"
            )
        if not self.noise_from:
            raise ValueError(f"claim {self.key!r}: say how the noise was measured (noise_from)")
        object.__setattr__(self, "sense", Sense(self.sense))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        object.__setattr__(self, "verdict", judge(self.effect, self.noise, self.margin, self.sense))

    @property
    def paper(self) -> str:
        """The statement (kept for code that reads ``claim.paper``)."""
        return self.statement

    @staticmethod
    def judge(
        key: str,
        statement: str,
        *,
        source: str,
        values: float | Sequence[float],
        margin: float,
        sense: Sense | str = "above",
        noise: float | None = None,
        noise_from: str = "",
        unit: str = "",
        measured: str = "",
        note: str = "",
    ) -> Claim:
        """The one way to build a claim.

        ``values``: the effect, one number or one per seed (or per sample); the effect is
        their mean. ``noise``: a noise band measured separately (a Monte-Carlo interval, the
        seed spread of a baseline...), combined with the values' own spread: the claim's
        noise is the larger of ``noise`` and two standard errors of the values. With a
        single value ``noise`` must be given (``math.inf`` if it was not measured, which
        makes the claim inconclusive: one number does not separate an effect from noise).
        ``margin`` is the threshold stated up front, ``sense`` the side the effect must be
        on. NaN values (a diverged run) give NaN effect and an inconclusive verdict unless
        the caller maps them to the value they stand for (e.g. an infinite loss gap)."""
        scalar = isinstance(values, (int, float)) or getattr(values, "ndim", None) == 0
        vals = [float(values)] if scalar else [float(v) for v in values]
        if not vals:
            raise ValueError(f"claim {key!r}: no measured values")
        if len(vals) == 1 and noise is None:
            raise ValueError(
                f"claim {key!r}: one measured value needs its noise (noise=..., math.inf when "
                "it was not measured)"
            )
        effect = sum(vals) / len(vals)  # inf stays inf, NaN stays NaN
        if len(vals) == 1 or all(v == vals[0] for v in vals):
            spread = 0.0  # (all seeds diverged alike: an infinite gap with no spread)
        else:
            spread = two_se(vals)
        n = noise if noise is not None else 0.0
        if noise is not None and (math.isnan(noise) or noise < 0):
            raise ValueError(f"claim {key!r}: noise must be >= 0 or math.inf, got {noise}")
        how = noise_from or ("2 standard errors over the values" if len(vals) > 1 else "")
        if len(vals) > 1 and noise is not None and noise_from:
            how = f"{noise_from}; or 2 standard errors over the {len(vals)} values, if larger"
        return Claim(
            key, statement, source, effect, max(n, spread), margin, Sense(sense), unit,
            measured, how, tuple(vals) if len(vals) > 1 else (), note,
        )  # fmt: skip

    def evidence(self) -> str:
        """``effect +/- noise unit (needs > margin)`` in one line."""
        return evidence_line(self.effect, self.noise, self.margin, self.sense, self.unit)


def evidence_line(effect, noise, margin, sense="above", unit: str = "") -> str:
    """``effect +/- noise unit (needs > margin)``; the numbers may be JSON's "inf" / "nan"
    strings (a saved claim), so the report and the docs write it the same way."""

    def num(x) -> str:
        x = float(x)
        if math.isinf(x) or math.isnan(x):
            return str(x)
        return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"

    op = ">" if Sense(sense) is Sense.ABOVE else "<"
    u = f" {unit}" if unit else ""
    return f"{num(effect)} +/- {num(noise)}{u} (needs {op} {num(margin)})"


@dataclass
class Result:
    """What an experiment returns. ``tables`` are named lists of rows (dicts), e.g. a metric
    against training steps; ``figures`` are file names inside the run directory."""

    metrics: dict[str, float] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    notes: str = ""

    def claim(self, key: str) -> Claim:
        """The claim with this key."""
        for c in self.claims:
            if c.key == key:
                return c
        raise KeyError(f"no claim {key!r}; claims: {', '.join(c.key for c in self.claims)}")


@dataclass(frozen=True)
class MethodInfo:
    """What a method package declares about itself (``METHOD`` in its ``__init__``)."""

    key: str
    arxiv: str
    title: str
    gives: str

    def __post_init__(self):
        if not _KEY.match(self.key) or "." in self.key:
            raise ValueError(f"method key must be a package name, got {self.key!r}")
        if self.arxiv and not re.match(r"^\d{4}\.\d{4,5}$", self.arxiv):
            raise ValueError(f"{self.key}: arxiv must be an id like 2505.15270, got {self.arxiv!r}")

    @property
    def doc(self) -> str:
        return f"docs/{self.key}.md"


def _sort_key(m: MethodInfo) -> tuple:
    return (m.key != "core", m.arxiv, m.key)


_METHODS: tuple[MethodInfo, ...] | None = None


def methods() -> tuple[MethodInfo, ...]:
    """The implemented methods: every subpackage of ``tenfold`` whose ``__init__`` declares
    ``METHOD``, core first, then by arXiv id."""
    global _METHODS
    if _METHODS is None:
        import tenfold

        found = []
        for mod in pkgutil.iter_modules(tenfold.__path__):
            if not mod.ispkg:
                continue
            info = getattr(importlib.import_module(f"tenfold.{mod.name}"), "METHOD", None)
            if info is None:
                continue
            if not isinstance(info, MethodInfo) or info.key != mod.name:
                raise TypeError(
                    f"tenfold.{mod.name}.METHOD must be a MethodInfo with key {mod.name!r}"
                )
            found.append(info)
        _METHODS = tuple(sorted(found, key=_sort_key))
    return _METHODS


def all_methods() -> tuple[tuple[MethodInfo, bool], ...]:
    """Every method of the project with whether it is implemented: :func:`methods`, then the
    roadmap's planned ones (``tenfold.roadmap.PLANNED``, if that module exists), each by
    arXiv id."""
    done = methods()
    keys = {m.key for m in done}
    try:
        planned = importlib.import_module("tenfold.roadmap").PLANNED
    except ModuleNotFoundError:
        planned = ()
    rows = [(m, True) for m in done] + [(m, False) for m in planned if m.key not in keys]
    return tuple(sorted(rows, key=lambda r: (not r[1], *_sort_key(r[0]))))  # implemented first


class RunContext:
    """Handed to an experiment: where to write, the seed, and helpers for figures."""

    def __init__(self, out_dir: Path, seed: int, preset: str, progress: bool = True):
        self.out_dir, self.seed, self.preset, self.progress = out_dir, seed, preset, progress
        self._figures: list[str] = []

    def figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``<name>.png`` in the run directory and close it."""
        import matplotlib.pyplot as plt

        fname = f"{name}.png"
        fig.savefig(self.out_dir / fname, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self._figures.append(fname)
        return fname

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"  {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Experiment:
    name: str
    config_cls: type
    fn: Callable[[Any, RunContext], Result]
    presets: dict[str, dict[str, Any]]
    summary: str
    gpu: str = ""  # what only a GPU can measure for this experiment ("" = nothing)

    @property
    def method(self) -> str:
        return self.name.split("/", 1)[0]

    def command(self, preset: str) -> str:
        return f"tenfold run {self.name} --preset {preset}"


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def experiment(
    name: str,
    config_cls: type,
    presets: dict[str, dict[str, Any]],
    summary: str,
    gpu: str = "",
):
    """Decorator registering ``fn(config, ctx) -> Result`` as experiment ``name``
    (``"<method>/<what>"``, defined inside the package ``tenfold.<method>``). Presets
    ``quick`` and ``full`` are required. ``gpu`` says what a CPU run cannot measure (kernel
    speed, a scale the CPU cannot reach); the report shows it beside the machine."""
    method, sep, what = name.partition("/")
    if not sep or not _KEY.match(method) or not what:
        raise ValueError(f"experiment name {name!r} must be '<method>/<what>'")
    if not dataclasses.is_dataclass(config_cls) or not config_cls.__dataclass_params__.frozen:
        raise TypeError(f"{name}: config must be a frozen dataclass")
    missing = {"quick", "full"} - set(presets)
    if missing:
        raise ValueError(f"{name}: presets {sorted(missing)} are missing")
    for p, over in presets.items():  # validate presets at registration: a typo fails at import
        make_config(config_cls, over, where=f"{name} preset {p!r}")

    def deco(fn):
        parts = fn.__module__.split(".")
        if parts[0] == "tenfold" and (len(parts) < 2 or parts[1] != method):
            raise ValueError(
                f"experiment {name!r} must be defined in tenfold.{method}, not {fn.__module__}"
            )
        _REGISTRY[name] = Experiment(name, config_cls, fn, presets, summary, gpu)
        return fn

    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    keys = set()
    for m in methods():
        keys.add(m.key)
        mod = f"tenfold.{m.key}.repro"
        if importlib.util.find_spec(mod):
            importlib.import_module(mod)
    stray = sorted(n for n, e in _REGISTRY.items() if e.method not in keys)
    if stray:
        raise ValueError(f"experiments of no declared method (METHOD in its __init__): {stray}")
    _LOADED = True


def registry() -> dict[str, Experiment]:
    """All registered experiments, by name (imports each method's ``repro`` module)."""
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def _close(word: str, options) -> str:
    near = difflib.get_close_matches(word, list(options), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(near)}?)" if near else ""


def get(name: str) -> Experiment:
    reg = registry()
    if name not in reg:
        raise ConfigError(
            f"unknown experiment {name!r}{_close(name, reg)}; `tenfold list` shows them all"
        )
    return reg[name]


# ------------------------------------------------------------------ typed overrides
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse_value(text: str, tp: Any, fname: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _parse_value(text, a, fname)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{fname}: cannot parse {text!r}")
    if origin is typing.Literal:
        for a in args:
            if str(a) == text:
                return a
        raise ConfigError(
            f"{fname}={text!r} is not one of {', '.join(map(str, args))}{_close(text, map(str, args))}"
        )
    if origin is tuple:
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("()", "[]"):  # accept (1,2) and [1,2] as well as 1,2
            inner = inner[1:-1]
        parts = [p for p in inner.split(",") if p.strip()]
        if args and args[-1] is not Ellipsis and len(parts) != len(args):
            raise ConfigError(f"{fname} takes {len(args)} comma-separated values, got {text!r}")
        elem = (
            args if args and args[-1] is not Ellipsis else [args[0] if args else str] * len(parts)
        )
        return tuple(_parse_value(p.strip(), t, fname) for p, t in zip(parts, elem))
    if tp is bool:
        t = text.strip().lower()
        if t in _TRUE:
            return True
        if t in _FALSE:
            return False
        raise ConfigError(f"{fname} takes true or false, got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{fname} takes an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{fname} takes a number, got {text!r}") from None
    if tp is str:
        return text
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(text)
        except ValueError:
            vals = [e.value for e in tp]
            raise ConfigError(
                f"{fname}={text!r} is not one of {', '.join(map(str, vals))}"
            ) from None
    raise ConfigError(f"{fname}: fields of type {tp} cannot be set from the command line")


def parse_overrides(config_cls: type, items: list[str]) -> dict[str, Any]:
    """``["steps=100", "lr=1e-3"]`` -> typed values for the fields of ``config_cls``."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in dataclasses.fields(config_cls)]
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set takes key=value, got {item!r}")
        if key not in names:
            raise ConfigError(
                f"unknown field {key!r} for {config_cls.__name__}{_close(key, names)}; fields: {', '.join(names)}"
            )
        out[key] = _parse_value(val.strip(), hints[key], key)
    return out


def make_config(config_cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build ``config_cls(**values)``, turning validation errors into a ConfigError."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    for k in values:
        if k not in names:
            raise ConfigError(
                f"{where + ': ' if where else ''}unknown field {k!r}{_close(k, names)}"
            )
    try:
        return config_cls(**values)
    except (TypeError, ValueError, ArithmeticError) as e:  # a check that overflows, too
        raise ConfigError(f"{where + ': ' if where else ''}{e}") from None


# ------------------------------------------------------------------ provenance
def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU/GPU names, core count and the versions that matter for reproducing a number."""
    import torch

    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    info["device"] = info["gpu"] or f"CPU ({info['cpu']}, {info['cpu_count']} cores)"
    return info


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("tenfold", "torch", "numpy", "triton", "scikit-learn", "matplotlib", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(  # the code that ran: the package and its metadata, not docs
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":/src",
                ":/pyproject.toml",
            ],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("-dirty" if dirty else "")) if sha else None


def _jsonable(x: Any) -> Any:
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return str(x)  # JSON has no NaN/inf
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _jsonable(x.item())
    return x


def _cli_value(v: Any) -> str:
    """A config value as ``--set`` parses it back (tuples comma-separated, enums by value)."""
    if isinstance(v, (tuple, list)):
        return ",".join(_cli_value(x) for x in v)
    if isinstance(v, enum.Enum):
        return str(v.value)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


_NAME = re.compile(r"^[a-z0-9_][a-z0-9_.-]*/[a-z0-9_][a-z0-9_.-]*$")
_NUM = (int, float, type(None))


def check_result(rec: Any, where: str = "result.json") -> dict[str, Any]:
    """Check that ``rec`` (a loaded ``result.json``) has the shape tools rely on; returns it,
    or raises ValueError naming ``where`` and the first problem. Figures must be relative
    paths inside the run folder (``a.png``, ``figs/b.png``): nothing else is ever embedded."""

    def bad(msg: str) -> typing.NoReturn:
        raise ValueError(f"{where}: {msg}")

    if not isinstance(rec, dict):
        bad(f"must hold a JSON object, got {type(rec).__name__}")
    for k in ("name", "created"):
        if not isinstance(rec.get(k), str):
            bad(f"{k!r} must be a string, got {rec.get(k)!r}")
    if not _NAME.match(rec["name"]):
        bad(f"name must look like method/experiment, got {rec['name']!r}")
    for k, tp in (
        ("claims", list),
        ("metrics", dict),
        ("tables", dict),
        ("figures", list),
        ("machine", dict),
        ("versions", dict),
        ("config", dict),
        ("overrides", dict),
    ):
        if k in rec and not isinstance(rec[k], tp):
            bad(
                f"{k!r} must be a JSON {'array' if tp is list else 'object'}, got {type(rec[k]).__name__}"
            )
    for k in ("summary", "notes", "command", "preset", "git_commit", "needs_gpu"):
        if rec.get(k) is not None and not isinstance(rec[k], str):
            bad(f"{k!r} must be a string, got {type(rec[k]).__name__}")
    if "wall_time_s" in rec and (
        isinstance(rec["wall_time_s"], bool) or not isinstance(rec["wall_time_s"], _NUM)
    ):
        bad(f"'wall_time_s' must be a number, got {rec['wall_time_s']!r}")
    verdicts = {v.value for v in Verdict}
    for i, c in enumerate(rec.get("claims", [])):
        if not isinstance(c, dict):
            bad(f"claims[{i}] must be an object, got {type(c).__name__}")
        for k in ("statement", "measured"):
            if not isinstance(c.get(k, c.get("paper") if k == "statement" else None), str):
                bad(f"claims[{i}].{k} must be a string")
        if c.get("verdict") not in verdicts:
            bad(f"claims[{i}].verdict must be one of {sorted(verdicts)}, got {c.get('verdict')!r}")
        for k in ("effect", "noise", "margin"):  # NaN/inf are stored as strings
            v = c.get(k)
            if k in c and not (
                (isinstance(v, _NUM) and not isinstance(v, bool)) or v in ("nan", "inf", "-inf")
            ):
                bad(f"claims[{i}].{k} must be a number, got {v!r}")
        for k in ("key", "source", "unit", "noise_from", "note", "sense"):
            if c.get(k) is not None and not isinstance(c[k], str):
                bad(f"claims[{i}].{k} must be a string, got {type(c[k]).__name__}")
    for name, rows in rec.get("tables", {}).items():
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            bad(f"table {name!r} must be an array of objects")
    for i, fig in enumerate(rec.get("figures", [])):
        if not isinstance(fig, str) or not fig:
            bad(f"figures[{i}] must be a file name, got {fig!r}")
        pp = Path(fig)
        if pp.is_absolute() or ".." in pp.parts or "\\" in fig:
            bad(f"figures[{i}] must be a path inside the run folder, got {fig!r}")
    return rec


def make_run_dir(parent: Path) -> Path:
    """Create a new, empty run folder ``parent/<UTC stamp>[-k]`` atomically: two runs
    started together into one ``--out`` each get their own. Raises ConfigError when
    ``parent`` cannot hold folders (a file on the way, no permission)."""
    parent = Path(parent)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        for k in range(10_000):
            run_dir = parent / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                run_dir.mkdir()
                return run_dir
            except FileExistsError:
                continue
    except FileExistsError:
        raise ConfigError(
            f"cannot create run folders under {parent}: a file is in the way"
        ) from None
    except NotADirectoryError:
        raise ConfigError(
            f"cannot create run folders under {parent}: a file is in the way"
        ) from None
    except PermissionError:
        raise ConfigError(f"cannot create run folders under {parent}: permission denied") from None
    except OSError as e:
        raise ConfigError(f"cannot create run folders under {parent}: {e.strerror or e}") from None
    raise ConfigError(f"{parent}: 10000 runs started in one second; pick another --out")


def _write_failure(run_dir, name, preset, seed, cfg, cmd, exc, seconds) -> None:
    """``failure.json`` in the run folder: what ran, where, and how it ended."""
    import traceback

    interrupted = isinstance(exc, KeyboardInterrupt)
    record = {
        "name": name,
        "status": "interrupted" if interrupted else "failed",
        "preset": preset,
        "seed": seed,
        "config": _jsonable(cfg),
        "command": cmd,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(seconds, 2),
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))[
            -20000:
        ],
        "git_commit": git_commit(),
    }
    with contextlib.suppress(OSError):
        atomic_write_text(Path(run_dir) / "failure.json", json.dumps(record, indent=2))


def run_experiment(
    name: str,
    preset: str = "quick",
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    out: str | os.PathLike = "runs",
    progress: bool = True,
) -> tuple[Result, Path]:
    """Run one experiment and save its result; returns (result, run directory).

    Under ``torchrun`` every process runs the experiment (the trainer shards the batches);
    only rank 0 writes the run directory, the others work in a temporary one.
    """
    import tempfile

    import torch

    exp = get(name)
    if preset not in exp.presets:
        raise ConfigError(f"unknown preset {preset!r} for {name}; choose {', '.join(exp.presets)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    values = {**exp.presets[preset], **(overrides or {})}
    cfg = make_config(exp.config_cls, values, where=name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    main = int(os.environ.get("RANK", "0")) == 0
    scratch = None
    launcher = f"torchrun --nproc-per-node {world} -m tenfold " if world > 1 else "tenfold "
    cmd = (
        launcher
        + exp.command(preset).removeprefix("tenfold ")
        + "".join(f" --set {k}={_cli_value(v)}" for k, v in (overrides or {}).items())
        + (f" --seed {seed}" if seed else "")
    )
    if main:
        run_dir = make_run_dir(Path(out) / name)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="tenfold-rank-")
        run_dir, progress = Path(scratch.name), False
    ctx = RunContext(run_dir, seed, preset, progress)
    t0 = time.perf_counter()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            result = exp.fn(cfg, ctx)
        if not isinstance(result, Result):
            raise TypeError(f"{name} returned {type(result).__name__}, not Result")
        keys = [c.key for c in result.claims]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{name}: claim keys must be unique, got {keys}")
    except BaseException as e:  # a failed or interrupted run still leaves a record
        if main:
            _write_failure(run_dir, name, preset, seed, cfg, cmd, e, time.perf_counter() - t0)
        raise
    finally:
        if scratch is not None:
            scratch.cleanup()
    wall = time.perf_counter() - t0
    result.figures = list(dict.fromkeys(result.figures + ctx._figures))
    if scratch is not None:
        return result, run_dir
    record = {
        "name": name,
        "method": exp.method,
        "summary": exp.summary,
        "needs_gpu": exp.gpu,
        "preset": preset,
        "seed": seed,
        "config": _jsonable(cfg),
        "overrides": _jsonable(overrides or {}),
        "command": cmd,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(wall, 2),
        "processes": world,
        "machine": machine_info(),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "metrics": _jsonable(result.metrics),
        "claims": _jsonable(result.claims),
        "tables": _jsonable(result.tables),
        "figures": result.figures,
        "notes": result.notes,
    }
    atomic_write_text(run_dir / "result.json", json.dumps(record, indent=2))
    return result, run_dir
