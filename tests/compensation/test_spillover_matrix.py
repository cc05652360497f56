"""Spillover matrices: sources, channel matching, compensation, unmixing, against FlowKit/flowutils."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
from _helpers import read_quiet, shared_data_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from flowtools.compensation import SpilloverMatrix, compensate
from flowtools.errors import CompensationError
from flowtools.io import Spillover, read_fcs, write_fcs

S2 = np.array([[1.0, 0.2], [0.05, 1.0]])


def test_apply_inverts_mixing_and_leaves_other_columns():
    rng = np.random.default_rng(0)
    true = rng.normal(1000, 300, size=(1000, 2))
    other = rng.normal(size=(1000, 1))
    observed = np.concatenate([other, true @ S2], axis=1).astype(np.float32)
    m = SpilloverMatrix.from_array(S2, ["FITC-A", "PE-A"])
    out = m.apply(observed, ["FSC-A", "FITC-A", "PE-A"])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out[:, 0], observed[:, 0])
    np.testing.assert_allclose(out[:, 1:], observed[:, 1:].astype(np.float64) @ np.linalg.inv(S2), rtol=1e-12)
    np.testing.assert_allclose(m.inverse_apply(out, ["FSC-A", "FITC-A", "PE-A"]), observed, rtol=1e-5)


def test_column_order_follows_matrix_not_sample():
    m = SpilloverMatrix.from_array(S2, ["FITC-A", "PE-A"])
    x = np.array([[10.0, 100.0]])  # sample order PE-A, FITC-A
    out = m.apply(x, ["PE-A", "FITC-A"])
    expected = np.array([[100.0, 10.0]]) @ np.linalg.inv(S2)
    np.testing.assert_allclose(out, expected[:, ::-1])


def test_missing_channel_is_named():
    m = SpilloverMatrix.from_array(S2, ["FITC-A", "PE-A"])
    with pytest.raises(CompensationError, match=r"\['PE-A'\] not among the sample's channels"):
        m.apply(np.zeros((2, 2)), ["FSC-A", "FITC-A"])


@pytest.mark.parametrize(
    ("matrix", "dets", "match"),
    [
        (np.ones((2, 2)), ["a", "b"], "singular"),
        (np.eye(3), ["a", "b"], "shape"),
        (np.eye(2), ["a", "a"], "repeat"),
        (np.array([[1.0, np.nan], [0, 1]]), ["a", "b"], "NaN"),
    ],
)
def test_bad_matrices(matrix, dets, match):
    with pytest.raises(CompensationError, match=match):
        SpilloverMatrix.from_array(matrix, dets)
    assert issubclass(CompensationError, ValueError)


def test_from_fcs_keyword_and_missing(tmp_path):
    p = tmp_path / "s.fcs"
    write_fcs(
        p,
        np.ones((3, 3), np.float32),
        ["FSC-A", "FITC-A", "PE-A"],
        spillover=Spillover(("FITC-A", "PE-A"), S2),
    )
    s = read_fcs(p)
    m = SpilloverMatrix.from_fcs(s)
    assert m.detectors == ("FITC-A", "PE-A")
    np.testing.assert_array_equal(m.matrix, S2)
    np.testing.assert_allclose(compensate(s), m.apply(s.events, s.pnn))
    q = tmp_path / "n.fcs"
    write_fcs(q, np.ones((3, 2), np.float32), ["a", "b"])
    with pytest.raises(CompensationError, match="n.fcs: no spillover keyword"):
        SpilloverMatrix.from_fcs(read_fcs(q))


def test_from_keyword_string():
    m = SpilloverMatrix.from_keyword("2,FL1-A,FL2-A,1,0.2,0.05,1")
    np.testing.assert_array_equal(m.matrix, S2)
    with pytest.raises(CompensationError, match="needs 2 names and 4 values"):
        SpilloverMatrix.from_keyword("2,FL1-A,FL2-A,1,0.2")


@pytest.mark.parametrize(
    "text",
    [
        "FITC-A,PE-A\n1,0.2\n0.05,1\n",  # FlowKit layout
        "# FITC-A,PE-A\n1,0.2\n0.05,1\n",  # den_comp layout
        "FITC-A\tPE-A\n1\t0.2\n0.05\t1\n",  # TSV
        ",FITC-A,PE-A\nFITC-A,1,0.2\nPE-A,0.05,1\n",  # FlowJo layout with row labels
        "\ufeffFITC-A;PE-A\n1;0.2\n0.05;1\n\n",  # BOM, semicolons, trailing blank line
    ],
)
def test_csv_layouts(tmp_path, text):
    p = tmp_path / "m.csv"
    p.write_text(text, encoding="utf-8")
    m = SpilloverMatrix.from_csv(p)
    assert m.detectors == ("FITC-A", "PE-A")
    np.testing.assert_array_equal(m.matrix, S2)


def test_csv_without_header_needs_detectors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("1,0.2\n0.05,1\n")
    with pytest.raises(CompensationError, match="pass detectors="):
        SpilloverMatrix.from_csv(p)
    assert SpilloverMatrix.from_csv(p, detectors=["a", "b"]).detectors == ("a", "b")


def test_csv_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("a,b\n1,0.2\n0.05,x\n")
    with pytest.raises(CompensationError, match=r"bad.csv, line 3"):
        SpilloverMatrix.from_csv(p)
    p.write_text("a,b\n1,0.2,3\n0.05,1\n")
    with pytest.raises(CompensationError, match="rows of"):
        SpilloverMatrix.from_csv(p)


def test_csv_round_trip(tmp_path):
    m = SpilloverMatrix.from_array(S2, ["FITC-A", "PE-A"])
    p = tmp_path / "m.csv"
    p.write_text(m.to_csv_text())
    assert SpilloverMatrix.from_csv(p) == m
    spec = SpilloverMatrix.from_array([[1, 0.3, 0.1], [0.2, 1, 0.4]], ["d1", "d2", "d3"], ["F1", "F2"])
    p.write_text(spec.to_csv_text())
    assert SpilloverMatrix.from_csv(p) == spec


def test_spectral_unmixing_least_squares():
    rng = np.random.default_rng(1)
    s = rng.uniform(0, 0.5, size=(3, 6)) + np.eye(3, 6)
    m = SpilloverMatrix.from_array(s, [f"d{i}" for i in range(6)], ["A", "B", "C"])
    assert m.is_spectral
    true = rng.normal(500, 100, size=(200, 3))
    observed = np.concatenate([np.full((200, 1), 7.0), true @ s], axis=1)
    out, names = m.unmix(observed, ["Time", *m.detectors])
    assert names == ["Time", "A", "B", "C"]
    np.testing.assert_allclose(out[:, 1:], true, rtol=1e-9)
    np.testing.assert_array_equal(out[:, 0], 7.0)
    with pytest.raises(CompensationError, match="use unmix"):
        m.apply(observed, ["Time", *m.detectors])


def test_square_unmix_equals_apply():
    m = SpilloverMatrix.from_array(S2, ["FITC-A", "PE-A"])
    x = np.array([[3.0, 10.0, 100.0]])
    out, names = m.unmix(x, ["FSC-A", "FITC-A", "PE-A"])
    assert names == ["FSC-A", "FITC-A", "PE-A"]
    np.testing.assert_allclose(out, m.apply(x, ["FSC-A", "FITC-A", "PE-A"]))


@settings(max_examples=100, deadline=None)
@given(
    st.integers(2, 8).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, n), elements=st.floats(0, 0.3)),
            arrays(np.float64, (20, n), elements=st.floats(-1e5, 1e6)),
        )
    )
)
def test_apply_then_inverse_round_trips(args):
    off, x = args
    n = off.shape[0]
    s = off.copy()
    np.fill_diagonal(s, 1.0)  # diagonally dominant-ish, as real spillover
    m = SpilloverMatrix.from_array(s, [f"c{i}" for i in range(n)])
    names = [f"c{i}" for i in range(n)]
    back = m.inverse_apply(m.apply(x, names), names)
    np.testing.assert_allclose(back, x, rtol=1e-7, atol=1e-3)


# ----------------------------------------------------------------------------------- conformance


@pytest.mark.conformance
def test_test_comp_example_equals_flowkit():
    data = shared_data_or_skip()
    fk = pytest.importorskip("flowkit")
    fcs = data / "compensation/test_comp_example.fcs"
    csv_path = data / "compensation/comp_complete_example.csv"
    s = read_quiet(fcs)
    m = SpilloverMatrix.from_csv(csv_path)
    ours = m.apply(s.as_array(preprocess=True), s.pnn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FlowKit leaves the FCS file handle open (ResourceWarning)
        sample = fk.Sample(str(fcs), ignore_offset_error=True)
        sample.apply_compensation(str(csv_path))
        theirs = sample.get_events(source="comp")
        del sample
        gc.collect()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-9)


@pytest.mark.conformance
def test_test_comp_example_equals_flowutils_solve():
    """Same check against flowutils' compensate (what FlowKit calls), which needs no FlowKit install."""
    data = shared_data_or_skip()
    from flowutils.compensate import compensate as fu_compensate

    s = read_quiet(data / "compensation/test_comp_example.fcs")
    m = SpilloverMatrix.from_csv(data / "compensation/comp_complete_example.csv")
    raw = s.as_array(preprocess=True)
    idx = m.channel_indices(s.pnn)
    np.testing.assert_allclose(
        m.apply(raw, s.pnn), fu_compensate(raw, m.matrix, list(idx)), rtol=1e-12, atol=1e-9
    )
    # The file's own SPILL keyword is an identity: compensating with it changes nothing.
    own = SpilloverMatrix.from_fcs(s)
    np.testing.assert_array_equal(own.matrix, np.eye(14))
    np.testing.assert_array_equal(own.apply(raw, s.pnn), raw)


