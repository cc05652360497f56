"""Layering, import cycles and start-up cost of the package (as scanpy/anndata test theirs)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "flowtools"

# Each layer may import only layers of lower or equal rank (same subpackage is always fine).
RANK = {
    "_version": 0,
    "_config": 0,
    "errors": 0,
    "provenance": 0,
    "io": 1,
    "synth": 2,
    "compensation": 2,
    "transforms": 2,
    "gating": 3,
    "analysis": 4,
    "stats": 5,
    "pipeline": 6,
    "report": 7,
    "cli": 8,
    "__main__": 8,
}
# synth is a side branch: it may use io (and the base) only.
ALLOWED_EXTRA = {"synth": {"io", "errors", "provenance", "_version", "_config"}}
HEAVY = ("numba", "umap", "hdbscan", "matplotlib", "pandas", "sklearn", "dask")


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        yield ".".join(parts), path


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path, module: str, *, top_level_only: bool):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    pkg_parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name


def test_layers_import_one_way():
    bad = []
    for module, path in _modules():
        src = _layer(module)
        if src is None or src not in RANK:
            continue
        for name in _imports(path, module, top_level_only=False):
            if not name.startswith("flowtools."):
                continue
            dst = _layer(name)
            if dst is None or dst == src or dst not in RANK:
                continue
            allowed = ALLOWED_EXTRA.get(src)
            ok = dst in allowed if allowed is not None else RANK[dst] <= RANK[src]
            if not ok or (dst == "synth" and src not in ("pipeline", "report", "cli", "_cli", "__main__")):
                bad.append(f"{module} imports {name}")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph: dict[str, set[str]] = {}
    mods = dict(_modules())
    for module, path in mods.items():
        graph[module] = {n for n in _imports(path, module, top_level_only=True) if n in mods and n != module}
    seen: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        seen[node] = 1
        for nxt in graph[node]:
            if seen.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*stack, nxt])
        seen[node] = 2

    for m in graph:
        if m not in seen:
            visit(m, [m])


def _loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    return {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}


def test_import_flowtools_is_light():
    loaded = _loaded_by("import flowtools")
    assert not loaded & {*HEAVY, "typer", "numpy"}, sorted(loaded & {*HEAVY, "typer", "numpy"})


def test_cli_help_is_light():
    loaded = _loaded_by(
        "import sys; sys.argv=['flowtools','--help']\nfrom flowtools.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass"
    )
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_no_print_or_assert_validation_in_library():
    offenders = []
    for module, path in _modules():
        if module.endswith("cli"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{module}:{node.lineno} print()")
    assert not offenders, offenders
