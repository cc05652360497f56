"""Building blocks of :class:`flowtools.analysis.normalize.CytoNorm`: quantiles, splines, the model file.

* :func:`quantiles_t`: column quantiles by one sort per marker (numpy's linear rule);
  :func:`quantiles_sorted` the same on rows already sorted;
* :class:`_Spline`: one monotone map from a batch's quantiles to the goal quantiles, in plain numpy:
  the reference of the numba kernels ``build_tables`` / ``apply_tables`` / ``apply_blend``
  (:mod:`flowtools.analysis._normalize_kernels`), which build and apply many at once;
* :func:`soft_weights_ref`, :func:`blend_share_ref`: plain-numpy references of the soft
  cluster membership kernels;
* :func:`model_to_dict`, :func:`model_from_dict`, :func:`save_model`, :func:`load_model`: the
  JSON model file (format ``flowtools-cytonorm/2``; ``/1`` files, written before ``small_cluster``,
  still load, as ``small_cluster="global"``, the rule they were fitted with) with its provenance record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.errors import NormalizationError

FORMAT = "flowtools-cytonorm/2"
#: Model files written before ``small_cluster`` (every small cluster the global spline): still read.
FORMAT_V1 = "flowtools-cytonorm/1"
TABLE = 1025  # points of a spline's table
BLEND_THRESHOLD = 0.1  # an event is "blended" when its second cluster weighs at least this


def quantiles_t(xt: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Row quantiles of a marker-major array ``xt`` (n_markers, n_events): shape (n_markers, n_probs).

    numpy's default (linear) rule on one sort per marker. The sort runs in float32 (twice as
    fast; the values are transformed intensities, where float32's 7 digits are far finer than
    any quantile's sampling error); the interpolation in float64.
    """
    return quantiles_sorted(np.sort(np.asarray(xt, dtype=np.float32), axis=1), probs)


