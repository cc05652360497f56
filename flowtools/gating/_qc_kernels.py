"""Compatibility shim: these kernels moved to :mod:`flowtools.gating.methods` (to be removed).

``interp``: ``methods._qc_kernels``; ``restrict``, ``density_hist``, ``prominences``:
``methods._density_kernels``. Import from those instead.
"""

from __future__ import annotations

from flowtools.gating.methods._density_kernels import density_hist, prominences, restrict
from flowtools.gating.methods._qc_kernels import interp

__all__ = ["density_hist", "interp", "prominences", "restrict"]
