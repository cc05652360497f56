"""``flowtools demo``: make the synthetic study cohort and run every stage that exists on it.

Stages so far: synthetic cohort -> sample-sheet validation -> FCS reading (one
summary row per file) -> compensation with each file's own spillover matrix ->
batch gating of the whole cohort with the study templates (tables, per-woman
table, resolved Gating-ML per sample) -> cohort-consistent clustering of the
lymphocytes (FlowSOM-class) -> exports (MIFlowCyt record, NK cells as FCS files,
lymphocytes as AnnData) -> case/control comparison and nested-CV prediction -> time to
live birth from a follow-up database (Cox models, clinical vs immune vs both) -> a cytokine
bead-array plate for the same women (FCS files to concentrations, RM vs control per analyte) ->
a multi-plate cohort with a batch effect normalised on its anchor samples. The
command line adds the HTML report. Each later stage is added here as it lands, so the
demo always runs the whole study end to end.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowtools._resources import study_template
from flowtools.compensation import SpilloverMatrix
from flowtools.io.fcs import read_fcs
from flowtools.io.sample_sheet import read_sample_sheet
from flowtools.io.tables import csv_text
from flowtools.pipeline.plate import PlateResult, run_plate
from flowtools.provenance import atomic_write_text, provenance_record
from flowtools.synth import CohortResult, make_cohort

__all__ = ["DemoResult", "bead_array_stage", "normalize_stage", "run_demo"]

StageCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` produced.

    Attributes
    ----------
    out_dir : pathlib.Path
    cohort : CohortResult
        The synthetic cohort (FCS files, sample sheet, clinical record, truth).
    scan_csv, scan_json : pathlib.Path
        One row per FCS file: IDs from the sample sheet, events, channels,
        markers, spillover, warnings (no free-text keywords).
    medians_csv : pathlib.Path
        Per file and detector: median before and after compensation with the
        file's own spillover matrix.
    provenance_json : pathlib.Path
    summary : dict
        Counts for display: women, files, events, plates, tubes, warnings.
    """

    out_dir: Path
    cohort: CohortResult
    scan_csv: Path
    scan_json: Path
    medians_csv: Path
    provenance_json: Path
    summary: dict[str, Any]
    plate: PlateResult | None = None
    clusters_dir: Path | None = None
    stats_dir: Path | None = None
    beads: Any = None  # the bead plate's BeadPlateResult (its report is drawn by the command line)
    normalization: Any = None  # (fit, apply result) of the normalisation stage, for its batch QC page


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    n_women: int = 24,
    events: int = 20_000,
    seed: int = 0,
    jobs: int | None = None,
    progress: StageCallback | None = None,
    after_gate: Callable[..., None] | None = None,
) -> DemoResult:
    """Run every existing stage on a fresh synthetic cohort.

    Parameters
    ----------
    out_dir : str or PathLike
        Output folder; the demo owns it, and a re-run replaces its contents.
    n_women : int, default 24
    events : int, default 20_000
        Events per FCS file.
    seed : int, default 0
    jobs : int, optional
        Worker processes for gating (default: all cores).
    progress : callable(stage, done, total), optional
        Called as each file is written or scanned.
    after_gate : callable, optional
        Passed to :func:`~flowtools.pipeline.plate.run_plate` (the command line draws the
        report's gate plots there).

    Returns
    -------
    DemoResult
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def report(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        """A stage without steps of its own: reported as 0 of 1 when it starts, 1 of 1 when done."""
        if progress is not None:
            progress(name, 0, 1)
        yield
        if progress is not None:
            progress(name, 1, 1)

    # Stage 1: the synthetic cohort.
    cohort = make_cohort(
        out / "cohort", n_women=n_women, seed=seed, events=events, overwrite=True, progress=report("synth")
    )

    # Stage 2: the sample sheet, validated as a user's would be.
    sheet = read_sample_sheet(cohort.samples_csv)

    # Stage 3: read every FCS file, IDs from the sheet (never from FCS keywords); compensate each with
    # its own $SPILLOVER and record the per-marker medians before and after.
    rows: list[dict[str, Any]] = []
    medians: list[dict[str, Any]] = []
    n_warnings = 0
    step = report("read")
    for k, row in enumerate(sheet, start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # kept on the sample, reported in the table
            sample = read_fcs(row.file)
        n_warnings += len(sample.warnings)
        if sample.spillover is not None:
            matrix = SpilloverMatrix.from_fcs(sample)
            comp = matrix.apply(sample.events, sample.pnn)
            for j in matrix.channel_indices(sample.pnn):
                ch = sample.channels[j]
                medians.append(
                    {
                        "sample_id": row.sample_id,
                        "tube": row.tube,
                        "channel": ch.pnn,
                        "marker": ch.pns,
                        "median_raw": float(np.median(sample.events[:, j])),
                        "median_compensated": float(np.median(comp[:, j])),
                    }
                )
        rows.append(
            {
                "sample_id": row.sample_id,
                "woman_id": row.woman_id,
                "tube": row.tube,
                "plate": row.plate,
                "well": row.well,
                "fcs_version": sample.version,
                "n_events": sample.n_events,
                "n_channels": sample.n_channels,
                "markers": ";".join(c.pns for c in sample.channels if c.pns),
                "spillover_detectors": 0 if sample.spillover is None else len(sample.spillover.detectors),
                "warnings": " | ".join(sample.warnings),
            }
        )
        if step is not None:
            step(k, len(sheet))

    scan_csv = out / "fcs_scan.csv"
    atomic_write_text(scan_csv, csv_text(rows))
    medians_csv = out / "compensated_medians.csv"
    atomic_write_text(medians_csv, csv_text(medians))

    # Stage 4: gate every sample with the study template of its tube.
    gate_step = report("gate")
    plate = run_plate(
        cohort.samples_csv,
        [study_template("TBNK-NK"), study_template("Treg-Th")],
        out / "gated",
        jobs=jobs,
        seed=seed,
        progress=None if gate_step is None else (lambda done, total, _o: gate_step(done, total)),
        after_gate=after_gate,
    )

    # Stage 5: cohort-consistent clustering of the lymphocytes of the TBNK-NK tube.
    clusters = None
    clusters_dir = out / "gated" / "clusters" / "lymphocytes"  # in the run: exports find it there
    if plate.n_ok:
        from flowtools.analysis.cohort import cluster_cohort
        from flowtools.analysis.figures import cluster_figures

        with stage("cluster"):
            clusters = cluster_cohort(
                out / "gated", population="lymphocytes",
                markers=["CD3", "CD4", "CD8", "CD19", "CD56", "CD16"],
                tube="TBNK-NK", method="flowsom", out_dir=clusters_dir, samples_csv=cohort.samples_csv,
                n_clusters=10, events_per_sample=2000, embed="pca", seed=seed,
            )
            cluster_figures(clusters, clusters_dir / "figures")

    # Stage 5b: meet users where they work - the MIFlowCyt record of the run, the NK cells as FCS files,
    # the lymphocytes as AnnData (with their clusters) when the anndata extra is installed.
    export_summary: dict[str, Any] = {}
    if plate.n_ok:
        with stage("export"):
            export_summary = _export_stage(out / "gated", out / "export")

    # Stage 6: the study's question - RM vs control per population, and does immune testing add to the
    # clinical record in predicting the next loss (honest nested CV). Small demo cohorts give wide CIs.
    stats_dir: Path | None = None
    stats_summary: dict[str, Any] = {}
    survival_summary: dict[str, Any] = {}
    if plate.n_ok:
        with stage("stats"):
            stats_dir, stats_summary = _stats_stage(plate.out_dir, cohort.clinical_csv, out / "stats",
                                                    seed=seed)
        # Stage 6b: outcomes as the follow-up database records them - time to live birth (Cox models,
        # clinical vs immune vs both, nested CV), beside the binary next-loss result.
        with stage("survival"):
            survival_summary = _survival_stage(plate.out_dir, cohort.out_dir, out / "survival", seed=seed)

    # Stage 7: immune substances - a cytokine bead-array plate for the same women, from FCS files to
    # concentrations (5PL standard curves, LLOQ/ULOQ), then RM vs control per analyte.
    with stage("beads"):
        beads, bead_summary = bead_array_stage(cohort.out_dir, out / "beads", seed=seed)

    # Stage 8: plates on one scale - a multi-plate cohort with a batch effect and an anchor donor on every
    # plate, normalised on the anchors (CytoNorm-class); the command line draws its batch QC page.
    with stage("normalize"):
        normalization, norm_summary = normalize_stage(out / "normalize", seed=seed)

    params = {"n_women": n_women, "events": events, "seed": seed}
    prov = provenance_record(
        inputs={"samples.csv": cohort.samples_csv, "clinical.csv": cohort.clinical_csv},
        parameters=params,
        seed=seed,
        command="flowtools demo",
    )
    scan_json = out / "fcs_scan.json"
    atomic_write_text(scan_json, json.dumps({"provenance": prov, "files": rows}, indent=2) + "\n")
    provenance_json = out / "provenance.json"
    atomic_write_text(provenance_json, json.dumps(prov, indent=2) + "\n")

    summary = {
        "women": cohort.n_women,
        "rm": cohort.n_rm,
        "controls": cohort.n_controls,
        "immune_subgroup": cohort.n_immune_subgroup,
        "files": len(rows),
        "events": sum(r["n_events"] for r in rows),
        "plates": sorted({r["plate"] for r in rows}),
        "tubes": sorted({r["tube"] for r in rows}),
        "files_with_warnings": sum(1 for r in rows if r["warnings"]),
        "compensated_files": len({m["sample_id"] for m in medians}),
        "gated": plate.n_ok,
        "clusters": 0 if clusters is None else int(len(clusters.annotation)),
        **stats_summary,
        "export": export_summary,
        "survival": survival_summary,
        **bead_summary,
        "normalize": norm_summary,
        "gating_failed": plate.n_failed,
        "warnings": n_warnings,
    }
    return DemoResult(out, cohort, scan_csv, scan_json, medians_csv, provenance_json, summary, plate,
                      None if clusters is None else clusters_dir, stats_dir, beads, normalization)


def _export_stage(gate_dir: Path, out: Path) -> dict[str, Any]:
    """MIFlowCyt record, NK cells as FCS 3.1 files, lymphocytes as AnnData (if the extra is installed)."""
    from flowtools.errors import ExportError
    from flowtools.pipeline.export import export_anndata, export_fcs
    from flowtools.pipeline.miflowcyt import write_miflowcyt

    summary: dict[str, Any] = {"miflowcyt": str(write_miflowcyt(gate_dir))}
    fcs = export_fcs(gate_dir, "NK cells", out / "nk_fcs", tube="TBNK-NK")
    summary["nk_fcs_files"] = len(fcs.files)
    try:
        adata = export_anndata(gate_dir, population="lymphocytes", tube="TBNK-NK",
                               out=out / "lymphocytes.h5ad")
        summary["anndata"] = {"path": str(out / "lymphocytes.h5ad"), "events": int(adata.n_obs)}
    except ExportError as exc:  # the optional extra is not installed: say so, the rest of the demo runs
        summary["anndata"] = f"skipped: {exc}"
    return summary


def normalize_stage(out: Path, *, seed: int, n_plates: int = 4, n_women: int = 8,
                     events: int = 5000) -> tuple[Any, dict[str, Any]]:
    """A multi-plate cohort with a batch effect, normalised on its anchors: (fit, result), summary."""
    from flowtools.analysis.normalize import apply_sheet, fit_sheet
    from flowtools.synth.batch import make_batch_cohort

    out.mkdir(parents=True, exist_ok=True)
    cohort = make_batch_cohort(out / "cohort", n_plates=n_plates, n_women=n_women, events=events, seed=seed,
                               overwrite=True)
    fit = fit_sheet(cohort.samples_csv, study_template("TBNK-NK"), out / "model.json",
                    min_events=min(1000, events // 2), command="flowtools demo (normalize)",
                    random_state=seed)
    res = apply_sheet(cohort.samples_csv, fit.path, out / "normalized", command="flowtools demo (normalize)")
    before = [float(r["emd_before"]) for r in res.drift]
    after = [float(r["emd_after"]) for r in res.drift]
    summary = {"plates": n_plates, "markers": len(fit.markers),
               "mean_emd_before": float(np.mean(before)) if before else float("nan"),
               "mean_emd_after": float(np.mean(after)) if after else float("nan"),
               "emd_before": {r["marker"]: r["emd_before"] for r in res.drift},
               "emd_after": {r["marker"]: r["emd_after"] for r in res.drift},
               "flagged": [r["marker"] for r in res.drift if r["flagged"]],
               "unstable_clusters": list(fit.model.cluster_cv_["unstable"]),
               "samples_csv": str(res.samples_csv), "model": str(fit.path),
               "cohort_samples_csv": str(cohort.samples_csv)}
    return (fit, res), summary


def _survival_stage(gate_dir: Path, cohort_dir: Path, out_dir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Time to live birth: a synthetic follow-up database for the cohort (SQLite), then Cox models."""
    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.errors import StatsError
    from flowtools.stats.survival import run_survival_stage
    from flowtools.stats.tables import tables_from_gate
    from flowtools.synth.followup import make_followup

    fu = make_followup(cohort_dir, out_dir / "followup", seed=seed)
    db = read_followup(fu.sqlite)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small demo cohorts: notes of tiny folds
            summary = run_survival_stage(tables_from_gate(gate_dir), db, out_dir, seed=seed)
    except (StatsError, ValueError) as exc:  # e.g. too few live births in a tiny cohort
        return {"survival_skipped": str(exc), "followup_db": str(fu.sqlite)}
    summary["followup_db"] = str(fu.sqlite)
    return summary


