"""flowtools: FCS files to trustworthy immune-cell population tables, and those tables to answers.

Public names are loaded lazily (PEP 562) so that ``import flowtools`` stays
cheap: it loads no numba, matplotlib or command-line machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from flowtools._version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from flowtools.io.fcs import FCSSample, read_fcs
    from flowtools.io.fcs_write import write_fcs
    from flowtools.io.sample_sheet import SampleSheet, read_sample_sheet

__all__ = ["FCSSample", "SampleSheet", "__version__", "read_fcs", "read_sample_sheet", "write_fcs"]

_LAZY = {
    "FCSSample": "flowtools.io.fcs",
    "read_fcs": "flowtools.io.fcs",
    "write_fcs": "flowtools.io.fcs_write",
    "SampleSheet": "flowtools.io.sample_sheet",
    "read_sample_sheet": "flowtools.io.sample_sheet",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'flowtools' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
