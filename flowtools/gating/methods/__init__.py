"""Data-driven gating methods: compute a gate's geometry from the events of its parent.

A method is a function registered under a name with :func:`register`. It
receives the parent population's values on the gate's dimensions (already
compensated and transformed, as the template says) and typed keyword
arguments, and returns a :data:`Geometry`: a plain description of the gate in
those coordinates. The template resolver turns the geometry into an engine
gate (rectangle, polygon, ellipsoid, quadrants), so every resolved gate is an
ordinary Gating-ML 2.0 gate that any tool can re-apply.

Registering a new method::

    @register("mymethod", dims=1, args={"q": ArgSpec(float, 0.5, lo=0.0, hi=1.0)})
    def mymethod(values: np.ndarray, ctx: MethodContext, *, q: float) -> Geometry:
        return Interval(lo=float(np.quantile(values[:, 0], q)), hi=None)

Built-in methods (one module each, registered when this package is imported)
-------------------------------------------------------------------------------
mindensity, tail, quantile, quad (:mod:`.density`)
    Cut at the deepest density valley between the two most prominent peaks
    (openCyto ``mindensity``); where the main peak's tail falls below a share
    of its height (openCyto ``tailgate``); at a quantile; quadrant cuts from
    ``mindensity`` on each axis (or fixed values).
singlet (:mod:`.singlet`)
    A band along the area/height singlet line (doublets fall outside).
boundary (:mod:`.boundary`)
    Drop events piled at the range limits (margin events).
gmm (:mod:`.mixture`)
    One component of a Gaussian mixture, as an ellipse (flowClust-like).
qc (:mod:`.qc`)
    Time windows free of flow-rate gaps and signal shifts (PeacoQC/flowAI-like).

Common rules of the built-in methods
------------------------------------
- They receive float64 values of shape ``(n, d)`` and work from the data and
  ``ctx.ranges`` only: they assume no particular scale (logicle 0..1 or
  0..4.5, linear scatter 0..262144 or 0..1).
- Rows with a NaN or infinite value are ignored (they are never inside a gate).
- A gate that cannot be computed (no events, too few distinct values, no
  spread) raises :class:`~flowtools.errors.GatingError` naming the population.
- Randomness (subsampling, mixture initialisation) comes from ``ctx.seed``
  only: the same data and seed give the same geometry.
"""

from __future__ import annotations

from flowtools.gating.methods.registry import _REGISTRY as _REGISTRY
from flowtools.gating.methods.registry import REQUIRED as REQUIRED
from flowtools.gating.methods.registry import (
    ArgSpec,
    Decision,
    Ellipse,
    Geometry,
    Interval,
    MethodContext,
    MethodSpec,
    Polygon,
    Quadrants,
    Rectangle,
    TimeWindows,
    get_method,
    methods,
    register,
)
from flowtools.gating.methods.registry import MethodFn as MethodFn

# isort: off
# The built-in methods register themselves as their modules are imported, in this order.
from flowtools.gating.methods import density as density
from flowtools.gating.methods import singlet as singlet
from flowtools.gating.methods import boundary as boundary
from flowtools.gating.methods import mixture as mixture
from flowtools.gating.methods import qc as qc

# isort: on

__all__ = [
    "ArgSpec",
    "Decision",
    "Ellipse",
    "Geometry",
    "Interval",
    "MethodContext",
    "MethodSpec",
    "Polygon",
    "Quadrants",
    "Rectangle",
    "TimeWindows",
    "get_method",
    "methods",
    "register",
    "warm_up",
]


def warm_up() -> None:
    """Run every built-in method once on a small two-cluster sample, so its kernels load now.

    Kernels are compiled (or read from numba's cache) per argument type and memory layout:
    each method runs with its defaults and, where it takes one, a search range, on C- and
    non-contiguous values. User-registered methods are not run. A method that rejects this
    sample is skipped; the warm-up never raises for it.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1.0, 0.2, (300, 3)), rng.normal(3.0, 0.3, (300, 3))])
    x[:, 0] = np.abs(x[:, 0]) + 1.0
    for spec in methods().values():
        d = max((k for k in spec.dims if k <= 3), default=0)
        if not d or not spec.fn.__module__.startswith("flowtools."):
            continue
        ctx = MethodContext("warm-up", tuple("abc"[:d]), ((0.0, 5.0),) * d, 0)
        arg_sets = [{}, {"range": [0.5, 4.0]}] if "range" in spec.args else [{}]
        for args in arg_sets:
            for values in (np.ascontiguousarray(x[:, :d]), x[:, :d]):
                try:
                    spec.fn(values, ctx, **spec.check_args(args, "warm-up"))
                except Exception:  # noqa: BLE001, S112 - a method that needs arguments, or rejects this sample
                    continue
    from flowtools.gating.methods import _density_kernels

    _density_kernels.restrict(x[:, 1], 0.5, 4.0)  # a strided column (quad's x_range): compiled per layout
    if "qc" in methods():
        # the radix argsort of qc and singlet runs on large parents only (not on this small
        # sample); one warm-up step compiles it (a cold cache's helpers run steps in parallel)
        from flowtools.gating.methods import _sort_kernels

        _sort_kernels.argsort_f64(np.ascontiguousarray(x[:, 0]))
