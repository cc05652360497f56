"""Imported once by the batch runner's fork server: load and warm what gating a sample needs.

Plate workers are forked from that server (:func:`flowtools.pipeline.executor._mp_context`), so
each one starts with the modules imported and the numba kernels loaded.
"""

import flowtools.pipeline.tasks  # noqa: F401 - what a worker runs, imported once here
from flowtools.pipeline.executor import _warm_worker

_warm_worker()
