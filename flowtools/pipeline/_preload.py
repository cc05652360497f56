"""Imported once by the batch runner's fork server: load and warm what gating a sample needs.

Plate workers are forked from that server (:func:`flowtools.pipeline.plate._mp_context`), so
each one starts with the modules imported and the numba kernels loaded.
"""

from flowtools.pipeline.plate import _warm_worker

_warm_worker()
