"""``analysis._population_kernels.middle_values`` against the gather + partition reference: bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference.tables_ref import middle_values_partition_ref

from flowtools.analysis import _population_kernels as _kernels
from flowtools.analysis._population_kernels import middle_values
from flowtools.pipeline import plate, tasks

ROOT = plate.__file__.rsplit("/flowtools/", 1)[0]
_NEG_NAN = np.uint64(0xFFF8000000000000).view(np.float64)  # a NaN with the sign bit set
_ODD_NAN = np.uint64(0x7FF0000000000123).view(np.float64)  # another payload


def _assert_same(columns: list[np.ndarray], masks: list[np.ndarray], **kw) -> None:
    want = middle_values_partition_ref(columns, masks)
    got = middle_values(columns, masks, **kw)
    for w, g in zip(want, got, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
        zero = w == 0
        np.testing.assert_array_equal(np.signbit(g[zero]), np.signbit(w[zero]))
        # NaN payloads too: the same bits, whatever numpy returned
        np.testing.assert_array_equal(g.view(np.uint64), w.view(np.uint64))


def _values(rng: np.random.Generator, kind: str, shape: tuple[int, int]) -> np.ndarray:
    if kind == "normal":
        v = rng.normal(size=shape) * 1000
    elif kind == "ties":
        v = rng.integers(-3, 4, size=shape).astype(float)
    elif kind == "zeros":  # mostly zeros of both signs: which one partition leaves matters
        v = rng.choice(np.array([-0.0, 0.0, -0.0, 0.0, 1.0, -1.0]), size=shape)
    else:  # "special": NaNs (several payloads), infinities, zeros, huge and tiny values
        pool = np.array([np.nan, _NEG_NAN, _ODD_NAN, np.inf, -np.inf, 0.0, -0.0, 5e-324, -5e-324,
                         1e308, -1e308, 1.0, -1.0, 2.5])
        v = np.where(rng.random(shape) < 0.5, rng.choice(pool, size=shape), rng.lognormal(size=shape))
    return v


def _nested_masks(rng: np.random.Generator, n: int, p: int) -> list[np.ndarray]:
    """A gating tree: each population a random subset (mostly large) of an earlier one."""
    masks = [np.ones(n, bool)]
    for i in range(1, p):
        parent = masks[rng.integers(0, i)]
        keep = rng.random() ** 0.3 if rng.random() < 0.9 else rng.random() * 0.05
        masks.append(parent & (rng.random(n) < keep))
    return masks


def _tree_masks(rng: np.random.Generator, n: int, p: int) -> list[np.ndarray]:
    """A gating tree as gates make it: each event lands in one node and belongs to its ancestors.

    Few membership patterns (at most one per node), as on real files, so the shared tables are used.
    """
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, p)]
    weights = rng.random(p + 1) ** 3  # node p: outside every population
    node = rng.choice(p + 1, size=n, p=weights / weights.sum())
    masks = [node == i for i in range(p)]
    for i in range(p - 1, 0, -1):  # children before parents: a parent gets its whole subtree
        masks[parent[i]] |= masks[i]
    return masks


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 300),
    m=st.integers(1, 4),
    p=st.integers(1, 80),
    kind=st.sampled_from(["normal", "ties", "zeros", "special"]),
    layout=st.sampled_from(["random", "nested", "tree"]),
    all_nan=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_partition_on_generated_inputs(n, m, p, kind, layout, all_nan, seed):
    rng = np.random.default_rng(seed)
    values = _values(rng, kind, (m, n))
    if all_nan:
        values[0] = np.nan
    if layout == "nested":
        masks = _nested_masks(rng, n, p)
    elif layout == "tree":
        masks = _tree_masks(rng, n, p)
    else:
        masks = [rng.random(n) < rng.random() for _ in range(p)]
    if n and p > 2:
        masks[1][:] = False  # empty
        masks[2][:] = False
        masks[2][rng.integers(0, n)] = True  # single member
    _assert_same(list(values), masks)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 200), p=st.integers(1, 20), kind=st.sampled_from(["normal", "ties", "special"]),
       limit=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_too_many_patterns_falls_back(n, p, kind, limit, seed):
    rng = np.random.default_rng(seed)
    values = _values(rng, kind, (2, n))
    masks = [rng.random(n) < 0.5 for _ in range(p)]
    _assert_same(list(values), masks, max_patterns=limit)


@pytest.mark.parametrize("layout", ["nested", "tree"])
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "special", "clipped"])
def test_large_files(kind, layout):
    """100k events and ~30 populations, as on a plate; both zeros, NaN, ties and point masses included."""
    rng = np.random.default_rng(len(kind))
    n = 100_000
    if kind == "clipped":  # a third of the events at one value (a saturated channel)
        values = np.where(rng.random((3, n)) < 0.35, 262143.0, rng.lognormal(11, 1, size=(3, n)))
    else:
        values = _values(rng, kind, (3, n))
    values = np.vstack([values, rng.lognormal(5, 2, size=(1, n)) - 50])
    masks = _nested_masks(rng, n, 31) if layout == "nested" else _tree_masks(rng, n, 31)
    _assert_same(list(values), masks)


def test_inputs_converted_like_the_original():
    rng = np.random.default_rng(5)
    cols = [rng.normal(size=1000).astype(np.float32), np.arange(1000)[::-1], rng.normal(size=2000)[::2]]
    masks = [rng.random(1000) < 0.7, (rng.random(1000) < 0.3).astype(np.uint8)]
    _assert_same(cols, masks)


def test_no_columns_or_no_populations():
    lo, hi = middle_values([], [np.ones(3, bool)])
    assert lo.shape == hi.shape == (0, 1)
    lo, hi = middle_values([np.arange(3.0)], [])
    assert lo.shape == hi.shape == (1, 0)


@pytest.fixture(scope="module")
def plate_inputs(tmp_path_factory) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    """The (columns, masks) the plate workers pass to ``middle_values`` on synthetic files, one per tube."""
    from flowtools.gating.templates import load_template
    from flowtools.io.sample_sheet import read_sample_sheet
    from flowtools.synth import make_cohort

    res = make_cohort(tmp_path_factory.mktemp("mv") / "c", n_women=1, events=100_000, seed=3)
    templates = [load_template(f"{ROOT}/gating_templates/{t}.yaml") for t in ("rm_tbnk_nk", "rm_treg_th")]
    by_tube = {t.tube: t for t in templates}
    rows = list(read_sample_sheet(res.samples_csv, tubes=sorted(by_tube)))
    captured = []
    original = _kernels.middle_values

    def capture(columns, masks):
        captured.append(([np.array(c, dtype=np.float64) for c in columns], [np.array(m) for m in masks]))
        return original(columns, masks)

    mp = pytest.MonkeyPatch()
    mp.setattr(_kernels, "middle_values", capture)
    try:
        for r in rows:
            t = by_tube[r.tube]
            task = {"row": plate._row_dict(r), "template": t.source, "template_sha": t.sha256, "pinned": {},
                    "seed": 0}
            out = tasks.gate_task(task)
            assert out.ok, out.error
    finally:
        mp.undo()
    assert len(captured) == len(rows) >= 2
    return captured


def test_matches_on_plate_files(plate_inputs):
    for columns, masks in plate_inputs:
        assert len(columns) >= 5 and len(masks) >= 10
        _assert_same(columns, masks)


def test_matches_on_plate_files_with_zeros_and_nans(plate_inputs):
    """The same files with values rounded (ties, both zeros) and a few NaNs planted."""
    rng = np.random.default_rng(11)
    columns, masks = plate_inputs[0]
    edited = []
    for c in columns:
        c = np.round(c / 200) * 200.0  # lots of ties and of zeros
        c[c == 0] = np.where(rng.random(int((c == 0).sum())) < 0.5, -0.0, 0.0)
        c[rng.random(c.size) < 1e-3] = np.nan
        edited.append(c)
    _assert_same(edited, masks)
