"""The house rules that the layout depends on, checked on the source: core imports no method
package and has no import loop; every method package declares itself."""

import ast
import importlib
import pkgutil
from pathlib import Path

import tenfold
from tenfold.core.experiment import MethodInfo, all_methods, methods, registry

SRC = Path(tenfold.__file__).parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included),
    relative imports resolved."""
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            for a in node.names:  # `from . import x` may import the submodule x
                if (SRC.parent / (target + "." + a.name).replace(".", "/")).with_suffix(
                    ".py"
                ).exists() or (
                    SRC.parent / (target + "." + a.name).replace(".", "/") / "__init__.py"
                ).exists():
                    out.add(f"{target}.{a.name}")
    return {m for m in out if m == "tenfold" or m.startswith("tenfold.")}


def _core_graph() -> dict[str, set[str]]:
    files = sorted((SRC / "core").rglob("*.py"))
    return {_module_name(f): _imports(f) for f in files}


def test_core_imports_no_method_package():
    bad = {
        m: sorted(i for i in deps if i != "tenfold" and not i.startswith("tenfold.core"))
        for m, deps in _core_graph().items()
    }
    assert not {m: d for m, d in bad.items() if d}, bad


def _find_loop(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of the directed graph ``edges`` (as a path that ends where it starts), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_core_has_no_import_loop():
    graph = _core_graph()
    edges = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    assert _find_loop(edges) is None, " -> ".join(_find_loop(edges))


def test_the_loop_finder_finds_loops():
    assert _find_loop({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_loop({"a": {"b"}, "b": set(), "c": {"b"}}) is None
    # the loop that the house-v2 redesign removed: data -> metrics -> data
    assert _find_loop({"core.data": {"core.metrics"}, "core.metrics": {"core.data"}})


def test_every_method_package_declares_itself_and_owns_its_experiments():
    declared = {m.key for m in methods()}
    pkgs = {m.name for m in pkgutil.iter_modules(tenfold.__path__) if m.ispkg}
    assert declared == pkgs  # every subpackage is a method (core included) and declares METHOD
    for key in declared:
        info = importlib.import_module(f"tenfold.{key}").METHOD
        assert isinstance(info, MethodInfo) and info.key == key
    for name, exp in registry().items():
        assert exp.method in declared, name
        assert exp.fn.__module__.startswith(f"tenfold.{exp.method}."), (name, exp.fn.__module__)
    keys = [m.key for m, _ in all_methods()]
    assert len(keys) == len(set(keys)) == 11  # core + ten papers, none listed twice


def test_a_new_method_package_is_discovered_with_no_change_to_core(tmp_path, monkeypatch):
    """The template of docs/contributing.md: a package that declares METHOD and registers an
    experiment in its repro module is listed, run and reported; core is not touched."""
    import sys

    from tenfold.core import experiment as E
    from tenfold.core.report import collect_results, render_report

    pkg = tmp_path / "toymethod"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "from tenfold.core.experiment import MethodInfo\n"
        'METHOD = MethodInfo("toymethod", "2501.00001", "A toy paper", "nothing at all")\n'
    )
    (pkg / "repro.py").write_text(
        "from dataclasses import dataclass\n"
        "from tenfold.core.experiment import Claim, Result, experiment\n"
        "@dataclass(frozen=True)\n"
        "class Cfg:\n"
        "    n: int = 3\n"
        '@experiment("toymethod/count", Cfg, presets={"quick": {"n": 2}, "full": {}}, summary="toy")\n'
        "def count(cfg, ctx):\n"
        '    return Result(metrics={"n": cfg.n}, claims=[Claim.judge("positive", "n > 0", source="ours", values=cfg.n, margin=0.0, noise=0.0, noise_from="exact", measured=str(cfg.n))])\n'
    )
    monkeypatch.setattr(tenfold, "__path__", [*tenfold.__path__, str(tmp_path)])
    monkeypatch.setattr(E, "_METHODS", None)
    monkeypatch.setattr(E, "_LOADED", False)
    try:
        assert "toymethod" in {m.key for m in E.methods()}
        assert "toymethod/count" in E.registry()
        result, _ = E.run_experiment(
            "toymethod/count", "quick", out=tmp_path / "runs", progress=False
        )
        assert result.claim("positive").verdict.value == "holds"
        page = render_report(collect_results(tmp_path / "runs")[0])
        assert "A toy paper" in page and "toymethod/count" in page
    finally:
        E._REGISTRY.pop("toymethod/count", None)
        for name in [m for m in sys.modules if m.startswith("tenfold.toymethod")]:
            del sys.modules[name]
        E._METHODS, E._LOADED = None, False
