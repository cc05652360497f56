"""Unit tests of the FCS reader and writer on files built here."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
from _fcsbuild import basic_keywords, build_fcs
from _helpers import read_quiet

from flowtools.errors import FCSError, FCSWarning
from flowtools.io import Spillover, count_datasets, read_fcs, write_fcs

# ----------------------------------------------------------------------------------- writer


def test_write_read_round_trip_exact(tmp_path):
    rng = np.random.default_rng(1)
    events = (rng.standard_normal((2000, 6)) * 5000).astype(np.float32)
    spill = Spillover(("B", "C"), np.array([[1.0, 0.25], [0.031, 1.0]]))
    path = write_fcs(
        tmp_path / "rt.fcs",
        events,
        ["A", "B", "C", "D/E", "F", "Time"],
        markers=["", "CD3", "CD4/CD8", None, "HLA-DR", None],
        spillover=spill,
        keywords={"$CYT": "x//y", "MYKEY": "value with / slash"},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = read_fcs(path)
    assert s.version == "3.1"
    assert s.events.dtype == np.float32
    np.testing.assert_array_equal(s.events, events)
    assert s.pnn == ["A", "B", "C", "D/E", "F", "Time"]
    assert s.pns == ["", "CD3", "CD4/CD8", "", "HLA-DR", ""]
    assert s.spillover == spill
    assert s.keywords["$CYT"] == "x//y"
    assert s.keywords["MYKEY"] == "value with / slash"
    assert s.warnings == ()


def test_write_float64_is_rounded_to_float32(tmp_path):
    x = np.array([[0.1, 1e10, -3.5]])
    s = read_fcs(write_fcs(tmp_path / "f.fcs", x, ["a", "b", "c"]))
    np.testing.assert_array_equal(s.events, x.astype(np.float32))


def test_write_empty(tmp_path):
    s = read_fcs(write_fcs(tmp_path / "e.fcs", np.zeros((0, 3), np.float32), ["a", "b", "c"]))
    assert s.events.shape == (0, 3)
    assert s.warnings == ()


def test_write_ranges_default_and_given(tmp_path):
    x = np.array([[1.0, 500000.0]], dtype=np.float32)
    s = read_fcs(write_fcs(tmp_path / "r.fcs", x, ["a", "b"]))
    assert [c.pnr for c in s.channels] == [262144.0, 500000.0]
    s = read_fcs(write_fcs(tmp_path / "r2.fcs", x, ["a", "b"], ranges=[1024, 4096.5]))
    assert [c.pnr for c in s.channels] == [1024.0, 4096.5]


def test_write_is_atomic_and_idempotent(tmp_path):
    x = np.ones((10, 2), np.float32)
    p = tmp_path / "a.fcs"
    write_fcs(p, x, ["a", "b"])
    first = p.read_bytes()
    write_fcs(p, x, ["a", "b"])
    assert p.read_bytes() == first
    assert [f.name for f in tmp_path.iterdir()] == ["a.fcs"]  # no temp files left
    with pytest.raises(ValueError, match="empty"):
        write_fcs(p, x, ["a", "b"], keywords={"$COM": ""})
    assert p.read_bytes() == first  # a failed write leaves the old file


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": ["a"]}, "1 channel names for 2 columns"),
        ({"channels": ["a", "a"]}, "unique"),
        ({"channels": ["a", " "]}, "non-empty"),
        ({"channels": ["a", "b"], "markers": ["x"]}, "markers"),
        ({"channels": ["a", "b"], "keywords": {"$TOT": "5"}}, "written by write_fcs"),
        ({"channels": ["a", "b"], "keywords": {"$COM": "a\nb"}}, "control character"),
        ({"channels": ["a", "b"], "spillover": Spillover(("z",), np.eye(1))}, "not among the channels"),
        ({"channels": ["a", "b"], "spillover": Spillover(("a", "b"), np.eye(3))}, "shape"),
    ],
)
def test_write_refuses_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_fcs(tmp_path / "x.fcs", np.zeros((3, 2), np.float32), **kwargs)


# ----------------------------------------------------------------------------------- reader: layouts


def _ints(values, dtype):
    return np.asarray(values, dtype=dtype).tobytes()


@pytest.mark.parametrize(
    ("bits", "order", "dt"),
    [
        (8, "1,2,3,4", "u1"),
        (16, "1,2", "<u2"),
        (16, "2,1", ">u2"),
        (32, "4,3,2,1", ">u4"),
        (64, "1,2,3,4", "<u8"),
    ],
)
def test_uniform_integer_widths_and_byte_orders(bits, order, dt):
    vals = np.array([[1, 2, 3], [200, 100, 0]])
    kw = basic_keywords(3, 2, bits=bits, byteord=order, pnr=str(2**bits))
    s = read_fcs(build_fcs(kw, _ints(vals, dt)))
    np.testing.assert_array_equal(s.events, vals)
    assert s.events.dtype == np.float64


def test_integer_mask_to_next_power_of_two_of_pnr():
    kw = basic_keywords(2, 2, bits=16, pnr="1000")  # next power of 2 is 1024 -> mask 1023
    s = read_fcs(build_fcs(kw, _ints([[16912, 1023], [1024, 5]], "<u2")))
    np.testing.assert_array_equal(s.events, [[528, 1023], [0, 5]])


def test_mixed_widths_including_24_bit():
    kw = basic_keywords(3, 2, bits=16, pnr="16777216")
    kw["$P2B"] = "24"
    kw["$P3B"] = "32"
    kw["$BYTEORD"] = "4,3,2,1"
    rows = [(513, 70000, 4000000000), (7, 16777215, 1)]
    data = b"".join(a.to_bytes(2, "big") + b.to_bytes(3, "big") + c.to_bytes(4, "big") for a, b, c in rows)
    s = read_fcs(build_fcs(kw, data))
    np.testing.assert_array_equal(s.events, [[513, 70000, 4000000000 & (2**24 - 1)], [7, 16777215, 1]])


def test_fcs32_per_parameter_datatype():
    kw = basic_keywords(2, 3, datatype="F", bits=32)
    kw["$P2DATATYPE"] = "D"
    kw["$P2B"] = "64"
    rec = np.array([(1.5, 2.25), (-3.0, 1e300), (0.0, -0.5)], dtype=[("a", "<f4"), ("b", "<f8")])
    s = read_fcs(build_fcs(kw, rec.tobytes(), version="3.2"))
    np.testing.assert_array_equal(s.events, [[1.5, 2.25], [-3.0, 1e300], [0.0, -0.5]])


def test_double_big_endian():
    kw = basic_keywords(2, 2, datatype="D", bits=64, byteord="4,3,2,1")
    s = read_fcs(build_fcs(kw, np.array([[1.0, -2.0], [3.5, 1e-300]], ">f8").tobytes()))
    np.testing.assert_array_equal(s.events, [[1.0, -2.0], [3.5, 1e-300]])


def test_ascii_fixed_and_delimited():
    kw = basic_keywords(2, 2, datatype="A", bits=4)
    s = read_fcs(build_fcs(kw, b"0012  34 5670009"))
    np.testing.assert_array_equal(s.events, [[12, 34], [567, 9]])
    kw = basic_keywords(2, 3, datatype="A")
    for i in (1, 2):
        kw[f"$P{i}B"] = "*"
    s = read_fcs(build_fcs(kw, b"1,2\n3.5 4\r\n-5,6\n"))
    np.testing.assert_array_equal(s.events, [[1, 2], [3.5, 4], [-5, 6]])


def test_escaped_delimiter_and_latin1_text():
    kw = basic_keywords(1, 1, datatype="F", bits=32)
    kw["$P1S"] = "CD4/CD8 ratio"
    kw["NOTE"] = "caf\xe9"
    s = read_fcs(build_fcs(kw, np.float32([7]).tobytes()))
    assert s.pns == ["CD4/CD8 ratio"]
    assert s.keywords["NOTE"] == "café"


def test_other_delimiter():
    kw = basic_keywords(1, 1, datatype="F", bits=32)
    s = read_fcs(build_fcs(kw, np.float32([7]).tobytes(), delim=b"\x0c"))
    assert s.events.tolist() == [[7.0]]


def test_fcs20_header_offsets_only_and_no_tot():
    kw = basic_keywords(2, 3)
    del kw["$TOT"]
    s = read_fcs(build_fcs(kw, _ints([[1, 2], [3, 4], [5, 6]], "<u2"), version="2.0", text_offsets=False))
    assert s.n_events == 3
    np.testing.assert_array_equal(s.events, [[1, 2], [3, 4], [5, 6]])


def test_text_start_after_header_padding():
    kw = basic_keywords(1, 2, datatype="F", bits=32)
    s = read_fcs(build_fcs(kw, np.float32([1, 2]).tobytes(), text_start=256))
    assert s.events.ravel().tolist() == [1.0, 2.0]


def test_multiple_datasets_chain():
    two = build_fcs(basic_keywords(1, 1, datatype="F", bits=32), np.float32([9]).tobytes())
    # $NEXTDATA is relative to the data set's start; pad its value to a fixed width so it points past itself.
    first = build_fcs(
        basic_keywords(1, 2, datatype="F", bits=32) | {"$NEXTDATA": "000"}, np.float32([1, 2]).tobytes()
    )
    first = first.replace(b"$NEXTDATA/000/", f"$NEXTDATA/{len(first):03d}/".encode())
    blob = first + two
    assert count_datasets(blob) == 2
    assert read_fcs(blob).n_datasets == 2
    assert read_fcs(blob).events.ravel().tolist() == [1.0, 2.0]
    assert read_fcs(blob, dataset=1).events.tolist() == [[9.0]]


def test_nextdata_loop_cannot_hang():
    kw = basic_keywords(1, 1, datatype="F", bits=32) | {"$NEXTDATA": "-50"}
    blob = build_fcs(kw, np.float32([1]).tobytes())
    s = read_quiet(blob)
    assert s.n_datasets == 1
    assert any("NEXTDATA" in w for w in s.warnings)


def test_lazy_reads_events_on_access_and_detects_change(tmp_path, small_fcs):
    s = read_fcs(small_fcs, lazy=True)
    assert not s.is_loaded
    assert s.n_events == 500
    assert s.events.shape == (500, 5)
    s2 = read_fcs(small_fcs, lazy=True)
    data = small_fcs.read_bytes()
    time.sleep(0.01)
    small_fcs.write_bytes(data + b"\0")
    os.utime(small_fcs, None)
    with pytest.raises(FCSError, match="changed on disk"):
        _ = s2.events


def test_channel_index_and_safe_keywords(small_fcs):
    s = read_fcs(small_fcs)
    assert s.channel_index("PE-A") == 3
    assert s.channel_index("CD3") == 2
    with pytest.raises(KeyError, match="no channel 'CD99'"):
        s.channel_index("CD99")
    safe = s.safe_keywords()
    assert "$SRC" not in safe and "$OP" not in safe
    assert "$P3S" in safe and "$TOT" in safe
    assert "CANARY" not in repr(s)


def test_preprocess_gain_log_timestep():
    kw = basic_keywords(3, 2, bits=16, pnr="1024")
    kw["$P1G"] = "4"
    kw["$P2E"] = "4,0"
    kw["$P3N"] = "Time"
    kw["$P3G"] = "10"  # a gain on Time is ignored, as FlowIO does
    kw["$TIMESTEP"] = "0.5"
    s = read_fcs(build_fcs(kw, _ints([[8, 256, 10], [4, 512, 20]], "<u2")))
    out = s.as_array(preprocess=True)
    np.testing.assert_array_equal(out, [[2, 10.0, 5], [1, 100.0, 10]])


# ----------------------------------------------------------------------------------- reader: errors


def _expect_error(blob, match):
    with pytest.raises(FCSError, match=match):
        read_quiet(blob)


def test_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.fcs"
    p.write_bytes(b"hello")
    with pytest.raises(FCSError) as exc:
        read_fcs(p)
    assert exc.value.path == str(p)
    assert str(p) in str(exc.value) and "HEADER" in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_not_fcs_and_unsupported_version():
    _expect_error(b"X" * 100, "does not start with 'FCS'")
    blob = build_fcs(basic_keywords(1, 1, datatype="F", bits=32), np.float32([1]).tobytes(), version="9.9")
    _expect_error(blob, "unsupported FCS version")


def test_truncated_data():
    blob = build_fcs(basic_keywords(2, 1000), _ints(np.zeros((1000, 2)), "<u2"))
    _expect_error(blob[:-10], "truncated|past the end")


def test_lying_tot_does_not_allocate():
    kw = basic_keywords(2, 10**15)  # petabytes of events claimed
    blob = build_fcs(kw, _ints([[1, 2]], "<u2"))
    t = time.perf_counter()
    _expect_error(blob, "truncated|shorter")
    assert time.perf_counter() - t < 1.0


def test_impossible_par():
    kw = basic_keywords(1, 1, datatype="F", bits=32)
    kw["$PAR"] = "100000"
    _expect_error(build_fcs(kw, np.float32([1]).tobytes()), "PAR")


def test_unsupported_mode_type_order_and_width():
    base = basic_keywords(1, 1)
    _expect_error(build_fcs(base | {"$MODE": "C"}, b"\0\0"), "unsupported \\$MODE 'C'")
    _expect_error(build_fcs(base | {"$DATATYPE": "X"}, b"\0\0"), "unsupported data type")
    _expect_error(build_fcs(base | {"$BYTEORD": "3,4,1,2"}, b"\0\0"), "BYTEORD")
    _expect_error(build_fcs(base | {"$P1B": "12"}, b"\0\0"), "integer width")
    _expect_error(build_fcs(base | {"$DATATYPE": "F"}, b"\0\0"), "needs \\$PnB 32")


def test_text_past_end_of_file():
    blob = build_fcs(basic_keywords(1, 1), b"\0\0")
    _expect_error(blob[:70], "past the end")


def test_off_by_one_and_offset_disagreement_warn():
    data = _ints([[1, 2], [3, 4]], "<u2")
    kw = basic_keywords(2, 2)
    blob = build_fcs(kw, data, trailer=b"\0")
    # HEADER says one byte more than the data holds; TEXT is right.
    n = len(blob)
    begin = n - 1 - len(data)
    header = blob[:26] + f"{begin:>8}{begin + len(data):>8}".encode() + blob[42:]
    with pytest.warns(FCSWarning, match="DATA offsets disagree"):
        s = read_fcs(header)
    np.testing.assert_array_equal(s.events, [[1, 2], [3, 4]])


@pytest.mark.parametrize("kw", [{"$CYT": "/abc"}, {"$CYT": "abc/"}, {"/KEY": "v"}])
def test_write_refuses_values_that_start_or_end_with_the_delimiter(tmp_path, kw):
    with pytest.raises(ValueError, match="may not start or end"):
        write_fcs(tmp_path / "x.fcs", np.zeros((2, 1), np.float32), ["a"], keywords=kw)
    with pytest.raises(ValueError, match="may not start or end"):
        write_fcs(tmp_path / "y.fcs", np.zeros((2, 1), np.float32), ["a"], markers=["/CD4"])
