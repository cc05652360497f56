"""Tests for flowtools.synth: the synthetic cohort and the truth written beside it."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from flowtools.io import read_fcs
from flowtools.synth import CohortResult, CohortSpec, make_cohort
from flowtools.synth import _model as model
from flowtools.synth import cohort as cohort_mod

L = "Singlets/Live/Lymphocytes"
NK = f"{L}/NK cells"
TOP = 262143.0

PANEL_MARKERS = {
    "TBNK-NK": {"CD45", "CD3", "CD4", "CD8", "CD19", "CD56", "CD16", "CD14", "HLA-DR", "Viability"},
    "Treg-Th": {"CD45", "CD3", "CD4", "CD8", "CD25", "CD127", "FOXP3", "CD45RA", "IL-17A", "IFN-g"},
}


# ------------------------------------------------------------------------------------------------
# Fixtures: a few cohorts made once per module.


@pytest.fixture(scope="module")
def progress_calls() -> list[tuple[int, int]]:
    return []


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, progress_calls: list[tuple[int, int]]) -> CohortResult:
    return make_cohort(
        tmp_path_factory.mktemp("a") / "cohort",
        n_women=5,
        events=4000,
        seed=11,
        progress=lambda done, total: progress_calls.append((done, total)),
    )


@pytest.fixture(scope="module")
def small_again(tmp_path_factory: pytest.TempPathFactory) -> CohortResult:
    return make_cohort(tmp_path_factory.mktemp("b") / "cohort", n_women=5, events=4000, seed=11)


@pytest.fixture(scope="module")
def small_other_seed(tmp_path_factory: pytest.TempPathFactory) -> CohortResult:
    return make_cohort(tmp_path_factory.mktemp("c") / "cohort", n_women=5, events=4000, seed=12)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> CohortResult:
    return make_cohort(tmp_path_factory.mktemp("big") / "c", n_women=240, events=500, seed=3, write_fcs=False)


@pytest.fixture(scope="module")
def big_null(tmp_path_factory: pytest.TempPathFactory) -> CohortResult:
    return make_cohort(
        tmp_path_factory.mktemp("bignull") / "c", n_women=240, events=500, seed=3, write_fcs=False, null=True
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def drawn(res: CohortResult, population: str, tube: str = "TBNK-NK") -> dict[str, tuple[float, bool, str]]:
    """woman_id -> (drawn % of parent, immune subgroup, group)."""
    out = {}
    for row in read_csv(res.truth_dir / "women.csv"):
        if row["population"] == population and row["tube"] == tube:
            pct = float(row["expected_pct_parent"])
            out[row["woman_id"]] = (pct, row["immune_subgroup"] == "1", row["group"])
    return out


def tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def clean_file(res: CohortResult, tube_tag: str = "TBNK") -> str:
    """A sample ID of the given tube without planted artefacts."""
    log = json.loads((res.truth_dir / "artefacts.json").read_text())
    return next(p.stem for p in res.files if p.stem.endswith(tube_tag) and p.stem not in log)


def compensate(sample) -> tuple[np.ndarray, np.ndarray, list[str]]:
    spill = sample.spillover
    cols = [sample.channel_index(d) for d in spill.detectors]
    raw = sample.events[:, cols].astype(np.float64)
    comp = raw @ np.linalg.inv(spill.matrix)
    return raw, comp, [sample.pns[c] for c in cols]


# ------------------------------------------------------------------------------------------------
# Layout, sample sheet, clinical table


def test_layout_and_result(small: CohortResult, progress_calls: list[tuple[int, int]]) -> None:
    assert small.n_women == 5 and small.n_files == 10 and len(small.files) == 10
    assert small.n_rm == 3 and small.n_controls == 2 and small.n_immune_subgroup == 1
    assert all(p.is_file() and p.parent == small.fcs_dir for p in small.files)
    for name in ("populations.json", "women.csv", "effects.json", "artefacts.json", "params.json"):
        assert (small.truth_dir / name).is_file()
    pops = json.loads((small.truth_dir / "populations.json").read_text())
    assert pops == {str(k): p for k, p in enumerate(model.LEAVES)}
    assert f"{L}/T cells/CD4/Treg" in pops.values()
    assert progress_calls == [(i, 10) for i in range(1, 11)]
    params = json.loads((small.truth_dir / "params.json").read_text())
    assert params["seed"] == 11 and params["parameters"]["n_women"] == 5 and "version" in params
    assert "created" not in params


def test_sample_sheet_format(small: CohortResult) -> None:
    rows = read_csv(small.samples_csv)
    header = small.samples_csv.read_text().splitlines()[0]
    assert header == "file,sample_id,woman_id,tube,plate,well,acquisition_date"
    assert len(rows) == 10
    assert rows[0]["file"] == "fcs/S0001-TBNK.fcs" and rows[0]["well"] == "A01"
    assert [r["well"] for r in rows] == [f"A{i:02d}" for i in range(1, 11)]
    assert {r["tube"] for r in rows} == {"TBNK-NK", "Treg-Th"}
    for r in rows:
        assert (small.out_dir / r["file"]).is_file()
        assert Path(r["file"]).stem == r["sample_id"]


def test_sample_sheet_accepted_by_reader(small: CohortResult) -> None:
    sheet_mod = pytest.importorskip("flowtools.io.sample_sheet")
    sheet = sheet_mod.read_sample_sheet(small.samples_csv)
    assert len(sheet) == 10
    assert "acquisition_date" in sheet.extra_columns
    assert {row.file for row in sheet} == {p.resolve() for p in small.files}


def test_clinical_table(small: CohortResult, big: CohortResult) -> None:
    for res in (small, big):
        rows = read_csv(res.clinical_csv)
        assert list(rows[0]) == [
            "woman_id",
            "group",
            "age",
            "bmi",
            "n_prior_losses",
            "rm_type",
            "smoking",
            "cycle_day",
            "plate",
            "acquisition_date",
            "next_pregnancy_loss",
        ]
        sheet = {r["woman_id"]: (r["plate"], r["acquisition_date"]) for r in read_csv(res.samples_csv)}
        for r in rows:
            assert sheet[r["woman_id"]] == (r["plate"], r["acquisition_date"])
            assert 18 <= int(r["age"]) <= 50 and 15 < float(r["bmi"]) < 50 and 1 <= int(r["cycle_day"]) <= 35
            if r["group"] == "RM":
                assert 2 <= int(r["n_prior_losses"]) <= 6
                assert r["rm_type"] in {"primary", "secondary"} and r["next_pregnancy_loss"] in {"0", "1"}
            else:
                assert r["group"] == "control" and r["n_prior_losses"] == "0"
                assert r["rm_type"] == "" and r["next_pregnancy_loss"] == ""


def test_several_plates_and_days(big: CohortResult) -> None:
    rows = read_csv(big.samples_csv)
    plates = defaultdict(list)
    for r in rows:
        plates[r["plate"]].append(r)
    assert sorted(plates) == ["P01", "P02", "P03", "P04", "P05"]
    assert len(plates["P01"]) == 96 and len(plates["P05"]) == 96
    assert len({r["acquisition_date"] for r in rows}) == 5
    for plate_rows in plates.values():
        assert len({r["well"] for r in plate_rows}) == len(plate_rows)
        assert len({r["acquisition_date"] for r in plate_rows}) == 1
    assert big.files == ()
    assert not any(big.fcs_dir.iterdir())


# ------------------------------------------------------------------------------------------------
# Events and their truth


def test_label_counts_equal_truth(small: CohortResult) -> None:
    truth = defaultdict(dict)
    for row in read_csv(small.truth_dir / "women.csv"):
        truth[row["sample_id"]][row["population"]] = row
    for path in small.files:
        sid = path.stem
        labels = np.load(small.truth_dir / f"{sid}.labels.npy")
        assert labels.dtype == np.int16
        sample = read_fcs(path)
        assert labels.shape == (sample.n_events,)
        leaf_counts = np.bincount(labels, minlength=len(model.LEAVES))
        nodes = model.node_counts(leaf_counts)
        for i, pop in enumerate(model.NODES):
            row = truth[sid][pop]
            assert int(row["count"]) == nodes[i], (sid, pop)
            parent = model.parent_index(i)
            parent_count = sample.n_events if parent < 0 else nodes[parent]
            assert int(row["parent_count"]) == parent_count
            if parent_count:
                assert float(row["pct_parent"]) == pytest.approx(100 * nodes[i] / parent_count, abs=1e-4)


def test_realised_fractions_follow_drawn(small: CohortResult) -> None:
    rows = read_csv(small.truth_dir / "women.csv")
    checked = 0
    for row in rows:
        n, p = int(row["parent_count"]), float(row["expected_pct_parent"]) / 100
        if n < 200:
            continue
        sd = np.sqrt(p * (1 - p) / n)
        assert abs(float(row["pct_parent"]) / 100 - p) < 5 * sd + 1e-3, row
        checked += 1
    assert checked >= len(rows) // 2, f"only {checked} of {len(rows)} populations have 200 parent events"


def test_fcs_channels_and_keywords(small: CohortResult) -> None:
    for path in small.files:
        s = read_fcs(path)
        tube = s.keywords["TUBE NAME"]
        assert s.pnn[:3] == ["FSC-A", "FSC-H", "SSC-A"] and s.pnn[-1] == "Time"
        assert s.pns[:3] == ["", "", ""] and s.pns[-1] == ""
        assert set(s.pns[3:-1]) == PANEL_MARKERS[tube]
        assert all(n.endswith("-A") for n in s.pnn[3:-1])
        assert s.keywords["$CYT"] == "flowtools-synth"
        for key in ("$DATE", "$BTIM", "$ETIM", "$TIMESTEP"):
            assert s.keywords[key]
        for key in ("$SRC", "$OP", "PATIENT ID"):
            assert "CANARY-PII" in s.keywords[key]
        assert not any("CANARY" in v for v in s.safe_keywords().values())
        ev = s.events
        scatter = ev[:, :3]
        assert np.array_equal(scatter, np.rint(scatter)) and scatter.min() >= 0 and scatter.max() <= TOP
        assert np.all(np.diff(ev[:, -1]) >= 0) and ev[-1, -1] > ev[0, -1]
        assert ev[:, 3:-1].max() <= TOP


def test_canary_never_in_tables(small: CohortResult) -> None:
    for p in [
        small.samples_csv,
        small.clinical_csv,
        *small.truth_dir.glob("*.json"),
        small.truth_dir / "women.csv",
    ]:
        assert "CANARY" not in p.read_text()


def test_spillover_realistic(small: CohortResult) -> None:
    for path in small.files:
        spill = read_fcs(path).spillover
        assert spill is not None and len(spill.detectors) == 10
        m = spill.matrix
        assert np.allclose(np.diag(m), 1.0)
        off = m[~np.eye(10, dtype=bool)]
        assert off.min() >= 0 and off.max() <= 0.3 and (off > 0.05).sum() >= 5


def test_compensation_recovers_negative_populations(small: CohortResult) -> None:
    """A marker negative in a population sits near 0 after compensation, not before."""
    checked = 0
    for path in small.files:
        s = read_fcs(path)
        raw, comp, markers = compensate(s)
        labels = np.load(small.truth_dir / f"{path.stem}.labels.npy")
        for code, pop in enumerate(model.LEAVES):
            mask = labels == code
            if mask.sum() < 100 or not pop.startswith("Singlets/Live"):
                continue
            for j, marker in enumerate(markers):
                if model.expressed(pop, marker) != "-":
                    continue
                raw_med, comp_med = np.median(raw[mask, j]), np.median(comp[mask, j])
                assert abs(comp_med) < 250, (path.name, pop, marker, comp_med)
                if raw_med > 1000:  # spill from a bright marker of the same cells
                    checked += 1
                    assert abs(comp_med) < 0.1 * raw_med
    assert checked >= 10


def test_cd3_fitc_spill_into_pe(small: CohortResult) -> None:
    sid = clean_file(small)
    s = read_fcs(small.fcs_dir / f"{sid}.fcs")
    raw, comp, markers = compensate(s)
    labels = np.load(small.truth_dir / f"{sid}.labels.npy")
    t_cd4 = np.isin(labels, [model.LEAVES.index(p) for p in model.LEAVES if p.startswith(f"{L}/T cells/CD4")])
    pe = markers.index("CD16")
    assert np.median(raw[t_cd4, pe]) > 1000  # CD3-FITC spilling into PE
    assert abs(np.median(comp[t_cd4, pe])) < 200
    neg = comp[t_cd4, pe]
    assert 0.15 < np.mean(neg < 0) < 0.6  # negatives spread below zero


def test_positive_populations_are_bright(small: CohortResult) -> None:
    sid = clean_file(small)
    s = read_fcs(small.fcs_dir / f"{sid}.fcs")
    _, comp, markers = compensate(s)
    labels = np.load(small.truth_dir / f"{sid}.labels.npy")

    def med(pop: str, marker: str) -> float:
        return float(np.median(comp[labels == model.LEAVES.index(pop), markers.index(marker)]))

    assert med(f"{L}/B cells", "CD19") > 20 * med(f"{L}/T cells/CD8", "CD19") + 1000
    assert med("Singlets/Dead", "Viability") > 10_000 > med(f"{L}/B cells", "Viability")
    assert med(f"{L}/NK cells/CD56bright CD16-", "CD56") > med(f"{L}/NK cells/CD56dim CD16+", "CD56")
    assert med("Singlets/Live/Monocytes/Classical", "CD14") > 20_000


def test_scatter_and_doublets(small: CohortResult) -> None:
    sid = clean_file(small, "TREG")
    s = read_fcs(small.fcs_dir / f"{sid}.fcs")
    labels = np.load(small.truth_dir / f"{sid}.labels.npy")
    ev = s.events.astype(np.float64)
    ratio = ev[:, 1] / np.maximum(ev[:, 0], 1)
    d = labels == model.DOUBLET_CODE
    singlets = np.isin(labels, model.SINGLET_CODES)
    assert np.median(ratio[d]) < 0.7 < np.median(ratio[singlets])
    assert 0.01 < d.mean() < 0.12
    debris = labels == model.LEAVES.index("Debris")
    assert np.median(ev[debris, 0]) < 0.3 * np.median(ev[singlets, 0])
    gran = labels == model.LEAVES.index("Singlets/Live/Granulocytes")
    lymph = np.isin(labels, [k for k, p in enumerate(model.LEAVES) if p.startswith(L)])
    assert np.median(ev[gran, 2]) > 4 * np.median(ev[lymph, 2])


def test_artefacts_recorded_and_present(small: CohortResult) -> None:
    log = json.loads((small.truth_dir / "artefacts.json").read_text())
    kinds = {a["kind"]: (sid, a) for sid, items in log.items() for a in items}
    assert set(kinds) == {"clog", "margin", "low_events"}

    sid, rec = kinds["low_events"]
    assert read_fcs(small.fcs_dir / f"{sid}.fcs").n_events == rec["events"] < 0.1 * 4000

    sid, rec = kinds["margin"]
    s = read_fcs(small.fcs_dir / f"{sid}.fcs")
    qc = np.load(small.truth_dir / f"{sid}.qc.npy")
    col = s.channel_index(rec["channel"])
    hit = (qc & 1).astype(bool)
    assert hit.sum() == rec["events"] and np.all(s.events[hit, col] == TOP)

    sid, rec = kinds["clog"]
    s = read_fcs(small.fcs_dir / f"{sid}.fcs")
    t = s.as_array(preprocess=True)[:, -1]
    gaps = np.diff(t)
    assert gaps.max() > 2.5 and gaps.max() == pytest.approx(rec["gap_end_s"] - rec["gap_start_s"], abs=0.02)
    qc = np.load(small.truth_dir / f"{sid}.qc.npy")
    shifted = (qc & 2).astype(bool)
    assert shifted.sum() == rec["events_shifted"]
    fsc = s.events[:, 0]
    assert np.median(fsc[shifted]) < 0.85 * np.median(fsc[~shifted])


def test_no_artefacts_option(tmp_path: Path) -> None:
    res = make_cohort(tmp_path / "c", n_women=2, events=300, seed=1, artefacts=False)
    assert json.loads((res.truth_dir / "artefacts.json").read_text()) == {}
    assert not list(res.truth_dir.glob("*.qc.npy"))
    assert res.n_events == 4 * 300


# ------------------------------------------------------------------------------------------------
# Planted effects


def test_effects_exactly_in_subgroup(big: CohortResult, big_null: CohortResult) -> None:
    """Same seed, with and without effects: only immune-subgroup women change, by exactly the effect."""
    for effect in model.EFFECTS:
        planted, null = drawn(big, effect.population), drawn(big_null, effect.population)
        assert planted.keys() == null.keys()
        assert any(immune for _, immune, _ in planted.values()), "no immune-subgroup woman to check"
        for woman, (pct, immune, group) in planted.items():
            base = null[woman][0]
            assert null[woman][1] == immune
            if not immune:
                assert pct == base
                continue
            assert group == "RM"
            if effect.kind == "add":
                expected = min(base + 100 * effect.value, 99.5)  # shares are capped at 99.5%
                assert pct == pytest.approx(expected, abs=2e-3)
            else:
                assert pct / base == pytest.approx(effect.value, rel=2e-3)
    # A population without an effect, among the siblings of none: unchanged for everyone.
    for pop in ("Singlets/Live/Lymphocytes/T cells/CD8", "Singlets/Live/Monocytes/Classical"):
        planted, null = drawn(big, pop), drawn(big_null, pop)
        assert {k: v[0] for k, v in planted.items()} == {k: v[0] for k, v in null.items()}


def test_effect_sizes_between_groups(big: CohortResult) -> None:
    nk = drawn(big, NK)
    sub = [v[0] for v in nk.values() if v[1]]
    ctl = [v[0] for v in nk.values() if v[2] == "control"]
    rm_other = [v[0] for v in nk.values() if v[2] == "RM" and not v[1]]
    assert len(sub) == round(0.4 * 120)
    assert 2.0 < np.mean(sub) - np.mean(ctl) < 5.0
    assert abs(np.mean(rm_other) - np.mean(ctl)) < 1.5
    th17 = drawn(big, f"{L}/T cells/CD4/Th17", tube="Treg-Th")
    sub = [v[0] for v in th17.values() if v[1]]
    ratio = np.mean(sub) / np.mean([v[0] for v in th17.values() if v[2] == "control"])
    assert 1.3 < ratio < 1.9
    effects = json.loads((big.truth_dir / "effects.json").read_text())
    assert [e["population"] for e in effects["effects"]] == [e.population for e in model.EFFECTS]
    assert len(effects["immune_subgroup"]) == big.n_immune_subgroup


def test_null_plants_nothing(big_null: CohortResult) -> None:
    effects = json.loads((big_null.truth_dir / "effects.json").read_text())
    assert effects["null"] is True and effects["effects"] == [] and effects["outcome"] == {}
    nk = drawn(big_null, NK)
    sub = [v[0] for v in nk.values() if v[1]]
    others = [v[0] for v in nk.values() if not v[1]]
    assert abs(np.mean(sub) - np.mean(others)) < 1.5


def test_population_ranges(big_null: CohortResult) -> None:
    def pct_of_lymph(pop: str) -> np.ndarray:
        counts = defaultdict(dict)
        for row in read_csv(big_null.truth_dir / "women.csv"):
            if row["tube"] == "TBNK-NK":
                counts[row["woman_id"]][row["population"]] = int(row["count"])
        return np.array([100 * c[pop] / c[L] for c in counts.values()])

    assert 60 < np.median(pct_of_lymph(f"{L}/T cells")) < 80
    assert 35 < np.median(pct_of_lymph(f"{L}/T cells/CD4")) < 50
    assert 20 < np.median(pct_of_lymph(f"{L}/T cells/CD8")) < 35
    assert 8 < np.median(pct_of_lymph(f"{L}/B cells")) < 15
    assert 7 < np.median(pct_of_lymph(NK)) < 13
    q5, q95 = np.percentile([v[0] for v in drawn(big_null, NK).values()], [5, 95])
    assert 3 < q5 < 8 and 13 < q95 < 22


def test_outcome_model_is_modest(big: CohortResult) -> None:
    """Clinical risk factors predict the next pregnancy's loss modestly, never near AUC 0.95."""
    clinical = {r["woman_id"]: r for r in read_csv(big.clinical_csv) if r["group"] == "RM"}
    y = np.array([r["next_pregnancy_loss"] == "1" for r in clinical.values()])
    age = np.array([int(r["age"]) for r in clinical.values()])
    losses = np.array([int(r["n_prior_losses"]) for r in clinical.values()])
    nk = drawn(big, NK)
    immune = np.array([nk[w][1] for w in clinical], dtype=float)
    nk_pct = np.array([nk[w][0] for w in clinical])
    clin = cohort_mod._outcome_logit(age, losses, immune, nk_pct, null=True)
    full = cohort_mod._outcome_logit(age, losses, immune, nk_pct, null=False)
    assert 0.15 < y.mean() < 0.5
    assert 0.5 < auc(y, clin) < 0.75
    assert auc(y, full) < 0.85


