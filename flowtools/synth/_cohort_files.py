"""What a synthetic cohort writes besides the events: FCS keywords and spillover, truth tables, CSV/JSON/npy.

Part of :func:`flowtools.synth.cohort.make_cohort` (whose module re-exports these names).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from flowtools.io.fcs import Spillover
from flowtools.provenance import atomic_write_bytes, atomic_write_text
from flowtools.synth._cohort_women import _WOMEN_PER_PLATE, _Woman
from flowtools.synth._events import TIMESTEP
from flowtools.synth._model import DETECTORS, NODES, PANELS, TUBES, node_counts, parent_index

_CANARY = "CANARY-PII"


# ---------------------------------------------------------------------------------------------
# FCS details


def _tube_spillover(tube: str, spill: np.ndarray) -> Spillover:
    detectors = tuple(d for d, _ in PANELS[tube])
    idx = np.array([DETECTORS.index(d) for d in detectors], dtype=np.intp)
    return Spillover(detectors, spill[np.ix_(idx, idx)].copy())


def _keywords(
    w: _Woman, tube: str, sample_id: str, well: str, duration_s: float, seed: int
) -> dict[str, str]:
    well_no = 2 * (w.index % _WOMEN_PER_PLATE) + TUBES.index(tube)
    begin = 9 * 3600 + 150 * well_no  # the plate starts at 09:00, one well every 2.5 minutes
    end = begin + int(np.ceil(duration_s))
    return {
        "$CYT": "flowtools-synth",
        "$CYTSN": f"SYN-{seed % 10000:04d}",
        "$DATE": w.date.strftime("%d-%b-%Y").upper(),
        "$BTIM": _clock(begin),
        "$ETIM": _clock(end),
        "$TIMESTEP": repr(TIMESTEP),
        "$FIL": f"{sample_id}.fcs",
        "$PLATEID": w.plate,
        "$PLATENAME": w.plate,
        "$WELLID": well,
        "TUBE NAME": tube,
        "$SRC": f"{_CANARY} specimen of Jane Doe-{w.index + 1}, born 1990-01-01",
        "$OP": f"{_CANARY} operator Dr A. Smith",
        "PATIENT ID": f"{_CANARY}-MRN-{900000 + w.index}",
    }


def _clock(seconds: int) -> str:
    seconds %= 24 * 3600
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------
# Truth tables and writers


def _truth_rows(
    w: _Woman, tube: str, sample_id: str, leaf_counts: np.ndarray, shares: np.ndarray
) -> list[list[str]]:
    counts = node_counts(leaf_counts)
    total = int(leaf_counts.sum())
    rows = []
    for i, path in enumerate(NODES):
        parent = parent_index(i)
        parent_count = total if parent < 0 else int(counts[parent])
        pct = 100.0 * counts[i] / parent_count if parent_count else 0.0
        rows.append(
            [
                w.woman_id,
                w.group,
                "1" if w.immune else "0",
                tube,
                sample_id,
                path,
                "" if parent < 0 else NODES[parent],
                str(int(counts[i])),
                str(parent_count),
                f"{pct:.4f}",
                f"{100.0 * shares[i]:.4f}",
            ]
        )
    return rows


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _save_npy(path: Path, arr: np.ndarray) -> Path:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _write_clinical(path: Path, women: list[_Woman], c: dict[str, np.ndarray], outcomes: list[str]) -> None:
    header = [
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
    rows = [
        [
            w.woman_id,
            w.group,
            str(c["age"][i]),
            f"{c['bmi'][i]:.1f}",
            str(c["n_prior_losses"][i]),
            str(c["rm_type"][i]),
            str(c["smoking"][i]),
            str(c["cycle_day"][i]),
            w.plate,
            w.date.isoformat(),
            outcomes[i],
        ]
        for i, w in enumerate(women)
    ]
    _write_csv(path, header, rows)
