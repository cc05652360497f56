"""Gating with a normalisation model: ``run_plate(..., normalize=MODEL)`` (issue 18)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from flowtools.errors import NormalizationError

MARKERS = ["CD3", "CD4", "CD8", "CD56"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory):
    from flowtools._resources import study_template
    from flowtools.analysis.normalize import apply_sheet, fit_sheet
    from flowtools.synth.batch import make_batch_cohort

    root = tmp_path_factory.mktemp("plate_norm")
    bc = make_batch_cohort(root / "cohort", n_plates=3, n_women=4, events=2000, seed=3)
    template = Path(study_template("TBNK-NK"))
    fit_sheet(bc.samples_csv, template, root / "model.json", min_events=500, markers=MARKERS)
    applied = apply_sheet(bc.samples_csv, root / "model.json", root / "applied")
    return {"root": root, "bc": bc, "template": template, "model": root / "model.json", "applied": applied}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _numbers(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    """Every row's identity and numbers (counts, % and MFIs), in file order."""
    keep = [c for c in rows[0] if c in ("sample_id", "population", "count", "parent_count", "pct_parent")
            or c.startswith("mfi_")]
    return [tuple(r[c] for c in keep) for r in rows]


def test_normalize_gates_what_apply_sheet_writes(cohort, tmp_path: Path) -> None:
    from flowtools.pipeline.plate import run_plate

    bc, t = cohort["bc"], cohort["template"]
    norm = run_plate(bc.samples_csv, [t], tmp_path / "norm", jobs=1, normalize=cohort["model"])
    files = run_plate(cohort["applied"].samples_csv, [t], tmp_path / "files", jobs=1)
    raw = run_plate(bc.samples_csv, [t], tmp_path / "raw", jobs=1)
    assert norm.n_failed == 0 and norm.n_ok == files.n_ok == raw.n_ok > 0
    a, b, c = (_rows(r.populations_csv) for r in (norm, files, raw))
    # the same function normalises both: every count, % and MFI equal to the last digit
    assert _numbers(a) == _numbers(b)
    counts_a = [r["count"] for r in a]
    assert counts_a != [r["count"] for r in c]  # and the batch effect moved some gates
    prov = json.loads(norm.provenance_json.read_text())
    from flowtools.provenance import file_sha256

    assert prov["normalize"]["sha256"] == file_sha256(cohort["model"])
    assert prov["normalize"]["batches"] == ["P01", "P02", "P03"]
    assert "normalize" not in json.loads(raw.provenance_json.read_text())
    notes = [r for r in _rows(tmp_path / "norm" / "decisions.csv") if r["method"] == "sample:normalize"]
    assert len(notes) == norm.n_ok
    assert all("model.json" in r["rule"] and f"batch {r['plate']}" in r["rule"] for r in notes)
    assert not [r for r in _rows(tmp_path / "raw" / "decisions.csv") if r["method"] == "sample:normalize"]
    # the report's batch QC says which model the anchors were normalised with
    from flowtools.report.html import _batch_qc_section

    (tmp_path / "rep").mkdir()
    sec = _batch_qc_section(norm, prov, tmp_path / "rep")
    assert sec is not None and "normalised with model model.json" in sec.text
    assert (tmp_path / "rep" / "batch_qc.html").is_file()


def test_cache_hit_and_changed_model_miss(cohort, tmp_path: Path) -> None:
    from flowtools.analysis.normalize import fit_sheet
    from flowtools.pipeline.plate import run_plate

    bc, t = cohort["bc"], cohort["template"]
    out = tmp_path / "run"
    first = run_plate(bc.samples_csv, [t], out, jobs=1, normalize=cohort["model"])
    again = run_plate(bc.samples_csv, [t], out, jobs=1, normalize=cohort["model"])
    assert all(o.cached for o in again.outcomes) and again.n_ok == first.n_ok
    assert _rows(again.populations_csv) == _rows(first.populations_csv)
    # the plain run on the same folder is not served the normalised samples, nor the reverse
    plain = run_plate(bc.samples_csv, [t], out, jobs=1)
    assert not any(o.cached for o in plain.outcomes)
    other = tmp_path / "model2.json"
    fit_sheet(bc.samples_csv, t, other, min_events=500, markers=MARKERS, mode="global")
    changed = run_plate(bc.samples_csv, [t], out, jobs=1, normalize=other)
    assert changed.n_ok == first.n_ok and not any(o.cached for o in changed.outcomes)
    assert json.loads(changed.provenance_json.read_text())["normalize"]["mode"] == "global"


