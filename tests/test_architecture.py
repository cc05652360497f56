"""Layering, import cycles, private imports and start-up cost of the package (as scanpy/anndata test theirs).

Every ``import`` statement counts, wherever it is: at module level, in a class body or inside a
function (a lazy import defers the cost, not the dependency). Imports under ``if TYPE_CHECKING:``
count for the layering and the private-name rules but not for cycles, since they never run.
Each failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "flowtools"
ROOT = PKG.parent

# Each layer may import only layers of lower or equal rank (same layer is always fine).
RANK = {
    "_version": 0,
    "_config": 0,
    "_numba": 0,
    "_resources": 0,
    "_workers": 0,
    "errors": 0,
    "provenance": 0,
    "io": 1,
    "synth": 2,
    "compensation": 2,
    "transforms": 2,
    "gating": 3,
    "analysis": 4,
    "beads": 4,  # bead arrays: io/transforms/gating below, stats/pipeline above
    "stats": 5,
    "pipeline": 6,
    "report": 7,
    "cli": 8,
    "_cli": 8,
    "__main__": 8,
}
# Layers that are one unit: the command line is split over cli.py and _cli/ (and __main__.py).
GROUP = {"_cli": "cli", "__main__": "cli"}
# synth is a side branch: it may use io (and the base) only ...
ALLOWED_EXTRA = {"synth": {"io", "errors", "provenance", "_version", "_config"}}
# ... and only the application layers may use it.
SYNTH_USERS = {"pipeline", "report", "cli"}
# The root package's own private modules, shared by every layer: environment switches, version,
# numba compiler options, worker-process helpers, packaged resources.
SHARED_PRIVATE = {"flowtools._config", "flowtools._version", "flowtools._numba", "flowtools._workers",
                  "flowtools._resources"}
HEAVY = ("numba", "umap", "hdbscan", "matplotlib", "pandas", "sklearn", "dask")


@dataclass(frozen=True)
class Import:
    """One imported module or name of one import statement."""

    module: str  # the importing module
    path: Path
    line: int
    text: str  # the statement as written, one name of it
    target: str  # the imported module (``from M import sub`` with M.sub a module: M.sub)
    name: str | None  # the name taken from ``target`` when it is not a module
    lazy: bool  # inside a function
    type_only: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        lazy = " (inside a function)" if self.lazy else ""
        return f"{self.path.relative_to(ROOT)}:{self.line}: `{self.text}`{lazy}"


@cache
def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _group(layer: str | None) -> str | None:
    return GROUP.get(layer, layer) if layer is not None else None


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST, *, lazy: bool = False, type_only: bool = False) -> Iterator[tuple]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node, lazy, type_only
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        for stmt in node.body:
            yield from _import_nodes(stmt, lazy=lazy, type_only=True)
        for stmt in node.orelse:
            yield from _import_nodes(stmt, lazy=lazy, type_only=type_only)
        return
    inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child, lazy=inner, type_only=type_only)


@cache
def _imports(module: str) -> tuple[Import, ...]:
    """Every import of a flowtools module, made by ``module``, one record per imported name."""
    mods = _modules()
    path = mods[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node, lazy, type_only in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flowtools" or alias.name.startswith("flowtools."):
                    text = f"import {alias.name}"
                    out.append(Import(module, path, node.lineno, text, alias.name, None, lazy, type_only))
            continue
        if node.level:
            parts = pkg_parts[: len(pkg_parts) - node.level + 1]
            base = ".".join([*parts, node.module] if node.module else parts)
        else:
            base = node.module or ""
        if base != "flowtools" and not base.startswith("flowtools."):
            continue
        written = "." * node.level + (node.module or "")
        for alias in node.names:
            text = f"from {written} import {alias.name}"
            sub = f"{base}.{alias.name}"
            target, name = (sub, None) if sub in mods else (base, alias.name)
            out.append(Import(module, path, node.lineno, text, target, name, lazy, type_only))
    return tuple(out)


def _all_imports() -> Iterator[Import]:
    for module in _modules():
        yield from _imports(module)


def test_the_scanner_sees_lazy_and_relative_imports():
    # the rules below are only as good as the scan: it must see imports inside functions and resolve
    # relative ones (if it saw nothing, every rule would pass)
    found = list(_all_imports())
    assert any(i.lazy for i in found), "no import inside a function found"
    assert any(i.module == "flowtools.cli" and i.target.startswith("flowtools._cli.") for i in found)
    assert any(i.module.startswith("flowtools._cli.") and i.lazy for i in found), "flowtools/_cli not scanned"
    writes_relative = any("\nfrom ." in p.read_text(encoding="utf-8") for p in _modules().values())
    if writes_relative:
        assert any(i.text.startswith("from .") for i in found), "relative imports not resolved"


def test_every_layer_has_a_rank():
    unranked = sorted({_layer(m) for m in _modules()} - set(RANK) - {None})
    assert not unranked, f"new top-level modules or subpackages need a place in RANK: {unranked}"


def test_layers_import_one_way():
    bad = []
    for imp in _all_imports():
        src, dst = _group(_layer(imp.module)), _group(_layer(imp.target))
        if src is None or dst is None or src == dst or src not in RANK or dst not in RANK:
            continue
        allowed = ALLOWED_EXTRA.get(src)
        ok = dst in allowed if allowed is not None else RANK[dst] <= RANK[src]
        if dst == "synth" and src not in SYNTH_USERS:
            ok = False
        if not ok:
            bad.append(f"{imp.where()}: {src} (rank {RANK[src]}) may not import {dst} (rank {RANK[dst]})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for comp in components:
        members, start = set(comp), comp[0]
        # shortest path start -> ... -> start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier = [start]
        while start not in prev:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w in members and w not in prev:
                        prev[w] = v
                        nxt.append(w)
            frontier = nxt
        path = [start]
        while len(path) == 1 or path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1])
    return cycles


def test_cycle_finder_finds_each_cycle_once():
    graph = {"a": {"b": None}, "b": {"c": None}, "c": {"a": None, "d": None}, "d": {}, "e": {"d": None},
             "f": {"g": None}, "g": {"f": None}}
    assert sorted(_cycles(graph)) == [["a", "b", "c", "a"], ["f", "g", "f"]]
    assert _cycles({"a": {"b": None}, "b": {}}) == []


def test_no_import_cycles():
    mods = _modules()
    graph: dict[str, dict[str, Import]] = {m: {} for m in mods}
    for imp in _all_imports():
        if not imp.type_only and imp.target in mods and imp.target != imp.module:
            graph[imp.module].setdefault(imp.target, imp)
    found = []
    for cycle in _cycles(graph):
        steps = zip(cycle, cycle[1:], strict=False)
        edges = "\n".join(f"    {a} -> {b}: {graph[a][b].where()}" for a, b in steps)
        found.append(" -> ".join(cycle) + "\n" + edges)
    assert not found, "import cycles (function-level imports count):\n" + "\n".join(found)


def _private_part(target: str) -> bool:
    return any(_is_private(p) for p in target.split(".")[1:])


def test_no_private_imports_across_packages():
    bad = []
    for imp in _all_imports():
        src, dst = _group(_layer(imp.module)), _group(_layer(imp.target))
        if src == dst:
            continue  # a package's own private modules and names
        if _private_part(imp.target) and imp.target not in SHARED_PRIVATE:
            bad.append(f"{imp.where()}: private module {imp.target} of {dst or 'flowtools'}")
        elif imp.name is not None and _is_private(imp.name):
            bad.append(f"{imp.where()}: private name {imp.name} of {imp.target}")
    assert not bad, "private imports across packages:\n" + "\n".join(bad)


def _loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    return {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}


def test_import_flowtools_is_light():
    loaded = _loaded_by("import flowtools")
    assert "flowtools" in loaded, "-X importtime output not understood"
    assert not loaded & {*HEAVY, "typer", "numpy"}, sorted(loaded & {*HEAVY, "typer", "numpy"})


def test_every_lazy_top_level_name_resolves():
    """``flowtools.write_fcs`` once pointed at a module that does not define it (AttributeError)."""
    import flowtools

    for name in flowtools.__all__:
        assert getattr(flowtools, name) is not None, name


def test_cli_help_is_light():
    loaded = _loaded_by(
        "import sys; sys.argv=['flowtools','--help']\nfrom flowtools.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert "typer" in loaded, "-X importtime output not understood"
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_no_print_in_library():
    offenders = []
    for module, path in _modules().items():
        if _group(_layer(module)) == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: print()")
    assert not offenders, "print() in library code (use logging or return values):\n" + "\n".join(offenders)
