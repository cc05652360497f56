"""Score gating against the synthetic cohort's truth: F1 per population and error of % of parent.

Pure numpy on masks and labels (it does not import the gating layer): give it,
per sample, the boolean membership of each gated population and the file's
per-event truth labels, plus which truth populations each gated one stands for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STUDY_TRUTH_MAP", "label_sets", "read_labels", "score_sample", "summarise"]

_L = "Singlets/Live/Lymphocytes"

#: For the study templates: gated population path (last segments suffice) -> truth population path(s).
#: A truth path stands for itself and all its descendants; "% of parent" is compared with the truth
#: population named by ``parent`` in :data:`STUDY_PARENTS`.
STUDY_TRUTH_MAP: dict[str, dict[str, tuple[str, ...]]] = {
    "rm_tbnk_nk": {
        "singlets": ("Singlets",),
        "live": ("Singlets/Live",),
        "lymphocytes": (_L,),
        "monocytes": ("Singlets/Live/Monocytes",),
        "granulocytes": ("Singlets/Live/Granulocytes",),
        "T cells": (f"{_L}/T cells",),
        "T cells/CD4": (f"{_L}/T cells/CD4",),
        "T cells/CD8": (f"{_L}/T cells/CD8",),
        "T cells/DN": (f"{_L}/T cells/DN",),
        "T cells/DP": (f"{_L}/T cells/DP",),
        "NKT-like": (f"{_L}/NKT-like",),
        "B cells": (f"{_L}/B cells",),
        "NK cells": (f"{_L}/NK cells",),
        "NK cells/CD56dim CD16+": (f"{_L}/NK cells/CD56dim CD16+",),
        "NK cells/CD56bright CD16-": (f"{_L}/NK cells/CD56bright CD16-",),
        "monocytes/Classical": ("Singlets/Live/Monocytes/Classical",),
        "monocytes/Intermediate": ("Singlets/Live/Monocytes/Intermediate",),
        "monocytes/Non-classical": ("Singlets/Live/Monocytes/Non-classical",),
    },
    "rm_treg_th": {
        "singlets": ("Singlets",),
        "lymphocytes": (_L,),
        "CD3+/CD4": (f"{_L}/T cells/CD4",),
        "CD3+/CD8": (f"{_L}/T cells/CD8", f"{_L}/NKT-like"),
        "Treg": (f"{_L}/T cells/CD4/Treg",),
        "Th17": (f"{_L}/T cells/CD4/Th17",),
        "Th1": (f"{_L}/T cells/CD4/Th1",),
        "naive": (f"{_L}/T cells/CD4/Naive",),
    },
}

#: Which gated population's count is the denominator when a population's share is reported the study's
#: way (e.g. NK as % of lymphocytes, Treg as % of CD4), and the truth population it stands for.
STUDY_PARENTS: dict[str, dict[str, str]] = {
    "rm_tbnk_nk": {"NK cells": "lymphocytes", "B cells": "lymphocytes", "T cells": "lymphocytes",
                   "NK cells/CD56dim CD16+": "NK cells", "NK cells/CD56bright CD16-": "NK cells",
                   "T cells/CD4": "T cells", "T cells/CD8": "T cells", "monocytes/Classical": "monocytes"},
    "rm_treg_th": {"Treg": "CD3+/CD4", "Th17": "CD3+/CD4", "Th1": "CD3+/CD4", "naive": "CD3+/CD4"},
}


def read_labels(
    truth_dir: str | os.PathLike[str], sample_id: str
) -> tuple[np.ndarray, dict[int, str], np.ndarray]:
    """The per-event truth labels of a file, the code -> population path table, and a validity mask.

    Events the generator marked as acquisition artefacts (margin piles, clog signal shifts; the
    ``<id>.qc.npy`` flags) are not valid measurements of their population: a QC gate is right to
    drop them, so scoring leaves them out (``valid`` is False there).
    """
    d = Path(truth_dir)
    labels = np.load(d / f"{sample_id}.labels.npy")
    codes = {int(k): v for k, v in json.loads((d / "populations.json").read_text(encoding="utf-8")).items()}
    qc = d / f"{sample_id}.qc.npy"
    valid = np.load(qc) == 0 if qc.is_file() else np.ones(labels.shape[0], dtype=bool)
    return labels, codes, valid


def label_sets(codes: Mapping[int, str], truth_paths: Sequence[str]) -> np.ndarray:
    """Codes whose population lies at or below any of ``truth_paths``."""
    def below(path: str) -> bool:
        return any(path == t or path.startswith(t + "/") for t in truth_paths)

    return np.array([c for c, p in codes.items() if below(p)], dtype=np.int64)


def _find(masks: Mapping[str, np.ndarray], suffix: str) -> np.ndarray | None:
    hits = [p for p in masks if p == suffix or p.endswith("/" + suffix)]
    return masks[hits[0]] if len(hits) == 1 else None


def score_sample(
    masks: Mapping[str, np.ndarray],
    labels: np.ndarray,
    codes: Mapping[int, str],
    truth_map: Mapping[str, Sequence[str]],
    parents: Mapping[str, str],
    valid: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per mapped population: precision, recall, F1, and % of parent (gated vs true).

    Parameters
    ----------
    masks : mapping of str to ndarray of bool
        Gated population path -> membership over all events.
    labels : ndarray of int
        Truth code per event.
    codes : mapping of int to str
        Truth code -> population path.
    truth_map : mapping
        Gated path suffix -> truth population path(s).
    parents : mapping
        Gated path suffix -> gated parent suffix for the % of parent comparison.
    valid : ndarray of bool, optional
        Events to score (default all); see :func:`read_labels`.
    """
    keep = np.ones(labels.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    labels = labels[keep]
    masks = {k: np.asarray(v)[keep] for k, v in masks.items()}
    rows = []
    for pop, truths in truth_map.items():
        pred = _find(masks, pop)
        if pred is None:
            continue
        true = np.isin(labels, label_sets(codes, truths))
        tp = int(np.count_nonzero(pred & true))
        fp = int(np.count_nonzero(pred & ~true))
        fn = int(np.count_nonzero(~pred & true))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
        parent = parents.get(pop)
        pct_pred = pct_true = float("nan")
        if parent is not None and parent in truth_map:
            ppred = _find(masks, parent)
            ptrue = np.isin(labels, label_sets(codes, truth_map[parent]))
            if ppred is not None and ppred.any() and ptrue.any():
                pct_pred = 100.0 * np.count_nonzero(pred) / np.count_nonzero(ppred)
                pct_true = 100.0 * np.count_nonzero(true) / np.count_nonzero(ptrue)
        rows.append({"population": pop, "precision": tp / (tp + fp) if tp + fp else float("nan"),
                     "recall": tp / (tp + fn) if tp + fn else float("nan"), "f1": f1,
                     "parent": parent, "pct_parent_gated": pct_pred, "pct_parent_true": pct_true,
                     "abs_error_points": abs(pct_pred - pct_true)})
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per population over samples: median F1, min F1, median |error| of % of parent (points)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["population"], []).append(r)
    out = []
    for pop, rs in by.items():
        f1 = np.array([r["f1"] for r in rs], dtype=float)
        err = np.array([r["abs_error_points"] for r in rs], dtype=float)
        median_err = float(np.nanmedian(err)) if np.isfinite(err).any() else float("nan")
        out.append({"population": pop, "samples": len(rs), "median_f1": float(np.nanmedian(f1)),
                    "min_f1": float(np.nanmin(f1)), "median_abs_error_points": median_err})
    return out