def auc(y: np.ndarray, score: np.ndarray) -> float:
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    n1, n0 = y.sum(), (~y).sum()
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


# ------------------------------------------------------------------------------------------------
# Determinism, options, validation


def test_same_seed_same_bytes(small: CohortResult, small_again: CohortResult) -> None:
    a, b = tree_hash(small.out_dir), tree_hash(small_again.out_dir)
    assert len(a) > 20 and a == b


def test_different_seed_differs(small: CohortResult, small_other_seed: CohortResult) -> None:
    a, b = tree_hash(small.out_dir), tree_hash(small_other_seed.out_dir)
    for name in (str(p.relative_to(small.out_dir)) for p in small.files):
        assert a[name] != b[name]
    for name in ("clinical.csv", "samples.csv", "truth/women.csv"):
        assert a[name] != b[name]


def test_woman_independent_of_cohort_size(tmp_path: Path) -> None:
    kw = {"events": 1000, "seed": 5, "null": True, "artefacts": False}
    a = make_cohort(tmp_path / "a", n_women=2, **kw)
    b = make_cohort(tmp_path / "b", n_women=4, **kw)
    for sid in ("S0001-TBNK", "S0002-TREG"):
        la = (a.truth_dir / f"{sid}.labels.npy").read_bytes()
        assert la == (b.truth_dir / f"{sid}.labels.npy").read_bytes()
        ea = read_fcs(a.fcs_dir / f"{sid}.fcs").events
        assert np.array_equal(ea, read_fcs(b.fcs_dir / f"{sid}.fcs").events)


