"""Test helpers: where the conformance data live, quiet reads."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FLOWTOOLS_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data_or_skip() -> Path:
    if not (SHARED_DATA / "MANIFEST.tsv").is_file():
        pytest.skip(f"shared conformance data not found at {SHARED_DATA}")
    return SHARED_DATA


def manifest_rows(kind: str | None = None) -> list[dict[str, str]]:
    """MANIFEST.tsv rows (empty list when the shared data are absent)."""
    path = SHARED_DATA / "MANIFEST.tsv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r for r in rows if kind is None or r["kind"] == kind]


def read_quiet(path, **kw):
    """read_fcs with its repair warnings silenced (tests that check them use pytest.warns)."""
    from flowtools.io import read_fcs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_fcs(path, **kw)
