"""processing_state: files exported after compensation or transformation are recognised, others are not.

The files are built with tests/_fcsbuild.py and carry the keywords and parameter names the tools write
(see the module docstring of flowtools.io.processing for where each comes from). The shared data
(instrument files, Gating-ML, CytoNorm, FlowKit, plates) must not be flagged.
"""

from __future__ import annotations

import numpy as np
import pytest
from _fcsbuild import basic_keywords, build_fcs
from _helpers import SHARED_DATA, manifest_rows, read_quiet, shared_data_or_skip

from flowtools.io import read_fcs
from flowtools.io.processing import TRANSFORMED_SCALE_MAX, ProcessingState, processing_state

RNG = np.random.default_rng(17)


def _sample(names, data, extra=None, *, pnr="262144", datatype="F", ranges=None):
    """An FCS sample with these $PnN, events and extra keywords (float32 unless ``datatype`` is I)."""
    data = np.asarray(data)
    bits = 32 if datatype == "F" else 16
    kw = basic_keywords(len(names), data.shape[0], datatype=datatype, bits=bits, pnr=pnr)
    for i, name in enumerate(names, start=1):
        kw[f"$P{i}N"] = name
        if ranges is not None:
            kw[f"$P{i}R"] = str(ranges[i - 1])
    kw.update(extra or {})
    raw = data.astype("<f4" if datatype == "F" else "<u2").tobytes()
    return read_fcs(build_fcs(kw, raw))


def _raw(n=200, k=4):
    """Raw-looking intensities on a 262144 scale."""
    return RNG.uniform(-200, 200_000, size=(n, k))


def _state(s, *, events=True) -> ProcessingState:
    return processing_state(s.keywords, s.channels, events=s.events if events else None)


# ------------------------------------------------------------------------------------ compensated


@pytest.mark.parametrize("prefix", ["Comp-", "FJComp-", "comp-", "COMP-"])
def test_compensated_parameter_names_flag_compensation(prefix: str) -> None:
    # FlowJo exports keep raw and compensated parameters side by side (FITC-A and Comp-FITC-A)
    names = ["FSC-A", "SSC-A", "FITC-A", f"{prefix}FITC-A", f"{prefix}PE-A"]
    st = _state(_sample(names, _raw(k=5)))
    assert st.compensated == f"$P4N='{prefix}FITC-A' and 1 more (FlowJo's compensated-parameter prefix)"
    assert st.transformed is None
    assert st.flagged
    assert st.describe().startswith("looks already compensated: $P4N=")


@pytest.mark.parametrize("name", ["Compass-A", "Comp FITC-A", "CompA", "FITC-A Comp-", "FSC-A"])
def test_names_that_only_resemble_the_prefix_do_not_flag(name: str) -> None:
    st = _state(_sample(["SSC-A", name], _raw(k=2)))
    assert st == ProcessingState()
    assert not st.flagged and st.describe() == ""


def test_diva_apply_compensation_is_not_evidence() -> None:
    # BD FACSDiva writes APPLY COMPENSATION=TRUE on raw events, with the matrix in SPILL
    extra = {"APPLY COMPENSATION": "TRUE", "SPILL": "2,FITC-A,PE-A,1,0.1,0.02,1", "CREATOR": "BD FACSDiva"}
    st = _state(_sample(["FSC-A", "SSC-A", "FITC-A", "PE-A"], _raw(), extra))
    assert not st.flagged
    assert st.hints == ("APPLY COMPENSATION=TRUE: an acquisition display setting; the events stay raw",)


def test_hints_never_echo_free_text() -> None:
    extra = {"APPLY COMPENSATION": "CANARY-PII operator note", "FJ_COMPMATRIXNAME": "CANARY-PII matrix"}
    st = _state(_sample(["FSC-A", "FITC-A"], _raw(k=2), extra))
    assert not st.flagged and len(st.hints) == 2
    assert not any("CANARY" in h for h in st.hints)


def test_flowjo_matrix_name_alone_is_a_hint() -> None:
    st = _state(_sample(["FSC-A", "FITC-A"], _raw(k=2), {"FJ_COMPMATRIXNAME": "Acquisition-defined"}))
    assert not st.flagged
    assert any("FJ_COMPMATRIXNAME" in h for h in st.hints)
    blank = _state(_sample(["FSC-A", "FITC-A"], _raw(k=2), {"FJ_COMPMATRIXNAME": " "}))  # as in 100715.fcs
    assert blank == ProcessingState()


# ------------------------------------------------------------------------------------ transformed