def quantiles_sorted(xs: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Row quantiles of ``xs`` whose rows are already sorted (numpy's linear rule; float64 interpolation)."""
    n = xs.shape[1]
    pos = probs * (n - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, n - 1)
    frac = pos - lo
    a, b = xs[:, lo].astype(np.float64), xs[:, hi].astype(np.float64)
    return a * (1.0 - frac) + b * frac


def _quantiles(x: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Column quantiles of an event-major array (n_events, n_markers): shape (n_probs, n_markers)."""
    return quantiles_t(np.ascontiguousarray(np.asarray(x).T, dtype=np.float32), probs).T


def _pchip(x: np.ndarray, y: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Monotone cubic (PCHIP, Fritsch-Butland slopes) through ``(x, y)`` at ``v`` within ``[x0, xn]``.

    The same curve as :class:`scipy.interpolate.PchipInterpolator` (a test checks); the
    reference of the numba ``build_tables``.
    """
    h = np.diff(x)
    m = np.diff(y) / h
    d = np.zeros_like(y)
    if x.size == 2:
        d[:] = m[0]
    else:
        w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
        same = (m[:-1] * m[1:]) > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            inner = (w1 + w2) / (w1 / m[:-1] + w2 / m[1:])
        d[1:-1] = np.where(same, inner, 0.0)
        for end, (h0, h1, m0, m1) in ((0, (h[0], h[1], m[0], m[1])), (-1, (h[-1], h[-2], m[-1], m[-2]))):
            e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
            if np.sign(e) != np.sign(m0):
                e = 0.0
            elif np.sign(m0) != np.sign(m1) and abs(e) > abs(3 * m0):
                e = 3 * m0
            d[end] = e
    k = np.clip(np.searchsorted(x, v, side="right") - 1, 0, x.size - 2)
    t = (v - x[k]) / h[k]
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * y[k] + (t3 - 2 * t2 + t) * h[k] * d[k]
            + (-2 * t3 + 3 * t2) * y[k + 1] + (t3 - t2) * h[k] * d[k + 1])


def _probs(quantiles: int | Sequence[float]) -> np.ndarray:
    if isinstance(quantiles, int | np.integer) and not isinstance(quantiles, bool):
        if quantiles < 3:
            msg = f"quantiles must be at least 3, not {quantiles}"
            raise ValueError(msg)
        return np.linspace(0.001, 0.999, int(quantiles))
    p = np.asarray(quantiles, dtype=np.float64)
    if p.ndim != 1 or p.size < 3 or np.any(np.diff(p) <= 0) or p[0] < 0 or p[-1] > 1:
        msg = "quantiles must be an int >= 3 or at least 3 increasing probabilities in [0, 1]"
        raise ValueError(msg)
    return p


# --------------------------------------------------------------------------------------------- splines


@dataclass
class _Spline:
    """A monotone map from a batch's quantiles ``x`` to the goal quantiles ``y``, tamed outside them.

    Plain numpy, one spline: the reference of the kernels that build and apply many at once.
    """

    x: np.ndarray
    y: np.ndarray
    lo: float  # output bound
    hi: float
    max_slope: float
    _fn: Any = field(default=None, repr=False, compare=False)  # the PCHIP's table, built on first use

    @classmethod
    def build(cls, xq: np.ndarray, yq: np.ndarray, *, limit: float, max_slope: float) -> _Spline:
        xq = np.asarray(xq, dtype=np.float64)
        yq = np.maximum.accumulate(np.asarray(yq, dtype=np.float64))  # goal quantiles: non-decreasing
        # Ties in the batch's quantiles (a pile of equal values): one knot, its goal values averaged.
        xu, start = np.unique(xq, return_index=True)
        yu = np.add.reduceat(yq, start) / np.diff(np.append(start, xq.size))
        span = float(yq[-1] - yq[0])
        span = span if span > 0 else 1.0
        return cls(xu, yu, float(yq[0] - limit * span), float(yq[-1] + limit * span), float(max_slope))

    def _end_slopes(self) -> tuple[float, float]:
        x, y = self.x, self.y
        k = max(1, (x.size - 1) // 10)  # secant over the outer tenth: robust to one noisy quantile
        lo = (y[k] - y[0]) / (x[k] - x[0])
        hi = (y[-1] - y[-1 - k]) / (x[-1] - x[-1 - k])
        clip = (1.0 / self.max_slope, self.max_slope)
        return float(np.clip(lo, *clip)), float(np.clip(hi, *clip))

    def table(self) -> tuple[float, float, float, float, float, np.ndarray]:
        """``(x0, xn, inv, slope_lo, slope_hi, values)``: the PCHIP tabulated on a uniform grid.

        Linear interpolation of the table is monotone too and within ~1e-6 of the cubic
        (1,025 points); the numba kernels and :meth:`__call__` both evaluate it.
        """
        if self._fn is None:
            x, y = self.x, self.y
            if x.size == 1:  # a single distinct value: a shift
                self._fn = (float(x[0]), float(x[0]), 0.0, 1.0, 1.0, np.full(TABLE, float(y[0])))
            else:
                gx = np.linspace(x[0], x[-1], TABLE)
                gy = np.maximum.accumulate(_pchip(x, y, gx))
                s_lo, s_hi = self._end_slopes()
                self._fn = (float(x[0]), float(x[-1]), (TABLE - 1) / float(x[-1] - x[0]), s_lo, s_hi, gy)
        return self._fn

    def __call__(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        x0, xn, inv, s_lo, s_hi, gy = self.table()
        t = np.nan_to_num((v - x0) * inv, nan=0.0)
        k = np.clip(t.astype(np.int64), 0, gy.size - 2)
        out = gy[k] + (t - k) * (gy[k + 1] - gy[k])
        out = np.where(v < x0, gy[0] + s_lo * (v - x0), out)
        out = np.where(v > xn, gy[-1] + s_hi * (v - xn), out)
        out = np.clip(out, self.lo, self.hi)
        return np.where(np.isnan(v), v, out)


def build_tables(xq: np.ndarray, yq: np.ndarray, *, limit: float, max_slope: float) -> tuple[np.ndarray, ...]:
    """Spline tables of many maps at once: ``xq``, ``yq`` of shape (..., n_probs).

    Returns
    -------
    tuple of ndarray
        ``(x0, xn, inv, slo, shi, blo, bhi, tab)``, each of shape ``xq.shape[:-1]`` (``tab``: plus
        the table's points): what ``apply_tables`` / ``apply_blend`` take.
    """
    from flowtools.analysis._normalize_kernels import build_tables as kernel

    lead = xq.shape[:-1]
    xs = np.ascontiguousarray(xq.reshape(-1, xq.shape[-1]), dtype=np.float64)
    ys = np.ascontiguousarray(yq.reshape(-1, yq.shape[-1]), dtype=np.float64)
    ns = xs.shape[0]
    scal = [np.empty(ns) for _ in range(7)]
    tab = np.empty((ns, TABLE))
    kernel(xs, ys, float(limit), float(max_slope), *scal, tab)
    return (*(a.reshape(lead) for a in scal), tab.reshape(*lead, TABLE))


# ------------------------------------------------------------------------- soft membership references


def soft_weights_ref(v: np.ndarray, codes: np.ndarray, node_cluster: np.ndarray, k: int,
                     sigma2: float) -> np.ndarray:
    """Soft cluster membership of every event (plain numpy), shape (n, k); rows sum to 1.

    A Gaussian kernel (variance ``sigma2``) of the event's squared distance to every SOM node,
    relative to its nearest node, summed over the nodes of each cluster; weights below
    ``MIN_WEIGHT`` dropped and the rest renormalised.
    """
    from flowtools.analysis._normalize_kernels import MIN_WEIGHT

    d2 = ((np.asarray(v, dtype=np.float64)[:, None, :] - codes[None, :, :]) ** 2).sum(axis=2)
    w = np.exp(-(d2 - d2.min(axis=1, keepdims=True)) / (2 * sigma2))
    onehot = np.zeros((codes.shape[0], k))
    onehot[np.arange(codes.shape[0]), node_cluster] = 1.0
    w = w @ onehot
    w = w / w.sum(axis=1, keepdims=True)
    w[w < MIN_WEIGHT] = 0.0  # as the kernel: negligible clusters dropped, the rest renormalised
    return w / w.sum(axis=1, keepdims=True)


def blend_share_ref(v: np.ndarray, codes: np.ndarray, node_cluster: np.ndarray, k: int, sigma2: float,
                    thr: float = BLEND_THRESHOLD) -> float:
    """Share of events whose second-largest soft weight is at least ``thr`` (plain numpy)."""
    w = np.sort(soft_weights_ref(v, codes, node_cluster, k, sigma2), axis=1)
    return float(np.mean(w[:, -2] >= thr)) if k > 1 and w.shape[0] else 0.0


# ---------------------------------------------------------------------------------------- model file


def _arr(a: np.ndarray | None) -> Any:
    if a is None:
        return None
    return np.where(np.isnan(a), None, np.round(a, 10)).tolist()  # NaN -> null (valid JSON)


def model_to_dict(model: Any) -> dict[str, Any]:
    """A fitted :class:`CytoNorm` as JSON-ready data."""
    return {
        "format": FORMAT, "params": model.get_params(), "batches": model.batches_,
        "markers": model.markers_,
        "probs": model.probs_.tolist(), "n_clusters": model.n_clusters_, "n_events": model.n_events_,
        "anchor_files": model.anchor_files_,
        "sigma2": float(model.sigma2_), "blend_share": float(model.blend_share_), "codes": _arr(model.codes_),
        "node_cluster": None if model.node_cluster_ is None else model.node_cluster_.tolist(),
        "quantiles": _arr(model.quantiles_), "global_quantiles": _arr(model.global_quantiles_),
        "goal": _arr(model.goal_), "global_goal": _arr(model.global_goal_),
        "fallbacks": model.fallbacks_, "cluster_cv": model.cluster_cv_,
        "cluster_map": model.cluster_map_, "small_clusters": model.small_clusters_,
    }


def model_from_dict(cls: type, d: Mapping[str, Any], *, where: str = "model") -> Any:
    """Rebuild a fitted model of class ``cls`` from :func:`model_to_dict` data."""
    fmt = d.get("format")
    if fmt not in (FORMAT, FORMAT_V1):
        msg = (f"{where}: not a flowtools normalisation model this version reads (format {fmt!r}, "
               f"expected {FORMAT!r} or {FORMAT_V1!r}); refit it with `flowtools normalize fit`")
        raise NormalizationError(msg)
    params = d.get("params")
    if fmt == FORMAT_V1 and isinstance(params, Mapping):
        if "small_cluster" in params:
            msg = f"{where}: a {FORMAT_V1!r} model cannot have the small_cluster parameter"
            raise NormalizationError(msg)
        params = {**params, "small_cluster": "global"}  # what every /1 model did with a small cluster
    try:
        self = cls(**params)

        def arr(v: Any) -> np.ndarray:
            return np.array(v, dtype=np.float64)  # null -> nan

        self.batches_, self.markers_ = list(d["batches"]), list(d["markers"])
        self.probs_ = arr(d["probs"])
        self.n_clusters_ = int(d["n_clusters"])
        self.n_events_ = dict(d["n_events"])
        self.anchor_files_ = {str(b): int(v) for b, v in (d.get("anchor_files") or {}).items()}
        self.codes_ = None if d["codes"] is None else arr(d["codes"])
        self.sigma2_ = float(d.get("sigma2", 0.0))
        self.blend_share_ = float(d.get("blend_share", 0.0))
        nc = d["node_cluster"]
        self.node_cluster_ = None if nc is None else np.array(nc, dtype=np.int64)
        self.quantiles_ = arr(d["quantiles"])
        self.global_quantiles_ = arr(d["global_quantiles"])
        self.goal_ = arr(d["goal"])
        self.global_goal_ = arr(d["global_goal"])
        self.fallbacks_ = list(d["fallbacks"])
        self.cluster_cv_ = dict(d["cluster_cv"])
        if fmt == FORMAT_V1:  # a NaN quantile row was a cluster that fell back to the global spline
            fell = np.isnan(self.quantiles_[:, :, 0, 0]) | np.isnan(self.goal_[:, 0, 0])[None]
            self.cluster_map_ = [["global" if f else "spline" for f in row] for row in fell.tolist()]
            self.small_clusters_ = [{"cluster": c, "map": "global"}
                                    for c in sorted({int(f["cluster"]) for f in self.fallbacks_})]
        else:
            self.cluster_map_ = [[str(v) for v in row] for row in d["cluster_map"]]
            self.small_clusters_ = list(d["small_clusters"])
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"{where}: the normalisation model is incomplete or malformed ({exc!r})"
        raise NormalizationError(msg) from None
    nb, nm = len(self.batches_), len(self.markers_)
    if self.quantiles_.shape != (nb, self.n_clusters_, nm, self.probs_.size) or \
            [len(row) for row in self.cluster_map_] != [self.n_clusters_] * nb:
        msg = f"{where}: the model's quantile table does not match its batches and markers"
        raise NormalizationError(msg)
    self._reset_cache()
    return self


def dumps_model(doc: Mapping[str, Any]) -> str:
    """The model document as JSON: one top-level key a line, each value by the C encoder.

    (``json.dumps(indent=...)`` falls back to the pure-Python encoder: ~10x slower on the
    quantile tables.)
    """
    lines = [f"{json.dumps(str(k))}: {json.dumps(v, allow_nan=False)}" for k, v in doc.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def save_model(model: Any, path: str | os.PathLike[str], provenance: Mapping[str, Any] | None) -> Path:
    """Write ``model`` (and ``provenance``) as JSON, atomically."""
    from flowtools.provenance import atomic_write_text

    doc = {**model_to_dict(model), "provenance": dict(provenance or {})}
    atomic_write_text(path, dumps_model(doc))
    return Path(path)


def load_model(cls: type, path: str | os.PathLike[str]) -> Any:
    """Read a model written by :func:`save_model`; ``model.provenance_`` holds its provenance record."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"{p}: normalisation model not found"
        raise NormalizationError(msg) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{p}: cannot read the normalisation model: {exc}"
        raise NormalizationError(msg) from None
    if not isinstance(doc, dict):
        msg = f"{p}: not a flowtools normalisation model"
        raise NormalizationError(msg)
    model = model_from_dict(cls, doc, where=str(p))
    model.provenance_ = dict(doc.get("provenance") or {})
    return model
