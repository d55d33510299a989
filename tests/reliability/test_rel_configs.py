"""Adversarial configs: every field of every experiment and API config, given a value of the
wrong kind or one that cannot work, is refused at construction with a ConfigError that names
the class and the field -- never a crash later, never a silently wrong run."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tenfold.afdm.modem import AFDMParams
from tenfold.attention import AttentionConfig
from tenfold.attention._ref import Numerics
from tenfold.core.diffusion import EDMConfig
from tenfold.core.experiment import make_config, parse_overrides, registry
from tenfold.core.models import BertConfig, DiTConfig, LMConfig, UViTConfig
from tenfold.core.models.mmdit import MMDiTConfig
from tenfold.core.models.pixart import PixArtConfig
from tenfold.core.tasks.lm import LMRunSpec
from tenfold.core.train import TrainConfig
from tenfold.core.validate import ConfigError, check_config, check_number
from tenfold.fallback import FallbackConfig
from tenfold.mup import MuPConfig

REG = registry()
EXPERIMENT_CONFIGS = sorted({e.config_cls for e in REG.values()}, key=lambda c: c.__name__)
API_CONFIGS = [
    TrainConfig,
    EDMConfig,
    DiTConfig,
    UViTConfig,
    PixArtConfig,
    MMDiTConfig,
    LMConfig,
    BertConfig,
    LMRunSpec,
    FallbackConfig,
    AttentionConfig,
    Numerics,
]
REQUIRED = {  # configs with fields that have no default
    MuPConfig: dict(base_width=64),
    AFDMParams: dict(N=64, c1=0.05, c2=0.001, cp_len=4),
}


def _base(cls):
    return REQUIRED.get(cls, {})


def _bad_values(tp) -> list:
    """Values of the wrong kind for annotation ``tp`` (each must be refused)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    optional = type(None) in args
    if optional:
        inner = [a for a in args if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else tp
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is int:
        return [2.5, "3", True, math.nan]
    if tp is float:
        return [math.nan, math.inf, -math.inf, "1.0", True]
    if tp is bool:
        return ["yes", 2, None] if not optional else ["yes", 2]
    if tp is str:
        return [3, b"x"]
    if origin is tuple:
        return ["1,2", 5] + ([()] if args and args[-1] is Ellipsis else [])
    return []


def _cases(classes):
    out = []
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            for bad in _bad_values(hints[f.name]):
                out.append(pytest.param(cls, f.name, bad, id=f"{cls.__name__}.{f.name}={bad!r}"))
    return out


# fields whose empty tuple is allowed by the config (an empty choice is meaningful there)
EMPTY_OK = {
    ("FallbackRunConfig", "alternatives"),
    ("FinetuneConfig", "alternatives"),
    ("PTQConfig", "peers"),  # no peer rows
    ("MiniLMConfig", "peers"),
}


@pytest.mark.parametrize(
    "cls, name, bad", _cases(EXPERIMENT_CONFIGS + API_CONFIGS + list(REQUIRED))
)
def test_a_wrongly_typed_field_is_refused_naming_it(cls, name, bad):
    if bad == () and (cls.__name__, name) in EMPTY_OK:
        cls(**{**_base(cls), name: bad})  # accepted, as documented
        return
    with pytest.raises(ConfigError) as e:
        make_config(cls, {**_base(cls), name: bad}, where="here")
    assert f"{cls.__name__}.{name}" in str(e.value) or name in str(e.value)


def _int_fields(cls):
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if hints.get(f.name) is int]


@pytest.mark.parametrize(
    "cls, name",
    [
        pytest.param(c, n, id=f"{c.__name__}.{n}")
        for c in EXPERIMENT_CONFIGS
        for n in _int_fields(c)
        if n not in ("seed",)
    ],
)
def test_a_negative_size_or_count_is_refused(cls, name):
    """Every integer field of an experiment config is a size, count, step or budget:
    -1 of it cannot work and must not start a run."""
    with pytest.raises(ConfigError, match=name):
        make_config(cls, {name: -1})