def bead_array_stage(cohort_dir: Path, out: Path, *, seed: int,
                 events_per_well: int = 2500) -> tuple[Any, dict[str, Any]]:
    """Bead-array stage: synthetic bead plate(s) for the cohort's women, run, RM vs control per analyte."""
    from flowtools.beads.plate import run_bead_plate
    from flowtools.io.sample_sheet import write_sample_sheet
    from flowtools.io.tables import write_table
    from flowtools.stats.analytes import compare_analytes
    from flowtools.synth.beads import MAX_SAMPLES, make_bead_plate

    with open(cohort_dir / "clinical.csv", newline="", encoding="utf-8") as fh:
        n = sum(1 for _ in csv.DictReader(fh))
    rows: list[Any] = []
    panel = None
    for k, first in enumerate(range(0, n, MAX_SAMPLES)):
        bp = make_bead_plate(out / "plates" / f"BP{k + 1}", cohort_dir=cohort_dir, first_woman=first,
                             seed=seed, plate_id=f"BP{k + 1}", events_per_well=events_per_well)
        rows += list(read_sample_sheet(bp.sheet, tubes=None).rows)
        panel = bp.panel
    write_sample_sheet(rows, out / "samples.csv")
    res = run_bead_plate(out / "samples.csv", panel, out / "results", seed=seed,
                         command="flowtools demo (beads)")
    comparison = compare_analytes(res.outputs["per_woman"], cohort_dir / "clinical.csv")
    prov = provenance_record(
        inputs={"per_woman": res.outputs["per_woman"], "clinical": cohort_dir / "clinical.csv"},
        seed=seed, command="flowtools demo (beads compare)",
        parameters={"test": "Mann-Whitney and Welch on log10 concentration, BH q",
                    "censoring": "<LLOQ as LLOQ/2, >ULOQ as ULOQ"})
    write_table(comparison, out / "analytes_comparison", prov)
    s = res.summary()
    return res, {"bead_wells": s["wells"], "bead_failed_wells": s["failed_wells"],
                 "per_woman": str(res.outputs["per_woman"]),
                 "comparison": str(out / "analytes_comparison.csv"),
                 "bead_curves_ok": s["curves_ok"], "analytes_compared": int(len(comparison)),
                 "analytes_significant_q05": int((comparison["q_mannwhitney"] < 0.05).sum())}