def _flowcore_kw(rmax: dict[int, str], transformation: str = "custom") -> dict[str, str]:
    kw = {"transformation": transformation}
    for i, v in rmax.items():
        kw[f"flowCore_$P{i}Rmax"] = v
        kw[f"flowCore_$P{i}Rmin"] = "0"
    return kw


def test_flowcore_transform_keywords_flag_transformation() -> None:
    # flowCore transform(): transformation=custom, flowCore_$PnRmax = transformed range, $PnR kept at 262144
    data = np.column_stack([RNG.uniform(0, 262143, 300), RNG.uniform(0, 4.5, (300, 3))])
    kw = _flowcore_kw({1: "262143", 2: "4.5", 3: "4.5", 4: "4.5"})
    st = _state(_sample(["FSC-A", "FITC-A", "PE-A", "APC-A"], data, kw))
    assert st.transformed == (
        "transformation=custom with flowCore_$P2Rmax=4.5, $P2R=262144 for 'FITC-A' (and 2 more parameters) "
        "(flowCore transform() records the transformed range)"
    )
    assert st.compensated is None
    # the keyword, not the values, is the evidence: found without events too
    assert (
        _state(_sample(["FSC-A", "FITC-A", "PE-A", "APC-A"], data, kw), events=False).transformed
        == st.transformed
    )


def test_flowcore_transform_of_one_channel_is_enough() -> None:
    kw = _flowcore_kw({2: "11.6", 3: "262143", 4: "262143"})
    st = _state(_sample(["FSC-A", "FITC-A", "PE-A", "APC-A"], _raw(), kw), events=False)
    assert st.transformed is not None and "flowCore_$P2Rmax=11.6" in st.transformed


def test_catalyst_counts_export_is_not_flagged() -> None:
    # CATALYST sce2fcs: transformation=custom always, $PnR = 2^ceil(log2(max)), flowCore_$PnRmax = $PnR - 1;
    # a dim channel (max 15) on raw counts is not a transformed scale
    names = ["Nd142Di", "Nd143Di", "Nd144Di", "Nd145Di"]
    data = np.column_stack([RNG.uniform(0, 1000, (100, 3)), RNG.uniform(0, 15, 100)])
    kw = _flowcore_kw({1: "1023", 2: "1023", 3: "1023", 4: "15"})
    st = _state(_sample(names, data, kw, ranges=[1024, 1024, 1024, 16]))
    assert not st.flagged
    assert st.hints == (
        "transformation=custom but the fluorescence flowCore_$PnRmax are raw-scale ranges "
        "(CATALYST's sce2fcs writes the keyword for every export)",
    )


def test_catalyst_asinh_export_is_flagged() -> None:
    # CATALYST sce2fcs(assay = "exprs"): asinh values, $PnR = 8, flowCore_$PnRmax = 7 on most channels
    names = ["Time", "Nd142Di", "Nd143Di", "Nd144Di", "Ir191Di"]
    kw = _flowcore_kw({1: "1048575", 2: "7", 3: "7", 4: "7", 5: "15"})
    st = _state(_sample(names, RNG.uniform(0, 7, (100, 5)), kw, ranges=[1048576, 8, 8, 8, 16]), events=False)
    assert st.transformed is not None and st.transformed.startswith(
        "transformation=custom with flowCore_$P2Rmax=7"
    )


def test_custom_without_ranges_is_only_a_hint() -> None:
    st = _state(_sample(["FSC-A", "FITC-A"], _raw(k=2), {"transformation": "custom"}))
    assert not st.flagged
    assert st.hints == ("transformation=custom without flowCore_$PnRmax keywords to confirm it",)


def test_flowcore_read_linearisation_is_not_a_transform() -> None:
    # read.FCS(transformation="linearize") marks "applied" (as in the CytoNorm blood files)
    kw = _flowcore_kw({1: "154", 2: "4410"}, transformation="applied")
    kw["CREATOR"] = "PengQiu FCS writer"
    st = _state(_sample(["Nd142Di", "Nd143Di"], RNG.uniform(0, 150, (100, 2)), kw, ranges=[155, 4411]))
    assert not st.flagged
    assert st.hints[0].startswith("transformation=applied: flowCore decoded $PnE log scales")


def test_spectre_asinh_columns_flag_transformation() -> None:
    names = ["FSC-A", "CD3", "CD3_asinh", "CD4_asinh_cf5"]
    st = _state(_sample(names, _raw()), events=False)
    assert st.transformed == "$P3N='CD3_asinh' and 1 more (Spectre's do.asinh output name)"


