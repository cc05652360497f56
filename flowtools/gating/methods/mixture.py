"""The ``gmm`` method: one component of a Gaussian mixture, as an ellipse (flowClust-like).

The mixture is fitted as scikit-learn's ``GaussianMixture(covariance_type="full")``
does (k-means++ seeding with the same ``RandomState`` draws, Lloyd k-means, then
EM), by flowtools' own code: numpy here, and the numba kernels of
:mod:`flowtools.gating.methods._kmeans_kernels` and
:mod:`flowtools.gating.methods._mixture_kernels` (imported on first use) for the
per-event loops.
"""

from __future__ import annotations

import logging
import math
from statistics import NormalDist
from typing import Any

import numpy as np

from flowtools.errors import GatingError
from flowtools.gating.methods._common import _fail, _finite_rows, _robust_center_scale, _subsample
from flowtools.gating.methods.registry import ArgSpec, Ellipse, MethodContext, register

__all__ = ["gmm"]

_log = logging.getLogger(__name__)

_TARGETS = ("largest", "highest_x", "lowest_x", "highest_y", "lowest_y", "highest_z", "lowest_z")
_GMM_REG_COVAR = 1e-4
_GMM_TOL = 1e-3
_GMM_MAX_ITER = 300
_KMEANS_TOL = 1e-4
_KMEANS_MAX_ITER = 300


def _chi2_ppf(p: float, d: int) -> float:
    """Quantile of the chi-square distribution with d = 1, 2 or 3 degrees of freedom (stdlib only)."""
    if d == 1:
        return NormalDist().inv_cdf((1.0 + p) / 2.0) ** 2
    if d == 2:
        return -2.0 * math.log1p(-p)

    def cdf3(x: float) -> float:
        return math.erf(math.sqrt(x / 2.0)) - math.sqrt(2.0 * x / math.pi) * math.exp(-x / 2.0)

    lo, hi = 0.0, 200.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf3(mid) < p else (lo, mid)
    return 0.5 * (lo + hi)


def _has_distinct_rows(z: np.ndarray, k: int) -> bool:
    """Whether ``z`` has at least ``k`` distinct rows (O(k n), without sorting the rows).

    Distinct as ``!=`` on some column; the rows are counted by elimination in one streaming
    pass, which usually stops within the first few rows.
    """
    if k <= 1:
        return z.shape[0] > 0
    from flowtools.gating.methods import _mixture_kernels as K

    return bool(K.distinct_rows_at_least(np.ascontiguousarray(z, dtype=np.float64), k))


