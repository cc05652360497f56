"""Evaluate a gating strategy on a sample: masks and counts per population.

:class:`~flowtools.gating.engine.plan.Plan` is the one evaluator: block-wise for
gating a file (:func:`gate_events`, :func:`gate_sample`), whole-column where values
are read or populations added (template resolution, MFIs, plots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from flowtools.compensation import SpilloverMatrix
from flowtools.gating.engine.plan import BLOCK_ROWS, Plan
from flowtools.gating.engine.result import GatingResult
from flowtools.gating.gates import FCS_COMPENSATION
from flowtools.gating.strategy import GatingStrategy

if TYPE_CHECKING:
    from flowtools.io.fcs import FCSSample

__all__ = ["BLOCK_ROWS", "GatingResult", "Plan", "gate_events", "gate_sample", "sample_events", "warm_up"]


def gate_events(
    strategy: GatingStrategy,
    events: np.ndarray,
    channels: Sequence[str],
    *,
    fcs_matrix: SpilloverMatrix | None = None,
    sample_id: str | None = None,
    columns: Mapping[str, np.ndarray] | None = None,
    block_rows: int = BLOCK_ROWS,
) -> GatingResult:
    """Evaluate a strategy on an event matrix of scale values.

    Parameters
    ----------
    strategy : GatingStrategy
    events : ndarray, shape (n_events, n_channels)
        Scale values (gain, log and time-step scaling applied; see
        :meth:`FCSSample.as_array` with ``preprocess=True``), uncompensated.
    channels : sequence of str
        ``$PnN`` of the columns.
    fcs_matrix : SpilloverMatrix, optional
        What compensation ``"FCS"`` means (the file's own matrix); None means
        the file has none, and ``"FCS"`` is then uncompensated.
    sample_id : str, optional
    columns : mapping of str to ndarray of float64, optional
        Scaled values that replace some channels of ``events`` (``$PnN`` -> column),
        for events whose other channels need no scaling (see
        :meth:`FCSSample.scaled_events`); never detectors of a matrix in use.
    block_rows : int, default BLOCK_ROWS
        Rows per block (the masks do not depend on it).

    Returns
    -------
    GatingResult

    Raises
    ------
    ChannelError
        A gate needs a parameter the events do not have.
    """
    x = np.asarray(events)
    plan = Plan(
        strategy, x, channels, fcs_matrix, columns, where=sample_id or "sample", block_rows=block_rows
    )
    return GatingResult(strategy, plan.n, plan.run(), sample_id)


def sample_events(
    strategy: GatingStrategy, sample: FCSSample, fcs_matrix: SpilloverMatrix | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A sample's scaled events for a plan: the stored matrix plus scaled columns where possible.

    Channels that need scaling (time step, gain, log) may be replaced column-wise
    only when no matrix the strategy can use compensates them (see
    :meth:`FCSSample.scaled_events`).
    """
    detectors = set(fcs_matrix.detectors) if fcs_matrix is not None else set()
    for m in strategy.matrices.values():
        detectors.update(m.detectors)
    return sample.scaled_events(keep_raw=sorted(detectors))


def gate_sample(strategy: GatingStrategy, sample: FCSSample, *, sample_id: str | None = None) -> GatingResult:
    """Evaluate a strategy on an FCS sample (scale values; ``"FCS"`` = the file's own spillover)."""
    fcs_matrix = None
    if sample.spillover is not None and any(c == FCS_COMPENSATION for c, _ in strategy.channels_used()):
        fcs_matrix = SpilloverMatrix.from_fcs(sample)
    name = sample_id or (sample.path.name if sample.path is not None else None)
    events, columns = sample_events(strategy, sample, fcs_matrix)
    return gate_events(strategy, events, sample.pnn, fcs_matrix=fcs_matrix, sample_id=name, columns=columns)


def warm_up() -> None:
    """Load the gate kernels (compiled, or read from numba's cache) now rather than in a first sample."""
    from flowtools.gating.engine import _kernels  # noqa: F401 - its signatures load on import
