"""Plain-numpy references for the gating kernels."""

from __future__ import annotations

import numpy as np


def polygon_ref(x: np.ndarray, y: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd rule, one edge at a time, vectorised over points."""
    inside = np.zeros(x.shape[0], dtype=bool)
    v = np.asarray(vertices, dtype=np.float64)
    m = len(v)
    for k in range(m):
        xi, yi = v[k]
        xj, yj = v[k - 1]
        straddle = (yi > y) != (yj > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (xj - xi) * (y - yi) / (yj - yi) + xi
        inside ^= straddle & (x < xc)
    return inside


def ellipsoid_ref(values: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray, dist2: float) -> np.ndarray:
    d = values - mean
    q = np.einsum("ij,jk,ik->i", d, inv_cov, d)
    return q <= dist2


def rectangle_ref(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.all((values >= lo) & ((values < hi) | (hi == np.inf)), axis=1)


def strategy_masks_ref(strategy, events, channels, fcs_matrix=None, columns=None) -> dict[str, np.ndarray]:
    """Every population's mask, computed the plain way: whole columns, numpy rules, parents last.

    Compensation goes through the public ``SpilloverMatrix.apply``/``unmix`` (its kernel has its
    own reference, ``compensation_ref``); every transform is applied to whole columns with
    ``apply``; gates use the references above. No blocks, no partial transforms, no lineage.
    """
    from flowtools.gating.gates import (
        FCS_COMPENSATION,
        UNCOMPENSATED,
        BooleanGate,
        EllipsoidGate,
        PolygonGate,
        QuadrantGate,
        RectangleGate,
    )

    x = np.asarray(events)
    columns = dict(columns or {})
    index = {c: i for i, c in enumerate(channels)}
    cache: dict = {}

    def matrix(ref):
        if ref == UNCOMPENSATED:
            return None
        if ref == FCS_COMPENSATION:
            return fcs_matrix
        return strategy.matrices[ref]

    def base(comp, name):
        if name in columns:
            return np.asarray(columns[name], dtype=np.float64)
        m = matrix(comp)
        if m is None:
            return np.asarray(x[:, index[name]], dtype=np.float64)
        if m.is_spectral or tuple(m.fluorochromes) != tuple(m.detectors):
            if ("unmix", comp) not in cache:
                cache[("unmix", comp)] = m.unmix(x, channels)
            data, names = cache[("unmix", comp)]
            if name in names:
                return data[:, names.index(name)]
            return np.asarray(x[:, index[name]], dtype=np.float64)
        if ("apply", comp) not in cache:
            cache[("apply", comp)] = m.apply(x, channels)
        return cache[("apply", comp)][:, index[name]]

    def values(d):
        if d.ratio:
            r = strategy.transforms[d.name]
            v = r.transform.apply(base(d.compensation, r.numerator), base(d.compensation, r.denominator))
        else:
            v = base(d.compensation, d.name)
        if d.transform is not None:
            v = strategy.transforms[d.transform].apply(v)
        return np.asarray(v, dtype=np.float64)

    masks: dict[str, np.ndarray] = {}
    n = x.shape[0]
    for pid in strategy.order:
        pop = strategy.population(pid)
        g = pop.gate
        parent = masks[pop.parent] if pop.parent is not None else np.ones(n, dtype=bool)
        if isinstance(g, BooleanGate):
            terms = [~masks[r] if c else masks[r] for r, c in g.refs]
            m = ~terms[0] if g.op == "not" else (
                np.logical_and.reduce(terms) if g.op == "and" else np.logical_or.reduce(terms))
        elif isinstance(g, RectangleGate | QuadrantGate):
            if isinstance(g, RectangleGate):
                dims = g.dimensions
                lo = [-np.inf if v is None else float(v) for v in g.mins]
                hi = [np.inf if v is None else float(v) for v in g.maxs]
            else:
                q = next(q for q in g.quadrants if q.id == pop.quadrant)
                bounds = g.bounds(q)
                dims = [div.dimension for div, _, _ in bounds]
                lo = [float(b[1]) for b in bounds]
                hi = [float(b[2]) for b in bounds]
            vals = np.column_stack([values(d) for d in dims]) if dims else np.empty((n, 0))
            m = rectangle_ref(vals, np.array(lo), np.array(hi))
        elif isinstance(g, PolygonGate):
            vertices = np.array(g.vertices, dtype=float)
            m = polygon_ref(values(g.dimensions[0]), values(g.dimensions[1]), vertices)
        elif isinstance(g, EllipsoidGate):
            vals = np.column_stack([values(d) for d in g.dimensions])
            m = ellipsoid_ref(vals, np.array(g.mean, dtype=float), np.asarray(g.inverse_covariance),
                              g.distance_square)
        else:
            raise TypeError(type(g).__name__)
        masks[pid] = m & parent
    return masks
