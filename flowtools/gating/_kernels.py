"""Moved to :mod:`flowtools.gating.engine._kernels` (re-exported while callers move)."""

from flowtools.gating.engine._kernels import *  # noqa: F403