def _sheet_with_batch(src: Path, dst: Path, batches: dict[str, str]) -> Path:
    rows = _rows(src)
    for r in rows:
        r["batch"] = batches.get(r["sample_id"], r["batch"])
        r["file"] = str((src.parent / r["file"]).resolve())
    with open(dst, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return dst


def test_batch_not_in_model_fails_only_its_samples(cohort, tmp_path: Path) -> None:
    from flowtools.pipeline.plate import run_plate

    bc = cohort["bc"]
    first = next(r for r in _rows(bc.samples_csv) if r["tube"] == "TBNK-NK")
    sheet = _sheet_with_batch(bc.samples_csv, tmp_path / "samples.csv", {first["sample_id"]: "P99"})
    res = run_plate(sheet, [cohort["template"]], tmp_path / "out", jobs=1, normalize=cohort["model"])
    failed = [o for o in res.outcomes if not o.ok]
    assert [o.sample_id for o in failed] == [first["sample_id"]]
    assert "batch 'P99'" in failed[0].error and first["file"].split("/")[-1] in failed[0].error
    assert "P01" in failed[0].error  # the model's batches named
    assert res.n_ok == len(res.outcomes) - 1 and res.exit_code == 2
    errors = json.loads(res.errors_json.read_text())["errors"]
    assert [e["sample_id"] for e in errors] == [first["sample_id"]]


def test_global_mismatch_refused_before_any_work(cohort, tmp_path: Path) -> None:
    from flowtools.pipeline.plate import run_plate

    bc = cohort["bc"]
    everyone = {r["sample_id"]: "P99" for r in _rows(bc.samples_csv)}
    sheet = _sheet_with_batch(bc.samples_csv, tmp_path / "samples.csv", everyone)
    with pytest.raises(NormalizationError, match="no sample can be normalised"):
        run_plate(sheet, [cohort["template"]], tmp_path / "a", jobs=1, normalize=cohort["model"])
    assert not (tmp_path / "a" / "populations.csv").exists()
    # a template other than the model's (an edited copy: another hash)
    edited = tmp_path / "edited.yaml"
    edited.write_text(cohort["template"].read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(NormalizationError, match="is none of this run's templates"):
        run_plate(bc.samples_csv, [edited], tmp_path / "b", jobs=1, normalize=cohort["model"])
    assert not (tmp_path / "b" / "populations.csv").exists()
    with pytest.raises(NormalizationError, match="not found"):
        run_plate(bc.samples_csv, [cohort["template"]], tmp_path / "c", jobs=1,
                  normalize=tmp_path / "missing.json")


def test_cli_gate_normalize(cohort, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowtools.cli import app

    res = CliRunner().invoke(app, ["gate", str(cohort["bc"].samples_csv), "-t", str(cohort["template"]),
                                   "-o", str(tmp_path / "g"), "--jobs", "1", "--no-report", "--json",
                                   "--normalize", str(cohort["model"])])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["normalize"] == str(cohort["model"]) and summary["failed"] == 0
    bad = CliRunner().invoke(app, ["gate", str(cohort["bc"].samples_csv), "-t", str(cohort["template"]),
                                   "-o", str(tmp_path / "h"), "--jobs", "1", "--no-report",
                                   "--normalize", str(tmp_path / "missing.json")])
    assert bad.exit_code != 0 and "missing.json" in bad.output


def test_report_redraws_a_normalised_run_normalised(cohort, tmp_path: Path) -> None:
    """Plots redrawn by the report (no worker manifest) show the normalised events the gates saw."""
    from flowtools.pipeline.plate import run_plate
    from flowtools.report.html import draw_after_gating, write_report

    bc, t = cohort["bc"], cohort["template"]
    lines = Path(bc.samples_csv).read_text(encoding="utf-8").splitlines()
    tbnk = [ln for ln in lines[1:] if "TBNK" in ln]
    small = Path(bc.samples_csv).with_name("samples_redraw.csv")  # beside the sheet: same relative paths
    small.write_text("\n".join([lines[0], tbnk[0], tbnk[-1]]) + "\n", encoding="utf-8")
    run = run_plate(small, [t], tmp_path / "run", jobs=1, normalize=cohort["model"],
                    after_gate=draw_after_gating)
    assert run.n_ok == 2
    samples = tmp_path / "run" / "report" / "samples"
    drawn = {p.relative_to(samples): p.read_bytes() for p in sorted(samples.rglob("*.png"))}
    assert drawn
    for m in samples.glob("*/plots.json"):
        m.unlink()  # as a cached sample or a later `write_report` has: the report must redraw
    write_report(run, jobs=1)
    redrawn = {p.relative_to(samples): p.read_bytes() for p in sorted(samples.rglob("*.png"))}
    assert redrawn == drawn