def test_lower_case_keyword_mappings_are_read() -> None:
    s = _sample(["FSC-A", "FITC-A"], _raw(k=2))
    st = processing_state({"transformation": "custom", "flowCore_$P2Rmax": "4.5"}, s.channels)
    assert st.transformed is not None


def test_both_flags_and_describe() -> None:
    kw = _flowcore_kw({2: "4.5", 3: "4.5"})
    st = _state(_sample(["FSC-A", "Comp-FITC-A", "Comp-PE-A"], _raw(k=3), kw), events=False)
    assert st.compensated is not None and st.transformed is not None
    assert (
        st.describe()
        == f"looks already compensated: {st.compensated}; looks already transformed: {st.transformed}"
    )


# ------------------------------------------------------------------------------------ data hint


def _xform_export(n=300):
    """A FlowKit export(source='xform'): $PnR 262144, every channel logicle-scaled to about 0..1."""
    return _sample(["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"], RNG.uniform(-0.05, 1.0, (n, 5)))


def test_transformed_scale_floats_give_a_labelled_data_hint() -> None:
    s = _xform_export()
    st = _state(s)
    assert st.compensated is None
    assert st.transformed is not None and st.transformed.startswith(
        "data hint: all 2 fluorescence parameters lie"
    )
    assert "$PnR is 262144" in st.transformed
    assert _state(s, events=False) == ProcessingState()  # the hint needs the events


def test_keyword_evidence_comes_before_the_data_hint() -> None:
    data = RNG.uniform(0, 4.4, (300, 3))
    st = _state(_sample(["FSC-A", "FITC-A", "PE-A"], data, _flowcore_kw({2: "4.5", 3: "4.5"})))
    assert st.transformed is not None and st.transformed.startswith("transformation=custom")


@pytest.mark.parametrize(
    "case",
    ["raw floats", "one raw channel", "integer data", "constant", "few events", "small range", "non-finite"],
)
def test_data_hint_needs_every_large_range_float_channel_on_a_small_scale(case: str) -> None:
    names = ["FSC-A", "FITC-A", "PE-A"]
    data = RNG.uniform(0, 4.0, (200, 3))
    kwargs = {}
    if case == "raw floats":
        data = _raw(k=3)
    elif case == "one raw channel":
        data[:, 2] *= 10_000
    elif case == "integer data":
        data = RNG.integers(0, 5, (200, 3))
        kwargs = {"datatype": "I", "pnr": "1024"}
    elif case == "constant":
        data[:, 1:] = 0.0
    elif case == "few events":
        data = data[:9]
    elif case == "small range":
        kwargs = {"pnr": "20"}  # e.g. a raw CyTOF channel whose $PnR is its maximum
    elif case == "non-finite":
        data[:, 1] = np.nan
    st = _state(_sample(names, data, **kwargs))
    assert st.transformed is None


def test_scale_limit_covers_arcsinh_of_the_largest_ranges() -> None:
    assert np.arcsinh(2.0**32 / 5) < TRANSFORMED_SCALE_MAX
    assert np.log10(2.0**32) < TRANSFORMED_SCALE_MAX


# ------------------------------------------------------------------------------------ shared data

_SHARED = [r["path"] for r in manifest_rows("fcs") if "corrupted" not in r["path"]]


@pytest.mark.conformance
@pytest.mark.parametrize("rel", _SHARED or ["(shared data absent)"])
def test_shared_files_are_not_flagged(rel: str) -> None:
    """Instrument files, Gating-ML data, CytoNorm, FlowKit, plates: raw data, never flagged."""
    root = shared_data_or_skip()
    s = read_quiet(root / rel)
    st = processing_state(s.keywords, s.channels, events=s.events)
    assert not st.flagged, (rel, st)


@pytest.mark.conformance
def test_shared_instrument_and_gatingml_files_are_covered() -> None:
    shared_data_or_skip()
    assert sum(p.startswith("fcs/instruments/") for p in _SHARED) >= 10
    assert "gatingml2/data1.fcs" in _SHARED


@pytest.mark.conformance
def test_cytonorm_files_read_as_linearised_not_transformed() -> None:
    shared_data_or_skip()
    paths = sorted((SHARED_DATA / "blood" / "cytonorm").glob("*.fcs"))
    assert len(paths) == 6
    for p in paths:
        s = read_quiet(p, lazy=True)
        st = processing_state(s.keywords, s.channels)
        assert not st.flagged
        assert st.hints[0].startswith("transformation=applied")
