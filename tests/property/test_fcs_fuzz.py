"""Fuzz the FCS reader with mutated real files: only FCSError may come out, and fast.

Seeds are the small real files under ../shared/data (when present) and files
built here, so the test also runs without the shared data.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from functools import cache

import numpy as np
import pytest
from _fcsbuild import basic_keywords, build_fcs
from _helpers import SHARED_DATA, manifest_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowtools.errors import FCSError
from flowtools.io import read_fcs

SEED_LIMIT = 1_000_000  # bytes: keep every case fast


@cache
def seeds() -> tuple[bytes, ...]:
    out = [
        build_fcs(basic_keywords(3, 50), np.arange(150, dtype="<u2").tobytes()),
        build_fcs(
            basic_keywords(2, 20, datatype="F", bits=32) | {"$SPILLOVER": "2,CH1,CH2,1,0.1,0.2,1"},
            np.ones(40, "<f4").tobytes(),
        ),
    ]
    for row in manifest_rows("fcs"):
        path = SHARED_DATA / row["path"]
        if int(row["bytes"]) <= SEED_LIMIT and "corrupted" not in row["path"]:
            out.append(path.read_bytes())
    return tuple(out)


def check(blob: bytes) -> None:
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = read_fcs(blob)
        except FCSError:
            return
        ev = s.events
        assert ev.shape == (s.n_events, s.n_channels)
        s.as_array(preprocess=True)
    assert time.perf_counter() - t < 2.0


seed_index = st.integers(min_value=0, max_value=10_000)
# FLOWTOOLS_FUZZ_EXAMPLES raises the count for a long local run (CI uses the default).
FUZZ = settings(
    max_examples=int(os.environ.get("FLOWTOOLS_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(seed_index, st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8))
def test_byte_flips_in_header_and_text(i, flips):
    blob = bytearray(seeds()[i % len(seeds())])
    for pos, val in flips:
        if pos < len(blob):
            blob[pos] = val
    check(bytes(blob))


@FUZZ
@given(seed_index, st.floats(0, 1))
def test_truncation(i, frac):
    blob = seeds()[i % len(seeds())]
    check(blob[: int(len(blob) * frac)])


@FUZZ
@given(seed_index, st.integers(0, 5), st.text("0123456789 -", min_size=0, max_size=8))
def test_header_offset_fields(i, field, value):
    blob = bytearray(seeds()[i % len(seeds())])
    lo = 10 + 8 * field
    blob[lo : lo + 8] = value.rjust(8).encode()
    check(bytes(blob))


KEYS = [
    "$TOT",
    "$PAR",
    "$BEGINDATA",
    "$ENDDATA",
    "$NEXTDATA",
    "$DATATYPE",
    "$BYTEORD",
    "$MODE",
    "$P1B",
    "$P1R",
    "$P1E",
    "$P2B",
    "$SPILLOVER",
    "SPILL",
    "$BEGINSTEXT",
    "$ENDSTEXT",
    "$TIMESTEP",
    "$P1G",
]


@FUZZ
@given(
    seed_index,
    st.sampled_from(KEYS),
    st.one_of(
        st.integers(-(10**12), 10**18).map(str),
        st.sampled_from(
            [
                "0",
                "-1",
                "*",
                "",
                "nan",
                "inf",
                "1e400",
                "I",
                "F",
                "D",
                "A",
                "C",
                "4,3,2,1",
                "2,1",
                "3,4,1,2",
                "4,0",
                "0,nan",
                "99999999,a,b",
                "3,a,b,c,1,2",
            ]
        ),
        st.text(max_size=12),
    ),
)
def test_structural_keyword_values(i, key, value):
    blob = seeds()[i % len(seeds())]
    delim = blob[int(blob[10:18]) : int(blob[10:18]) + 1] if blob[10:18].strip().isdigit() else b"/"
    pattern = re.escape(key.encode()) + re.escape(delim) + b"[^" + re.escape(delim) + b"]*"
    new = key.encode() + delim + value.encode("utf-8", "replace").replace(delim, b"")
    mutated = re.sub(pattern, lambda _m: new, blob, count=1, flags=re.IGNORECASE)
    check(mutated)


@pytest.mark.parametrize("size", [0, 1, 57, 58, 59, 200])
def test_tiny_inputs(size):
    with pytest.raises(FCSError):
        read_fcs(b"FCS3.1" + b" " * max(size - 6, 0) if size >= 6 else b"FCS"[:size])
