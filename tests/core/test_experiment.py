import json
import math
from dataclasses import dataclass
from typing import Literal

import pytest

from tenfold.core import experiment as E
from tenfold.core.report import collect_results, render_report, write_report


@dataclass(frozen=True)
class ToyConfig:
    n: int = 3
    scale: float = 1.0
    name: str = "x"
    flag: bool = False
    mode: Literal["a", "b"] = "a"
    shape: tuple[int, int] = (2, 3)
    limit: int | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@pytest.fixture
def toy_experiment():
    @E.experiment(
        "core/_toy", ToyConfig, presets={"quick": {"n": 2}, "full": {"n": 5}}, summary="toy"
    )
    def toy(cfg: ToyConfig, ctx: E.RunContext) -> E.Result:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot(range(cfg.n))
        ctx.figure(fig, "line")
        return E.Result(
            metrics={"n": cfg.n, "half": cfg.n * cfg.scale / 2, "inf": float("inf")},
            claims=[
                E.Claim.judge(
                    "positive",
                    "n is positive",
                    source="ours",
                    values=cfg.n,
                    margin=0.0,
                    noise=0.0,
                    noise_from="exact",
                    measured=f"n = {cfg.n}",
                ),
                E.Claim.judge(
                    "undecided",
                    "undecided",
                    source="ours",
                    values=1.0,
                    margin=0.0,
                    noise=math.inf,
                    noise_from="not measured",
                    measured="?",
                ),
            ],
            tables={"rows": [{"i": i, "sq": i * i} for i in range(cfg.n)]},
        )

    yield "core/_toy"
    E._REGISTRY.pop("core/_toy", None)


def test_parse_overrides_types():
    got = E.parse_overrides(
        ToyConfig,
        ["n=7", "scale=1e-3", "name=hello=world", "flag=yes", "mode=b", "shape=4,5", "limit=none"],
    )
    assert got == dict(
        n=7, scale=1e-3, name="hello=world", flag=True, mode="b", shape=(4, 5), limit=None
    )
    assert E.parse_overrides(ToyConfig, ["limit=9"]) == {"limit": 9}
    for text in ("(4,5)", "[4, 5]", "4,5,"):  # Python-looking tuples are accepted too
        assert E.parse_overrides(ToyConfig, [f"shape={text}"]) == {"shape": (4, 5)}


@pytest.mark.parametrize(
    "item, msg",
    [
        ("stpes=3", "unknown field 'stpes'"),
        ("nn=3", "did you mean n"),
        ("n=three", "n takes an integer"),
        ("flag=maybe", "flag takes true or false"),
        ("mode=c", "not one of a, b"),
        ("shape=1", "takes 2 comma-separated"),
        ("n", "key=value"),
    ],
)
def test_parse_overrides_errors(item, msg):
    with pytest.raises(E.ConfigError, match=msg):
        E.parse_overrides(ToyConfig, [item])


def test_config_validation_becomes_config_error():
    with pytest.raises(E.ConfigError, match="n must be >= 1"):
        E.make_config(ToyConfig, {"n": 0})


def test_registration_checks_presets_and_names(monkeypatch):
    with pytest.raises(ValueError, match="<method>/<what>"):
        E.experiment("no-slash", ToyConfig, {"quick": {}, "full": {}}, "")

    def fn(cfg, ctx):
        return E.Result()

    fn.__module__ = "tenfold.mup.repro"  # an experiment must live in its method's package
    with pytest.raises(ValueError, match="must be defined in tenfold.core"):
        E.experiment("core/x", ToyConfig, {"quick": {}, "full": {}}, "")(fn)
    # an experiment of a method that no package declares is refused when the registry loads
    monkeypatch.setattr(E, "_LOADED", False)
    E.experiment("nomethod/x", ToyConfig, {"quick": {}, "full": {}}, "")(lambda c, x: None)
    try:
        with pytest.raises(ValueError, match="no declared method"):
            E.registry()
    finally:
        E._REGISTRY.pop("nomethod/x")
    with pytest.raises(ValueError, match="missing"):
        E.experiment("core/x", ToyConfig, {"quick": {}}, "")
    with pytest.raises(E.ConfigError, match="unknown field"):
        E.experiment("core/x", ToyConfig, {"quick": {"bogus": 1}, "full": {}}, "")


def test_registry_has_the_foundation_experiment():
    reg = E.registry()
    assert "core/dit-digits" in reg
    assert reg["core/dit-digits"].presets.keys() >= {"quick", "full"}
    with pytest.raises(E.ConfigError, match="did you mean core/dit-digits"):
        E.get("core/dit-digit")


def test_run_saves_result_with_provenance(toy_experiment, tmp_path):
    result, run_dir = E.run_experiment(
        toy_experiment, "quick", {"scale": 4.0}, seed=3, out=tmp_path
    )
    assert run_dir.parent == tmp_path / "core" / "_toy"
    rec = json.loads((run_dir / "result.json").read_text())
    assert rec["config"]["n"] == 2 and rec["config"]["scale"] == 4.0 and rec["seed"] == 3
    assert rec["metrics"]["half"] == 4.0 and rec["metrics"]["inf"] == "inf"
    assert [c["verdict"] for c in rec["claims"]] == ["holds", "inconclusive"]
    assert rec["figures"] == ["line.png"] and (run_dir / "line.png").stat().st_size > 0
    assert rec["machine"]["device"] and rec["versions"]["torch"] and rec["wall_time_s"] >= 0
    assert rec["command"] == "tenfold run core/_toy --preset quick --set scale=4.0 --seed 3"
    with pytest.raises(E.ConfigError, match="unknown preset"):
        E.run_experiment(toy_experiment, "medium", out=tmp_path)


def test_report_lists_all_methods_and_embeds_results(toy_experiment, tmp_path):
    E.run_experiment(toy_experiment, "quick", out=tmp_path / "runs")
    _, second = E.run_experiment(toy_experiment, "full", out=tmp_path / "runs")
    (tmp_path / "runs" / "broken").mkdir()
    (tmp_path / "runs" / "broken" / "result.json").write_text("{not json")
    results, skipped = collect_results(tmp_path / "runs")
    assert results["core/_toy"]["_dir"] == second  # the latest run wins
    assert len(skipped) == 1 and "broken" in skipped[0]
    page = render_report(results, skipped)
    table = E.all_methods()
    assert len(table) == 11  # core and the ten papers, implemented or not
    for m, _ in table:
        assert f"<td>{m.key}</td>" in page or f"href='#{m.key}'" in page
    implemented = {e.method for e in E.registry().values()}
    assert {"core", "mup"} <= implemented
    assert {m.key for m, done in table if done} == implemented
    assert page.count("not implemented yet") == len(table) - len(implemented)
    assert "data:image/png;base64," in page and "class='holds'" in page
    assert "tenfold run core/_toy --preset full" in page
    path = write_report(tmp_path / "runs", tmp_path / "report")
    assert path.read_text().startswith("<!doctype html>")


def test_the_recorded_command_parses_back_to_the_same_overrides(toy_experiment, tmp_path):
    over = {"shape": (4, 5), "flag": True, "mode": "b", "limit": None, "name": "y"}
    _, run_dir = E.run_experiment(toy_experiment, "quick", over, out=tmp_path)
    cmd = json.loads((run_dir / "result.json").read_text())["command"]
    items = cmd.split("--set ")[1:]
    assert E.parse_overrides(ToyConfig, [i.strip() for i in items]) == over