@pytest.mark.parametrize(
    "name, field, value, needle",
    [
        ("core/dit-digits", "cfg_scale", "nan", "cfg_scale must be a number, got nan"),
        ("core/dit-digits", "lr", "inf", "lr must be finite"),
        ("core/dit-digits", "batch_size", "99999999999", None),
        ("afdm/ber-mobility", "subcarrier_hz", "0", "subcarrier_hz must be > 0"),
        ("afdm/ber-mobility", "carrier_hz", "1e308", "overflows"),
        ("afdm/ber-mobility", "esn0_db", "", "esn0_db must not be empty"),
        ("afdm/ber-mobility", "speeds_kmh", "-5", "must be >= 0"),
        ("afdm/xlmimo-rka", "visibility", "1.5", "visibility must be in [0,1]"),
        ("mup/lr-transfer", "heads", "4,2,8", "increasing"),
        ("mup/lr-transfer", "log2_lrs", "-1e9,-5,-4,-3,-2,-1", "log2_lrs[0]"),
        ("mup/coord-check", "backbones", "dit,dit", "must not repeat"),
        ("attention/accuracy", "plug_samples", "100000", "plug_samples must be in [2,359]"),
        ("attention/accuracy", "sources", "", "sources must not be empty"),
        ("fallback/pretrain", "threshold", "nan", "threshold must be a number"),
        ("fallback/pretrain", "block", "16,0", "block[1] must be >= 1"),
        ("attention/train-8bit", "tolerance", "2", "tolerance must be in (0,1)"),
    ],
)
def test_set_values_that_cannot_work_are_refused_before_any_run(name, field, value, needle):
    exp = REG[name]
    with pytest.raises(ConfigError) as e:
        over = parse_overrides(exp.config_cls, [f"{field}={value}"])
        make_config(exp.config_cls, {**exp.presets["quick"], **over}, where=name)
    if needle:
        assert needle in str(e.value)


FIELD_CASES = [
    (exp.name, f.name)
    for exp in sorted(REG.values(), key=lambda e: e.name)
    for f in dataclasses.fields(exp.config_cls)
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(FIELD_CASES), text=st.text(max_size=24))
def test_any_set_value_is_parsed_and_validated_or_refused_with_a_config_error(case, text):
    """Property: `--set field=<anything>` either builds a valid config or raises
    ConfigError -- no other exception type ever escapes to the user."""
    name, field = case
    exp = REG[name]
    try:
        over = parse_overrides(exp.config_cls, [f"{field}={text}"])
        cfg = make_config(exp.config_cls, {**exp.presets["quick"], **over}, where=name)
    except ConfigError:
        return
    v = getattr(cfg, field)
    if isinstance(v, float):
        assert math.isfinite(v)


@settings(max_examples=200, deadline=None)
@given(
    lr=st.floats(allow_nan=True, allow_infinity=True),
    steps=st.integers(-(2**70), 2**70),
    betas=st.tuples(st.floats(-2, 2), st.floats(-2, 2)),
)
def test_train_config_accepts_exactly_the_values_that_work(lr, steps, betas):
    ok = math.isfinite(lr) and lr > 0 and steps >= 1 and all(0 <= b < 1 for b in betas)
    try:
        cfg = TrainConfig(lr=lr, steps=steps, betas=betas)
    except ConfigError:
        assert not ok
        return
    assert ok and cfg.lr == lr and cfg.steps == steps


def test_check_config_rejects_rules_for_unknown_fields():
    @dataclasses.dataclass(frozen=True)
    class C:
        a: int = 1

        def __post_init__(self):
            check_config(self, b=">0")

    with pytest.raises(TypeError, match="unknown fields"):
        C()


@pytest.mark.parametrize(
    "value, rule, ok",
    [
        (1, ">0", True),
        (0, ">0", False),
        (0.5, "[0,1)", True),
        (1.0, "[0,1)", False),
        (math.inf, ">0", False),
        (math.inf, ">0 inf", True),
        (math.nan, "inf", False),
        (-0.0, ">=0", True),
    ],
)
def test_check_number_rules(value, rule, ok):
    if ok:
        assert check_number("x", value, rule) == value
    else:
        with pytest.raises(ConfigError, match="x must"):
            check_number("x", value, rule)