def _stats_stage(gate_dir: Path, clinical_csv: Path, out: Path, *, seed: int) -> tuple[Path, dict[str, Any]]:
    """Comparison and prediction on the gated tables; figures beside the tables."""
    from flowtools.stats import compare, comparison_figures, evaluate_models, prediction_figures
    from flowtools.stats.errors import StatsError
    from flowtools.stats.tables import read_clinical, tables_from_gate

    counts = tables_from_gate(gate_dir)
    clinical = read_clinical(clinical_csv, missing="drop")
    summary: dict[str, Any] = {}
    comparison = compare(counts, clinical, missing="drop")
    comparison.to_files(out, inputs={"clinical.csv": clinical_csv})
    comparison_figures(comparison, out / "figures")
    table = comparison.table
    summary["populations_compared"] = int(len(table))
    summary["significant_q05"] = int((table["q"] < 0.05).sum())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # small demo cohorts: convergence notes of tiny folds
            ev = evaluate_models(counts, clinical, task="next_loss", n_repeats=2, missing="drop", seed=seed)
        ev.to_files(out / "prediction")
        prediction_figures(ev, out / "figures")
        summary["auc"] = {str(r["model"]): round(float(r["auc"]), 3) for _, r in ev.auc.iterrows()}
    except (StatsError, ValueError) as exc:  # e.g. too few RM women with each outcome in a tiny cohort
        summary["prediction_skipped"] = str(exc)
    return out, summary
