"""What a bead-array plate run writes, each file with provenance and atomically.

Its tables (wells, per_woman, curves, standards) with their column documentation,
identification.json and summary.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flowtools.beads.curve import MAX_REPLICATE_CV

if TYPE_CHECKING:
    from flowtools.beads.plate import BeadPlateResult

__all__ = ["write_outputs"]


_COLUMNS_DOC = """# bead-array tables

## wells.csv: one row per well and analyte
| column | meaning |
|---|---|
| plate, well, sample_id | from the sample sheet |
| woman_id | sample rows only (empty for standards and blanks) |
| role | standard, sample or blank |
| standard_level | 1 = top standard ... n; 0 for samples and blanks |
| nominal | standard's nominal concentration in the well (NaN otherwise) |
| beads | beads in the analyte's region (0: region missing) |
| mfi | median reporter of those beads |
| dilution | sample dilution (1 for standards and blanks) |
| concentration | back-calculated x dilution, only inside LLOQ-ULOQ; NaN otherwise |
| low, high | 95% delta-method interval of concentration |
| limit | the limit crossed (sample units) when flagged <LLOQ or >ULOQ |
| lloq, uloq | the plate's quantifiable range for the analyte, sample units |
| flag | ok, or ;-joined flags (below) |

Well flags: <LLOQ, >ULOQ, missing, shifted, few_beads, unresolved, well_failed, no_curve,
no_standards, no_range, no_mfi.

## per_woman.csv: one row per woman and analyte
concentration: geometric mean of the in-range wells (NaN when none); flag: ok, or the censoring
flag of the out-of-range wells (limit: the limit), or the wells' flag; lloq/uloq: the strictest
range of her wells; n_wells, n_in_range, cv_pct (CV of her in-range wells, NaN for one), plates.

## curves.csv: one row per plate and analyte
model, status (ok, no_range, no_curve), 5PL parameters a b c d g (y = d + (a - d) / (1 + (x/c)^b)^g),
r2 (log10 MFI), residual_cv, n_points, r2_alt (the other model), lloq, uloq (well units),
top_standard_mfi, levels_passing, flags (no_standards, too_few_standards, non_monotone, flat,
fit_failed, replicate_cv, no_quantifiable_range, 5pl_failed_used_4pl).

## standards.csv: one row per plate, analyte and standard level
nominal, wells, mean_mfi, cv_pct (replicate CV of MFI), back_calculated, recovery_pct, passes
(80-120% recovery and CV < 20%), flags.
"""


def write_outputs(
    res: BeadPlateResult,
    out_dir: str | os.PathLike[str],
    *,
    sheet: str | os.PathLike[str],
    command: str | None = None,
    seed: int = 0,
    model: str = "5pl",
) -> dict[str, Path]:
    """Write the tables (wells, per_woman, curves, standards), identification.json and summary.json.

    Every table carries the provenance record (inputs: the sheet and the panel file; the
    parameters); files are written atomically.
    """
    import pandas as pd

    from flowtools.io.tables import write_table
    from flowtools.provenance import atomic_write_text, provenance_record

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, Any] = {"sample_sheet": str(sheet)}
    if Path(res.panel.source).is_file():
        inputs["bead_panel"] = res.panel.source
    prov = provenance_record(
        inputs=inputs,
        seed=seed,
        command=command or "flowtools beads run",
        parameters={
            "model": model,
            "min_beads": res.panel.min_beads,
            "max_replicate_cv": MAX_REPLICATE_CV,
            "recovery_limits": [80, 120],
            "weights": "1/y^2",
            "panel": res.panel.name,
            "censoring": "outside LLOQ-ULOQ: concentration NaN, flag and limit",
        },
        libraries=("numpy", "scipy", "pandas"),
    )
    paths: dict[str, Path] = {}
    paths["wells"] = write_table(pd.DataFrame(res.well_rows), out / "wells", prov)[0]
    pw_cols = [
        "woman_id",
        "analyte",
        "concentration",
        "flag",
        "limit",
        "lloq",
        "uloq",
        "n_wells",
        "n_in_range",
        "cv_pct",
        "plates",
    ]
    paths["per_woman"] = write_table(pd.DataFrame(res.per_woman, columns=pw_cols), out / "per_woman", prov)[0]
    paths["curves"] = write_table(pd.DataFrame([c.row() for c in res.curves.values()]), out / "curves", prov)[
        0
    ]
    std_rows = [s for c in res.curves.values() for s in c.standards]
    paths["standards"] = write_table(pd.DataFrame(std_rows), out / "standards", prov)[0]
    idents = {
        sid: {"well": w.well, "plate": w.plate, **res.identification[sid].decision()}
        for w in res.wells
        if (sid := w.sample_id) in res.identification
    }
    atomic_write_text(out / "beads.columns.md", _COLUMNS_DOC)
    atomic_write_text(out / "identification.json", json.dumps(idents, indent=1, default=_json) + "\n")
    paths["identification"] = out / "identification.json"
    res.outputs.update(paths)
    atomic_write_text(
        out / "summary.json",
        json.dumps({**res.summary(), "provenance": prov}, indent=2, default=_json) + "\n",
    )
    paths["summary"] = out / "summary.json"
    res.outputs.update(paths)
    return paths


def _json(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
