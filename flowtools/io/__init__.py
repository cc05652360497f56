"""Input and output: FCS files and sample sheets."""

from __future__ import annotations

from flowtools.io.fcs import Channel, FCSSample, Spillover, count_datasets, read_fcs
from flowtools.io.fcs_write import write_fcs

__all__ = ["Channel", "FCSSample", "Spillover", "count_datasets", "read_fcs", "write_fcs"]
