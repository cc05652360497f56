"""Synthetic study cohort: FCS files, sample sheet, clinical table and the truth behind them.

See :func:`make_cohort` and ``shared/design/cohort.md``.
"""

from __future__ import annotations

from flowtools.synth.cohort import CohortResult, CohortSpec, make_cohort

__all__ = ["CohortResult", "CohortSpec", "make_cohort"]
