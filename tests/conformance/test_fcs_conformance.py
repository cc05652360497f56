"""Every FCS file under ../shared/data is read with events equal to FlowIO's and the stored truth, or refused.

One case per file in MANIFEST.tsv. FlowIO is run with its lenient switches
(``ignore_offset_error``, ``ignore_offset_discrepancy``) where it needs them, so
that it reads the same bytes; raw events must be identical. FlowIO's
preprocessed events are compared within a few ulp: FlowIO uses numpy's vectorised
pow, which differs by an ulp between numpy versions, whereas flowtools decodes
log channels with libm's scalar pow and matches FlowIO's stored truth exactly
(checked below).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import manifest_rows, read_quiet, shared_data_or_skip

from flowtools.errors import FCSError, FCSWarning
from flowtools.io import count_datasets, read_fcs

FCS_ROWS = manifest_rows("fcs")
REFUSED = {"fcs/instruments/corrupted/corrupted.fcs"}

pytestmark = pytest.mark.conformance


def _flowio_datasets(path):
    import flowio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return [flowio.FlowData(str(path), ignore_offset_error=True, ignore_offset_discrepancy=True)]
        except flowio.exceptions.MultipleDataSetsError:
            return flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)
        except ValueError:
            return None  # FlowIO cannot read it at all (blank HEADER offsets)


@pytest.mark.parametrize("row", FCS_ROWS, ids=[r["path"] for r in FCS_ROWS] or None)
def test_fcs_file_read_or_refused(row):
    data = shared_data_or_skip()
    path = data / row["path"]
    if row["path"] in REFUSED:
        with pytest.raises(FCSError) as exc:
            read_fcs(path)
        assert str(path) in str(exc.value)
        return
    sample = read_quiet(path)
    assert sample.n_events == int(row["n_events"])
    assert sample.n_channels == int(row["n_params"])
    assert sample.version == row["fcs_version"].removeprefix("FCS")
    assert sample.data_type == row["datatype"]
    assert (sample.spillover is not None) == (row["has_spill"] == "yes") or "malformed" in row["notes"]
    assert sample.events.shape == (sample.n_events, sample.n_channels)
    assert sample.events.flags.c_contiguous

    reference = _flowio_datasets(path)
    if reference is None:
        return  # compared against its twin file in test_blank_header_offsets_use_text
    assert len(reference) == sample.n_datasets
    for k, fd in enumerate(reference):
        ours = sample if k == 0 else read_quiet(path, dataset=k)
        np.testing.assert_array_equal(ours.as_array(), fd.as_array(preprocess=False))
        assert ours.pnn == list(fd.pnn_labels)
        try:
            theirs = fd.as_array(preprocess=True)
        except ValueError:
            continue  # FlowIO refuses a non-numeric $TIMESTEP ('variable_int' files)
        np.testing.assert_array_max_ulp(ours.as_array(preprocess=True), theirs, maxulp=4)


def test_lazy_read_matches_eager():
    data = shared_data_or_skip()
    rows = [row for row in FCS_ROWS if row["path"] not in REFUSED]
    assert rows, "MANIFEST.tsv lists no readable FCS file"
    for row in rows:
        eager = read_quiet(data / row["path"])
        lazy = read_quiet(data / row["path"], lazy=True)
        assert not lazy.is_loaded
        assert lazy.keywords == eager.keywords
        np.testing.assert_array_equal(lazy.events, eager.events)


TRUTH = [
    ("gatingml2/data1.fcs", "fcs/flowio/truth/data1_original_events.npy", False),
    ("gatingml2/data1.fcs", "fcs/flowio/truth/data1_preprocessed.npy", True),
    (
        "fcs/flowio/fcs_files/B01 KC-A-W---91-US.fcs",
        "fcs/flowio/truth/B01 KC-A-W---91-US_preprocessed_events.npy",
        True,
    ),
]


@pytest.mark.parametrize(("fcs", "truth", "preprocess"), TRUTH, ids=[t[1].split("/")[-1] for t in TRUTH])
def test_truth_arrays_exact(fcs, truth, preprocess):
    data = shared_data_or_skip()
    expected = np.load(data / truth)
    np.testing.assert_array_equal(read_quiet(data / fcs).as_array(preprocess=preprocess), expected)


def test_headerless_float64_dump_of_test_comp_example():
    data = shared_data_or_skip()
    raw = np.fromfile(data / "compensation/test_comp_example.npy", dtype=np.float64).reshape(-1, 18)
    np.testing.assert_array_equal(read_quiet(data / "compensation/test_comp_example.fcs").as_array(), raw)


def test_variable_width_integers_masked_to_pnr():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/flowio/fcs_files/variable_int_example.fcs")
    assert s.events.shape == (2, 26)
    assert s.events[0, 25] == 8265081  # raw 142482809 masked to the next power of 2 above $P26R


def test_bitmask_pnr_1024():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/instruments/fake_bitmask_error/fcs1_cleaned.lmd")
    assert set(np.unique(s.events[:, 0]).tolist()) <= {528.0} or np.all(s.events < 1024)
    assert np.all(s.events == 528)


def test_multiple_datasets_coulter():
    data = shared_data_or_skip()
    path = data / "fcs/flowkit/coulter.lmd"
    assert count_datasets(path) == 2
    first = read_quiet(path)
    second = read_quiet(path, dataset=1)
    assert (first.version, second.version) == ("2.0", "3.0")
    assert first.n_events == second.n_events == 18110
    expected = [
        61056,
        131840,
        46,
        324,
        10309,
        104,
        11912,
        0,
        257280,
        378656,
        139,
        1728,
        58688,
        354,
        58720,
        0,
        164128,
        305376,
        159,
        924,
        29024,
        208,
        29728,
        0,
    ]
    assert second.events.ravel()[:24].tolist() == expected
    with pytest.raises(FCSError, match="holds 2"):
        read_fcs(path, dataset=2)


@pytest.mark.parametrize(
    "name", ["data_start_offset_discrepancy_example.fcs", "data_stop_offset_discrepancy_example.fcs"]
)
def test_offset_discrepancy_rule(name):
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/flowkit" / name)
    assert any("DATA offsets disagree" in w and "TEXT used" in w for w in s.warnings)
    ref = read_quiet(data / "fcs/flowio/fcs_files/variable_int_example.fcs")
    np.testing.assert_array_equal(s.events, ref.events)


def test_off_by_one_data_span_warns():
    data = shared_data_or_skip()
    with pytest.warns(FCSWarning, match="one byte past"):
        read_fcs(data / "compensation/test_comp_example.fcs")


def test_blank_header_offsets_use_text():
    data = shared_data_or_skip()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # blank HEADER offsets are legal: no warning
        big = read_fcs(data / "fcs/instruments/fake_large_fcs/fake_large_fcs.fcs")
    twin = read_fcs(data / "fcs/instruments/Fortessa/FCS_3.0_Fortessa_PBS_Specimen_001_A1_A01.fcs")
    np.testing.assert_array_equal(big.events, twin.events)


def test_duplicate_keyword_keeps_first_and_warns():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/instruments/MiltenyiBiotec/FCS3.1/SG_2014-09-26_Duplicate_Names.fcs")
    assert any("$VOL" in w for w in s.warnings)
    assert s.pnn == list(dict.fromkeys(s.pnn))  # $PnN stay unique


def test_malformed_spillover_is_ignored_with_warning():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/instruments/MiltenyiBiotec/FCS3.1/EY_2013-07-19_PBS_FCS_3.1_Well_A1.001.fcs")
    assert any("malformed" in w for w in s.warnings)
    assert s.spillover is None


def test_supplemental_text_merged():
    data = shared_data_or_skip()
    s = read_quiet(
        data / "fcs/instruments/MiltenyiBiotec/FCS3.1/EY_2013-07-19_PBS_FCS_3.1_Custom_Add_Well_A1.001.fcs"
    )
    assert any(k.startswith("@MB_") for k in s.keywords)


def test_form_feed_delimiter_and_spill():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/instruments/FACS_Diva/facs_diva_test.fcs")
    assert s.spillover is not None and s.spillover.matrix.shape == (8, 8)
    assert set(s.spillover.detectors) <= set(s.pnn)


def test_non_utf8_text_decoded():
    data = shared_data_or_skip()
    s = read_quiet(data / "fcs/flowio/fcs_files/3FITC_4PE_004.fcs")
    assert s.n_events == 94569
    assert all(isinstance(v, str) for v in s.keywords.values())


def test_byte_identical_files_read_identically():
    data = shared_data_or_skip()
    a = read_quiet(data / "plates/Plate01/CFP_Well_A4.fcs")
    b = read_quiet(data / "fcs/instruments/MiltenyiBiotec/FCS3.0/FCS3.0_Custom_Compatible.fcs")
    np.testing.assert_array_equal(a.events, b.events)


@pytest.mark.parametrize("row", [r for r in FCS_ROWS if r["path"] not in REFUSED],
                         ids=[r["path"] for r in FCS_ROWS if r["path"] not in REFUSED] or None)
def test_scaled_events_equal_the_preprocessed_array(row):
    """The no-copy view plus scaled columns is bit-identical to as_array(preprocess=True), on every file."""
    data = shared_data_or_skip()
    sample = read_quiet(data / row["path"])
    full = sample.as_array(preprocess=True)
    events, columns = sample.scaled_events()
    assert not events.flags.writeable
    assert set(columns) in ({sample.channels[i].pnn for i in sample.scaled_channels()}, set())
    for j, name in enumerate(sample.pnn):
        got = columns[name] if name in columns else np.asarray(events[:, j], dtype=np.float64)
        np.testing.assert_array_equal(got, full[:, j])
    # A channel that must stay raw for compensation forces the full scaled copy.
    if sample.scaled_channels():
        events, columns = sample.scaled_events(keep_raw=sample.pnn)
        assert columns == {} and np.array_equal(events, full, equal_nan=True)
