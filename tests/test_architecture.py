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
