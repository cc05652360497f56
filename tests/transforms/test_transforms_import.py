"""`import flowtools.transforms` must stay light: no numba until a kernel is needed."""

from __future__ import annotations

import subprocess
import sys


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True,
                         check=True)
    return {line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line}


def test_import_transforms_does_not_load_numba():
    loaded = _loaded("import flowtools.transforms")
    assert "numba" not in loaded
    assert "flowtools" in loaded


def test_building_transforms_and_numpy_paths_do_not_load_numba():
    loaded = _loaded(
        "from flowtools.transforms import LinearTransform, LogicleTransform, estimate_logicle\n"
        "LinearTransform(10.0, 0.0).apply([1.0]); LogicleTransform(1e4, 0.5, 4.5, 0.0).inverse([0.5])\n"
        "estimate_logicle([-1.0, 5.0, 100.0])"
    )
    assert "numba" not in loaded
