"""Lymphocyte events of a synthetic cohort with their truth labels (shared by tests and the benchmark)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

L = "Singlets/Live/Lymphocytes"
#: The major lymphocyte populations scored (truth leaf paths grouped under one name).
MAJOR = {
    "CD4 T": (f"{L}/T cells/CD4",),
    "CD8 T": (f"{L}/T cells/CD8",),
    "B": (f"{L}/B cells",),
    "NK CD56dim CD16+": (f"{L}/NK cells/CD56dim CD16+",),
    "NK CD56bright CD16-": (f"{L}/NK cells/CD56bright CD16-",),
    "NKT-like": (f"{L}/NKT-like",),
}
MARKERS = ("CD3", "CD4", "CD8", "CD19", "CD56", "CD16", "CD45", "CD14", "HLA-DR")


def lymphocyte_events(
    cohort_dir: str | Path, sample_id: str, markers=MARKERS
) -> tuple[np.ndarray, np.ndarray]:
    """Compensated, logicle-transformed marker values of the true lymphocytes of one file.

    Returns ``(x, y)``: x float64 (n, len(markers)); y int64 (n,), the index into MAJOR's keys, -1 for others.
    """
    from flowtools.compensation import SpilloverMatrix
    from flowtools.io.fcs import read_fcs
    from flowtools.transforms.scales import LogicleTransform

    d = Path(cohort_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = read_fcs(d / "fcs" / f"{sample_id}.fcs")
    ev = SpilloverMatrix.from_fcs(s).apply(s.as_array(preprocess=True), s.pnn)
    labels = np.load(d / "truth" / f"{sample_id}.labels.npy")
    codes = {int(k): v for k, v in json.loads((d / "truth" / "populations.json").read_text()).items()}
    qc = d / "truth" / f"{sample_id}.qc.npy"
    valid = np.load(qc) == 0 if qc.is_file() else np.ones(labels.size, bool)
    is_lymph = np.array([codes.get(int(c), "").startswith(L + "/") for c in range(max(codes) + 1)])
    keep = is_lymph[labels] & valid
    lut = np.full(max(codes) + 1, -1, dtype=np.int64)
    for j, prefixes in enumerate(MAJOR.values()):
        for c, p in codes.items():
            if any(p == q or p.startswith(q + "/") for q in prefixes):
                lut[c] = j
    pns = [c.pns or c.pnn for c in s.channels]
    cols = [pns.index(m) for m in markers]
    t = LogicleTransform(T=262144, W=0.5, M=4.5, A=0)
    x = np.ascontiguousarray(t.apply(np.ascontiguousarray(ev[keep][:, cols])))
    return x, lut[labels[keep]]
