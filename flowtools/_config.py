"""Environment switches, read once. Importing this module changes nothing.

FLOWTOOLS_NUMBA_CACHE
    ``0`` disables numba's on-disk cache of compiled kernels (default ``1``:
    a second process reuses the machine code instead of recompiling).
FLOWTOOLS_NUM_THREADS
    Upper bound for parallel kernels (default: numba's own choice).
FLOWTOOLS_COMPILE_JOBS
    Processes that compile the numba kernels in parallel when a batch run finds numba's cache
    cold (a new install or machine; default: the run's worker count, at most the CPUs; ``1``:
    the fork server compiles them alone, as before).
"""

from __future__ import annotations

import os

__all__ = ["COMPILE_JOBS", "NUMBA_CACHE", "NUM_THREADS"]


def _flag(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() not in ("0", "false", "no", "off")


def _int_or_none(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


NUMBA_CACHE: bool = _flag("FLOWTOOLS_NUMBA_CACHE", default=True)
NUM_THREADS: int | None = _int_or_none("FLOWTOOLS_NUM_THREADS")
COMPILE_JOBS: int | None = _int_or_none("FLOWTOOLS_COMPILE_JOBS")
