"""Cytokine bead arrays (LEGENDplex, BD CBA): from FCS files to concentrations.

Modules (imported lazily, so ``import flowtools.beads`` stays light):

* :mod:`flowtools.beads.template`: the bead-panel template (YAML) and the plate layout
  columns of the sample sheet;
* :mod:`flowtools.beads.identify`: bead groups by scatter, bead regions by the
  classification channel, per well, with every decision recorded;
* :mod:`flowtools.beads.curve`: weighted 4PL/5PL standard curves, back-calculation
  with intervals, LLOQ/ULOQ;
* :mod:`flowtools.beads.plate`: a whole plate: per-well MFI, per-analyte fits, QC, tables.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "BeadPanel",
    "BeadPlateResult",
    "CurveFit",
    "fit_curve",
    "identify_well",
    "load_panel",
    "run_bead_plate",
]

_WHERE = {
    "BeadPanel": "template",
    "load_panel": "template",
    "identify_well": "identify",
    "CurveFit": "curve",
    "fit_curve": "curve",
    "BeadPlateResult": "plate",
    "run_bead_plate": "plate",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f"flowtools.beads.{_WHERE[name]}"), name)
    msg = f"module 'flowtools.beads' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(__all__)
