"""What an edit to a template does across samples: % of parent per population, old vs new."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowtools.gating.templates import Template, resolve
from flowtools.io.fcs import read_fcs
from flowtools.io.sample_sheet import SampleSheet

__all__ = ["TemplateDiff", "diff_templates"]


@dataclass(frozen=True)
class TemplateDiff:
    """Per sample and population: % of parent under the old and the new template.

    Attributes
    ----------
    rows : list of dict
        sample_id, population, old_pct_parent, new_pct_parent, delta (points;
        NaN where a population exists in one template only).
    errors : dict of str to str
        sample_id -> why it could not be compared.
    """

    rows: list[dict[str, Any]]
    errors: dict[str, str]

    def summary(self) -> list[dict[str, Any]]:
        """Per population: samples compared, mean and max absolute change (points)."""
        by: dict[str, list[float]] = {}
        for r in self.rows:
            d = r["delta"]
            if d == d:  # not NaN
                by.setdefault(r["population"], []).append(abs(d))
        return [{"population": p, "samples": len(v), "mean_abs_delta": sum(v) / len(v),
                 "max_abs_delta": max(v)}
                for p, v in by.items()]


def diff_templates(
    old: Template,
    new: Template,
    sheet: SampleSheet,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> TemplateDiff:
    """Resolve both templates on every sample of the sheet (of the templates' tube) and compare.

    Parameters
    ----------
    old, new : Template
    sheet : SampleSheet
        Samples; rows whose tube differs from the templates' ``tube`` are skipped.
    progress : callable(done, total), optional
    """
    tube = new.tube or old.tube
    rows_in = [r for r in sheet if tube is None or r.tube == tube]
    out: list[dict[str, Any]] = []
    errors: dict[str, str] = {}
    for k, row in enumerate(rows_in, start=1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sample = read_fcs(row.file)
        except (OSError, ValueError) as exc:
            errors[row.sample_id] = str(exc)
            continue
        (a,) = resolve(old, [sample], sample_ids=[row.sample_id])
        (b,) = resolve(new, [sample], sample_ids=[row.sample_id])
        if a.error or b.error:
            errors[row.sample_id] = a.error or b.error or ""
            continue
        pa = {r["population"]: r["pct_parent"] for r in a.rows()}
        pb = {r["population"]: r["pct_parent"] for r in b.rows()}
        for pop in [*pa, *(p for p in pb if p not in pa)]:
            x, y = pa.get(pop, float("nan")), pb.get(pop, float("nan"))
            out.append({"sample_id": row.sample_id, "population": pop, "old_pct_parent": x,
                        "new_pct_parent": y, "delta": y - x})
        if progress is not None:
            progress(k, len(rows_in))
    return TemplateDiff(out, errors)
