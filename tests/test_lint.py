"""Lint is part of the tests: ``ruff check`` on the package, the tests, the benchmarks and the scripts.

CI runs only the README's test command, so this is where the ``[tool.ruff]`` rules of pyproject.toml
are enforced. ruff comes with the ``test`` extra; without it the test is skipped, not passed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("flowtools", "tests", "benchmarks", "scripts")


def test_ruff_check_is_clean():
    try:
        import ruff  # noqa: F401 - only whether it imports
    except ImportError:
        pytest.skip("ruff is not installed (it comes with the 'test' extra)")
    targets = [t for t in TARGETS if (ROOT / t).is_dir()]
    assert "flowtools" in targets and "tests" in targets, targets
    # --no-cache: CI runs in a fresh clone, and a stale cache must never hide a finding here.
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", *targets],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if proc.returncode == 0:
        return
    if proc.returncode == 1:
        pytest.fail(f"ruff check found problems:\n{proc.stdout}{proc.stderr}", pytrace=False)
    # 2: ruff itself failed (bad configuration, unreadable file): say so rather than report lint.
    pytest.fail(f"ruff check could not run (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}",
                pytrace=False)