@pytest.mark.conformance
def test_flowjo_den_comp_csv_and_null_channel():
    data = shared_data_or_skip()
    full = SpilloverMatrix.from_csv(data / "flowjo/8_color_data_set/den_comp.csv")
    null = SpilloverMatrix.from_csv(data / "flowjo/8_color_data_set/den_comp_null_channel.csv")
    assert full.matrix.shape == (8, 8) and null.matrix.shape == (7, 7)
    assert "TNFa FITC FLR-A" in full.detectors and "TNFa FITC FLR-A" not in null.detectors
    keep = [full.detectors.index(d) for d in null.detectors]
    np.testing.assert_array_equal(full.matrix[np.ix_(keep, keep)], null.matrix)


@pytest.mark.conformance
def test_spectral_matrix_from_flowkit_data():
    data = shared_data_or_skip()
    s = np.load(data / "compensation/spectral_comp_matrix.npy")
    m = SpilloverMatrix.from_array(s, [f"D{i}" for i in range(48)], [f"F{i}" for i in range(33)])
    assert m.is_spectral and m.unmixing.shape == (48, 33)
    np.testing.assert_allclose(m.matrix @ m.unmixing, np.eye(33), atol=1e-8)


@pytest.mark.conformance
def test_fcs_spillover_keywords_of_shared_files_build():
    data = shared_data_or_skip()
    from _helpers import manifest_rows

    built = 0
    for row in manifest_rows("fcs"):
        if row["has_spill"] != "yes" or "corrupted" in row["path"]:
            continue
        s = read_quiet(data / row["path"])
        if s.spillover is None or not set(s.spillover.detectors) <= set(s.pnn):
            continue  # malformed keyword, or names not in $PnN (reported by the reader)
        m = SpilloverMatrix.from_fcs(s)
        out = m.apply(s.events, s.pnn)
        assert out.shape == s.events.shape and np.all(np.isfinite(out))
        built += 1
    assert built >= 5
