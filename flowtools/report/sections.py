"""Report sections for what a run did beyond gating: the MIFlowCyt record and the demo's later stages.

Each is a :class:`~flowtools.report.html.ReportSection` built from an output folder's own files
(nothing is recomputed here).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowtools.report.html import ReportSection

__all__ = ["demo_sections", "miflowcyt_section"]


def miflowcyt_section(path: Path) -> Any:
    """The report's MIFlowCyt section: what the record holds, what is missing and why, and a link."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    missing = record.get("missing") or []
    rows = tuple({"section": m.get("section", ""), "field": m.get("field", ""), "reason": m.get("reason", "")}
                 for m in missing)
    return ReportSection(
        "MIFlowCyt record",
        f"The run's MIFlowCyt 1.0 record (miflowcyt.json): instrument, detectors, markers, compensation, "
        f"transforms and the gating hierarchy as the files, sheet and templates say them. {len(missing)} "
        "fields cannot be known from them and are listed below with the reason (never invented; personal "
        "keywords are never copied).",
        (), rows, (("miflowcyt.json", Path(path)),))


def demo_sections(res: Any) -> list[Any]:
    """Report sections for the demo's later stages (clustering, statistics), from their output folders."""
    import csv

    sections = []
    if res.clusters_dir is not None:
        keep = ("cluster", "label", "count", "pct_of_population", "best_gate", "f1")
        with open(res.clusters_dir / "cluster_annotation.csv", newline="", encoding="utf-8") as fh:
            rows = tuple({k: (r[k].rsplit("/", 1)[-1] if k == "best_gate" else r[k]) for k in keep if k in r}
                         for r in csv.DictReader(fh))
        figs = tuple(sorted((res.clusters_dir / "figures").glob("*.png")))
        sections.append(ReportSection(
            "Clusters of TBNK-NK lymphocytes",
            "FlowSOM-class clustering fitted on a balanced subsample of every woman's lymphocytes and "
            "applied to every event; each cluster is annotated by its marker profile and matched to the "
            "gated population it overlaps most.", figs, rows))
    if res.stats_dir is not None:
        keep = ("population", "scale", "effect", "ci_low", "ci_high", "p", "q", "test")
        with open(res.stats_dir / "comparison.csv", newline="", encoding="utf-8") as fh:
            rows = sorted(({k: r[k] for k in keep if k in r} for r in csv.DictReader(fh)),
                          key=lambda r: float(r.get("p") or 1))
        sections.append(ReportSection(
            "RM vs control",
            "Per population, women with recurrent miscarriage against controls, the woman as the unit "
            "(logit-normal regression with a between-woman variance, adjusted for age and BMI, plate as "
            "batch; BH q-values). "
            "'composition (CLR)' rows compare sibling populations as a composition.",
            tuple(sorted((res.stats_dir / "figures").glob("*.png"))), tuple(rows[:15])))
        auc_csv = next(iter(sorted((res.stats_dir / "prediction").glob("*auc*.csv"))), None) \
            if (res.stats_dir / "prediction").is_dir() else None
        if auc_csv is not None:
            with open(auc_csv, newline="", encoding="utf-8") as fh:
                auc_rows = tuple(csv.DictReader(fh))
            sections.append(ReportSection(
                "Predicting the next loss",
                "Repeated nested cross-validation (every learned step inside the folds): clinical record "
                "only, immune populations only, and both. Real studies report AUC 0.57-0.72; small "
                "cohorts are noisy.",
                (), auc_rows))
    surv = Path(res.out_dir) / "survival"
    if (surv / "survival_concordance.csv").is_file():
        with open(surv / "survival_concordance.csv", newline="", encoding="utf-8") as fh:
            rows = tuple(csv.DictReader(fh))
        sections.append(ReportSection(
            "Time to live birth",
            "Outcomes as the follow-up database records them (every pregnancy after sampling, censoring "
            "at loss to follow-up): penalised Cox models of the clinical record, the immune populations "
            "and both, in repeated nested CV; Harrell's and Uno's C, time-dependent AUC at 12 and 24 "
            "months. Cumulative incidence of live birth by group and by predicted risk tertile.",
            tuple(sorted(surv.glob("*.png"))), rows))
    if getattr(res, "beads", None) is not None:
        from flowtools.report.beads import write_bead_report

        bead_report = write_bead_report(res.beads, Path(res.out_dir) / "beads" / "report.html")
        table = Path(res.out_dir) / "beads" / "analytes_comparison.csv"
        keep = ("analyte", "n_case", "n_control", "below_lloq_case", "below_lloq_control", "fold_change",
                "p_mannwhitney", "q_mannwhitney")
        with open(table, newline="", encoding="utf-8") as fh:
            rows = tuple({k: r[k] for k in keep if k in r} for r in csv.DictReader(fh))
        sections.append(ReportSection(
            "Immune substances in blood (cytokine bead array)",
            "A bead-array plate for the same women: beads identified per well, a weighted 5PL standard "
            "curve per analyte and plate, concentrations only inside LLOQ-ULOQ (flagged outside, never "
            "extrapolated), then RM vs control per analyte on log10 concentration (Mann-Whitney, BH q; "
            "<LLOQ counted as LLOQ/2).", (), rows, (("bead plate report", bead_report),)))
    if getattr(res, "normalization", None) is not None:
        from flowtools.report.batch_qc import write_normalization_page

        fit, norm = res.normalization
        page = write_normalization_page(fit, norm, Path(res.out_dir) / "normalize" / "batch_qc.html",
                                        notes=["One anchor donor per plate."])
        keep = ("marker", "emd_before", "emd_after", "mad_change", "flagged")
        rows = tuple({k: r[k] for k in keep if k in r} for r in norm.drift)
        sections.append(ReportSection(
            "Plates on one scale (anchor normalisation)",
            "A multi-plate cohort with a per-plate batch effect and the same anchor donor on every plate, "
            "normalised CytoNorm-style (FlowSOM clusters of the pooled anchors, one monotone spline per "
            "cluster, marker and plate towards the mean of the plates). Earth Mover's Distance between "
            "plates before and after, per marker, on the files the fit did not see; a marker made worse "
            "(MAD change > 0.25) is flagged.", (), rows, (("batch QC page", page),)))
    record = Path(res.out_dir) / "gated" / "miflowcyt.json"
    if record.is_file():
        sections.append(miflowcyt_section(record))
    return sections