def _kmeans_plusplus(x: np.ndarray, k: int, sq_norms: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
    """k-means++ seeding, step for step scikit-learn's ``_kmeans_plusplus`` (unit weights, same draws).

    The matrix products are numpy's (BLAS), as in scikit-learn; the elementwise distance
    steps around them run in one kernel, in place.
    """
    from flowtools.gating.methods import _kmeans_kernels as KM

    n = x.shape[0]
    weight = np.ones(n)
    trials = 2 + int(np.log(k))
    centers = np.empty((k, x.shape[1]))
    first = rs.choice(n, p=weight / weight.sum())
    centers[0] = x[first]
    xt = x.T

    def sq_dist(c: np.ndarray, closest: np.ndarray | None) -> np.ndarray:
        # sklearn's _euclidean_distances(c, x, squared=True), then the minimum with closest
        d = c @ xt
        low = d[0] if closest is None else closest.reshape(-1)  # closest is (1, n) at first
        KM.kpp_sq_dist(d, np.einsum("ij,ij->i", c, c), sq_norms, low, closest is not None)
        return d

    closest = sq_dist(centers[0, np.newaxis], None)
    pot = closest @ weight
    for c in range(1, k):
        draws = rs.uniform(size=trials) * pot
        cand = np.searchsorted(np.cumsum(closest), draws)  # weight * closest is closest
        np.clip(cand, None, closest.size - 1, out=cand)
        dist = sq_dist(x[cand], closest)
        cand_pot = dist @ weight.reshape(-1, 1)
        best = np.argmin(cand_pot)
        pot = cand_pot[best]
        closest = dist[best]
        centers[c] = x[cand[best]]
    return centers


def _fit_mixture(z: np.ndarray, k: int, seed: int) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """A full-covariance Gaussian mixture fitted as scikit-learn's ``GaussianMixture`` does.

    ``GaussianMixture(k, covariance_type="full", reg_covar=1e-4, max_iter=300,
    random_state=seed).fit(z)``: k-means labels (``KMeans(k, n_init=1,
    random_state=RandomState(seed))``: k-means++ seeding, then Lloyd iterations on
    the mean-centred data) start the EM. Same steps, same random draws; sums are
    taken in a different order, so parameters agree with scikit-learn's to rounding.

    Returns
    -------
    (status, n_iter, weights, means, covariances)
        status 1 converged, 0 not converged, -1 a covariance was not positive definite.
    """
    from flowtools.gating.methods import _kmeans_kernels as KM
    from flowtools.gating.methods import _mixture_kernels as K

    rs = np.random.RandomState(seed)
    z = np.ascontiguousarray(z, dtype=np.float64)
    if z.shape[1] >= 2:
        # numpy's axis-0 mean and variance, the centred events and their squared norms, in
        # numpy's summation order (a (n, 1) array is summed pairwise: numpy's own below).
        xc, var, sq_norms = KM.center_columns(z)
        tol = float(np.mean(var)) * _KMEANS_TOL
        if z.shape[1] != 2:  # einsum's own summation order of three products
            sq_norms = np.einsum("ij,ij->i", xc, xc)
    else:
        tol = float(np.mean(np.var(z, axis=0))) * _KMEANS_TOL
        xc = z - z.mean(axis=0)
        sq_norms = np.einsum("ij,ij->i", xc, xc)
    centers = _kmeans_plusplus(xc, k, sq_norms, rs)
    labels = np.empty(z.shape[0], dtype=np.int64)
    KM.kmeans_lloyd(xc, centers, tol, _KMEANS_MAX_ITER, labels)
    d = z.shape[1]
    weights, means, covs = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    status, n_iter, _ = K.gmm_em(z, labels, _GMM_REG_COVAR, _GMM_TOL, _GMM_MAX_ITER, weights, means, covs)
    return int(status), int(n_iter), weights, means, covs


class _TargetSpec(ArgSpec):
    """``target``: a keyword (``largest``, ``highest_x``...) or a point [x, y(, z)] (nearest mean)."""

    def check(self, name: str, value: Any, where: str) -> Any:  # noqa: D102 - see class docstring
        if isinstance(value, list | tuple):
            if not 1 <= len(value) <= 3:
                msg = f"{where}: argument {name!r} as a point needs 1 to 3 numbers, got {value!r}"
                raise GatingError(msg)
            return tuple(self._number(name, v, where, float) for v in value)
        return super().check(name, value, where)


@register(
    "gmm",
    dims=(1, 2, 3),
    args={
        "k": ArgSpec(int, 2, lo=1, hi=12, doc="number of mixture components"),
        "target": _TargetSpec(
            str,
            "largest",
            choices=_TARGETS,
            doc="component to gate: a keyword or a point [x, y] (nearest mean)",
        ),
        "level": ArgSpec(float, 0.95, lo=0.01, hi=0.9999, doc="probability mass of the ellipse (chi-square)"),
        "max_events": ArgSpec(
            int, 20_000, lo=100, hi=10_000_000, doc="events used to fit (seeded subsample)"
        ),
    },
)
def gmm(
    values: np.ndarray,
    ctx: MethodContext,
    *,
    k: int,
    target: str | tuple[float, ...],
    level: float,
    max_events: int,
) -> Ellipse:
    """One component of a Gaussian mixture, as its ``level`` ellipse (flowClust-like).

    Fits the model of scikit-learn's ``GaussianMixture(covariance_type="full",
    reg_covar=1e-4, max_iter=300, random_state=ctx.seed)`` (k-means++ / Lloyd
    k-means initialisation, then EM until the mean log-likelihood changes by less
    than 1e-3) on a seeded subsample of at most ``max_events`` events, in robustly
    standardised coordinates. The fit is flowtools' own (:func:`_fit_mixture`,
    numba kernels): the same algorithm and random draws as scikit-learn, agreeing
    with it to rounding (~1e-12). The target is the component with the largest
    weight, the highest/lowest mean on an axis, or the mean nearest a given point.

    Parameters
    ----------
    values : ndarray of float64, shape (n, d), d in 1..3
    ctx : MethodContext

    Returns
    -------
    Ellipse
        ``distance_square`` is the chi-square quantile of ``level`` with d degrees of freedom.
    """
    full = _finite_rows(values, ctx, "gmm", min_n=max(10, 5 * k))
    d = full.shape[1]
    if isinstance(target, tuple) and len(target) != d:
        raise _fail(
            ctx, "gmm", f"target point {list(target)} has {len(target)} coordinates for {d} dimensions"
        )
    if isinstance(target, str) and target != "largest" and "xyz".index(target[-1]) >= d:
        raise _fail(ctx, "gmm", f"target {target!r} needs {'xyz'.index(target[-1]) + 1} dimensions, got {d}")
    x = _subsample(full, max_events, ctx.seed)
    center, scale = np.empty(d), np.empty(d)
    for j in range(d):
        center[j], mad_sd = _robust_center_scale(x[:, j])
        scale[j] = mad_sd or float(np.std(x[:, j]))
    if not np.all(scale > 0):
        raise _fail(ctx, "gmm", "a dimension has no spread (all values identical)")
    from flowtools.gating.methods import _mixture_kernels as K

    z = K.standardize(x, center, scale)  # (x - center) / scale
    if not _has_distinct_rows(z, k):
        raise _fail(ctx, "gmm", f"fewer distinct events than components (k={k})")
    try:
        status, n_iter, weights, mix_means, mix_covs = _fit_mixture(z, k, ctx.seed)
    except ValueError as exc:  # e.g. a seed that numpy's RandomState does not take
        raise _fail(ctx, "gmm", f"the mixture fit failed ({exc})") from None
    if status < 0:
        raise _fail(ctx, "gmm", "the mixture fit failed (a component's covariance is not positive definite)")
    if status == 0:
        _log.warning("%s: gmm did not converge in %d iterations", ctx.population, n_iter)
    means = mix_means * scale + center
    if isinstance(target, tuple):
        pick = int(np.argmin(((means - np.asarray(target)) ** 2).sum(axis=1)))
    elif target == "largest":
        pick = int(np.argmax(weights))
    else:
        col = means[:, "xyz".index(target[-1])]
        pick = int(np.argmax(col) if target.startswith("highest") else np.argmin(col))
    cov = mix_covs[pick] * np.outer(scale, scale)
    ctx.note(rule=f"component {pick + 1} of {k} (target {target}) at level {level:g}",
             weights=[float(w) for w in weights], means=[[float(v) for v in m] for m in means],
             picked=pick, converged=bool(status != 0), iterations=int(n_iter))
    if status == 0:
        ctx.fall_back(f"the mixture did not converge in {n_iter} iterations: the last estimate is used")
    return Ellipse(
        tuple(float(m) for m in means[pick]),
        tuple(tuple(float(c) for c in row) for row in cov),
        _chi2_ppf(level, d),
    )