def test_truth_same_with_and_without_fcs(tmp_path: Path) -> None:
    a = make_cohort(tmp_path / "a", n_women=3, events=800, seed=9)
    b = make_cohort(tmp_path / "b", n_women=3, events=800, seed=9, write_fcs=False)
    for name in ("women.csv", "effects.json", "populations.json"):
        assert (a.truth_dir / name).read_bytes() == (b.truth_dir / name).read_bytes()
    assert a.samples_csv.read_bytes() == b.samples_csv.read_bytes()
    assert a.clinical_csv.read_bytes() == b.clinical_csv.read_bytes()


def test_refuses_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "c"
    make_cohort(out, n_women=3, events=300, seed=1)
    with pytest.raises(FileExistsError):
        make_cohort(out, n_women=2, events=300, seed=1)
    res = make_cohort(out, n_women=2, events=300, seed=1, overwrite=True)
    assert sorted(p.name for p in res.fcs_dir.iterdir()) == sorted(p.name for p in res.files)
    assert len(list(res.truth_dir.glob("*.labels.npy"))) == 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_women": 0},
        {"seed": -1},
        {"events": 10},
        {"immune_fraction": 1.5},
        {"n_women": 2.5},
        {"seed": True},
    ],
)
def test_invalid_parameters(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_cohort(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_spec_round_trip() -> None:
    spec = CohortSpec(n_women=3, seed=2)
    assert spec.to_dict() == {
        "n_women": 3,
        "seed": 2,
        "events": 100_000,
        "null": False,
        "immune_fraction": 0.4,
        "artefacts": True,
    }


def test_import_is_light() -> None:
    code = (
        "import sys, flowtools.synth; bad = [m for m in ('pandas', 'numba', 'matplotlib', 'typer') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
