"""Figures. matplotlib is imported inside each function (never at ``import flowtools``)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.provenance import atomic_write_bytes

__all__ = ["delta_heatmap", "gate_plots"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless, deterministic
    import matplotlib.pyplot as plt

    return plt


def delta_heatmap(
    rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str = "change in % of parent"
) -> None:
    """Heatmap of ``delta`` (new - old, points) by sample (rows) and population (columns), written as PNG."""
    plt = _pyplot()
    samples = list(dict.fromkeys(r["sample_id"] for r in rows))
    pops = list(dict.fromkeys(r["population"] for r in rows))
    grid = np.full((len(samples), len(pops)), np.nan)
    for r in rows:
        grid[samples.index(r["sample_id"]), pops.index(r["population"])] = r["delta"]
    lim = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    lim = lim or 1.0
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(pops) + 3), max(3, 0.3 * len(samples) + 2)), dpi=100)
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(len(pops)), [p.split("/")[-1] for p in pops], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(samples)), samples, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="points")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------ gate plots

_BINS_2D = 256
_BINS_1D = 128
_GATE_COLOUR = "#d62728"
_TEXT = {
    "fontsize": 7,
    "color": "black",
    "bbox": {"boxstyle": "round,pad=0.2", "fc": "white", "ec": "0.6", "alpha": 0.85},
}
_FIGSIZE = (4.0, 4.0)
_DPI = 80
# Fixed margins, not tight_layout (~30% of a gate plot's time: ~20 of ~70 ms): the widest that
# tight_layout chose over a 16-file plate's 257 gate plots (left 0.14-0.17, right 0.95-0.96, bottom
# 0.13, top 0.88 with the two-line title); tick labels stay short (_tick_text: 50k, 0.25).
_MARGINS = {"left": 0.175, "right": 0.945, "bottom": 0.132, "top": 0.877}


def gate_plots(
    sample: Any,
    strategy: Any,
    result: Any,
    out_dir: str | os.PathLike[str],
    *,
    labels: Mapping[str, str] | None = None,
    decisions: Mapping[str, Mapping[str, Any]] | None = None,
    status: Mapping[str, str] | None = None,
    column: Any = None,
) -> list[Path]:
    """Draw every geometric gate of a strategy on its parent's events, one PNG per gate.

    Each figure shows the parent population's events on the gate's dimensions,
    compensated and transformed exactly as the gate sees them (the values come
    from the gating engine), as a log-density 2-D histogram (256 x 256 bins) or,
    for a 1-D gate, a histogram; the gate is drawn on top (rectangle or range
    edges, polygon, ellipse outline, quadrant dividers). The title gives the
    population's name, its % of parent and its count; a quadrant gate gives one
    figure with every quadrant's % in its corner. Boolean gates have no
    geometry and no figure.

    Parameters
    ----------
    sample : FCSSample
        The sample the strategy was evaluated on.
    strategy : GatingStrategy
    result : GatingResult
        ``gate_sample(strategy, sample)``: the parents' masks.
    out_dir : path
        Folder for the PNGs (created if needed); files are named
        ``NN_<gate id>.png`` in evaluation order, written atomically.
    labels : mapping of str to str, optional
        Population id -> display path (``"lymphocytes/T"``); default: the
        strategy's id path.
    decisions : mapping of str to dict, optional
        Gate id -> how the data-driven gate was decided (a
        ``ResolvedSample.decisions`` value). Drawn on the gate's figure: the
        density peaks found (``details["peaks"]``, ``[position, height, prominence]``
        relative to the top; ``x_``/``y_`` prefixed for a quadrant gate) as
        triangles, the cut as a dotted line, the ``range`` searched as grey
        dash-dot lines, and ``"fallback"`` in the corner when a fallback set it.
        Malformed entries are ignored.
    status : mapping of str to str, optional
        Gate id -> ``"flagged"`` or ``"failed"`` (its population's status);
        written in the figure's corner (``"ok"`` writes nothing).
    column : callable(Dimension) -> ndarray, optional
        A dimension's values for every event, as the gates saw them (e.g.
        ``ResolvedSample.column`` right after gating): the sample's events are
        then not compensated and transformed again.

    Returns
    -------
    list of pathlib.Path
        The PNGs written, in evaluation order.

    Notes
    -----
    Output is deterministic: Agg backend, no software or date metadata in the
    PNG, fixed size (4 x 4 in at 80 dpi).
    """
    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating.engine import Plan, sample_events

    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if column is None:
        fcs_matrix = SpilloverMatrix.from_fcs(sample) if sample.spillover is not None else None
        where = sample.path.name if getattr(sample, "path", None) is not None else "sample"
        events, columns = sample_events(strategy, sample, fcs_matrix)
        column = Plan(strategy, events, sample.pnn, fcs_matrix, columns, where=where).column  # whole columns
    names = _display_names(strategy, labels)
    markers = {c.pnn: c.pns for c in sample.channels}
    counts = result.counts()
    n_total = result.n_events

    written: list[Path] = []
    seen: set[str] = set()
    # One figure for every gate of the sample, emptied between gates (_clear): making the axes and
    # their ticks again was ~40% of a gate plot's time. The PNGs are the same pixels as from fresh axes.
    fig, ax = plt.subplots(figsize=_FIGSIZE, dpi=_DPI)
    fig.subplots_adjust(**_MARGINS)
    try:
        for pid, pop in strategy.populations.items():
            path = _gate_plot(ax, pid, pop, seen, names, markers, counts, n_total, result, column,
                              decisions, status, out / f"{len(written) + 1:02d}_")
            if path is not None:
                written.append(path)
    finally:
        plt.close(fig)
    return written


def _gate_plot(ax: Any, pid: str, pop: Any, seen: set[str], names: Mapping[str, str],
               markers: Mapping[str, str], counts: Mapping[str, int], n_total: int, result: Any,
               column: Any, decisions: Mapping[str, Mapping[str, Any]] | None,
               status: Mapping[str, str] | None, prefix: Path) -> Path | None:
    """One gate's PNG, drawn on ``ax`` (emptied first), or None for a gate without a figure."""
    from flowtools.gating.gates import BooleanGate, QuadrantGate

    g = pop.gate
    if isinstance(g, BooleanGate) or g.id in seen:
        return None
    seen.add(g.id)
    parent_n = counts[pop.parent] if pop.parent is not None else n_total
    rows = None if pop.parent is None else result.mask(pop.parent)
    parent_name = names.get(pop.parent, "all events") if pop.parent is not None else "all events"
    if isinstance(g, QuadrantGate):
        dims = _unique_dims([d.dimension for d in g.dividers])[:2]
        quads = [(q, names.get(q.id, q.id), counts.get(q.id, 0)) for q in g.quadrants]
        title = f"quadrants of {_last(parent_name)}"
    else:
        dims = list(g.dimensions[:2])
        quads = []
        n = counts[pid]
        pct = f"{100.0 * n / parent_n:.1f}%" if parent_n else "n/a"
        title = f"{_last(names.get(pid, pid))} \u2014 {pct} of parent ({n:,} events)"
    values = [column(d) if rows is None else column(d)[rows] for d in dims]
    axis_names = [_axis_label(d, markers) for d in dims]
    decision = (decisions or {}).get(g.id)
    marks = _decision_marks(decision, two_d=len(dims) > 1)
    _clear(ax)
    if len(dims) == 1:
        lims = _limits(values[0], _gate_extent(g, pop, dims, 0))
        hist = _hist_1d(ax, values[0], lims)
        _draw_gate_1d(ax, g, quads, parent_n)
        _draw_marks_1d(ax, marks, hist)
        ax.set_xlim(*lims)
        ax.set_ylabel("events")
    else:
        xl = _limits(values[0], _gate_extent(g, pop, dims, 0))
        yl = _limits(values[1], _gate_extent(g, pop, dims, 1))
        _hist_2d(ax, values[0], values[1], xl, yl)
        _draw_gate_2d(ax, g, dims, quads, parent_n, xl, yl)
        _draw_marks_2d(ax, marks)
        ax.set_xlim(*xl)
        ax.set_ylim(*yl)
        ax.set_ylabel(axis_names[1], fontsize=8)
    _draw_badge(ax, (status or {}).get(g.id, "ok"), fallback=bool(marks.get("fallback")))
    ax.set_xlabel(axis_names[0], fontsize=8)
    _ticks(ax, two_d=len(dims) > 1)
    # y given: matplotlib skips placing the title above top tick labels (there are none), a
    # search of every tick's extent that took ~20 ms of a ~60 ms figure
    ax.set_title(f"{title}\nparent: {_last(parent_name)} ({parent_n:,} events)", fontsize=8, y=1.0)
    if parent_n == 0:
        ax.text(
            0.5,
            0.5,
            "no events in parent",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            color="0.4",
        )
    buf = io.BytesIO()
    ax.figure.savefig(buf, format="png", metadata={"Software": None})
    path = prefix.with_name(f"{prefix.name}{_safe_name(g.id)}.png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _clear(ax: Any) -> None:
    """Empty ``ax`` back to what fresh axes draw like (the figure is reused from gate to gate)."""
    import matplotlib as mpl

    for artist in [*ax.images, *ax.lines, *ax.patches, *ax.texts, *ax.collections, *ax.artists]:
        artist.remove()
    ax.set_prop_cycle(None)
    ax.set_xscale("linear")  # the default locators and formatters again
    ax.set_yscale("linear")
    ax.set_xlabel("", fontsize=mpl.rcParams["axes.labelsize"])
    ax.set_ylabel("", fontsize=mpl.rcParams["axes.labelsize"])
    ax.set_title("")
    ax.relim()
    ax.set_autoscale_on(True)


def _display_names(strategy: Any, labels: Mapping[str, str] | None) -> dict[str, str]:
    """Population id -> display path: ``labels`` where given, else the path of names.

    A template's gate ids are its population paths joined by ``__``
    (``lymphocytes__T``), so a child's name is its id less its parent's id.
    """
    names: dict[str, str] = {}
    for pid, pop in strategy.populations.items():  # parents first
        if labels and pid in labels:
            names[pid] = labels[pid]
        elif pop.parent is None:
            names[pid] = pid
        else:
            prefix = pop.parent + "__"
            own = pid[len(prefix) :] if pid.startswith(prefix) and len(pid) > len(prefix) else pid
            names[pid] = f"{names[pop.parent]}/{own}"
    return names


def _ticks(ax: Any, *, two_d: bool) -> None:
    """At most five ticks per axis; large scatter values as ``50k`` so labels never collide."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axes = [ax.xaxis, ax.yaxis] if two_d else [ax.xaxis]
    for axis in axes:
        axis.set_major_locator(MaxNLocator(5))
        axis.set_major_formatter(FuncFormatter(_tick_text))
    ax.tick_params(labelsize=7)


def _tick_text(value: float, _pos: int | None = None) -> str:
    if abs(value) >= 10_000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _last(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or path


def _safe_name(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


def _unique_dims(dims: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for d in dims:
        if d not in out:
            out.append(d)
    return out


def _axis_label(d: Any, markers: Mapping[str, str]) -> str:
    marker = markers.get(d.name, "")
    label = f"{marker} ({d.name})" if marker and marker != d.name else d.name
    if d.ratio:
        label = f"ratio {d.name}"
    return label


def _gate_extent(g: Any, pop: Any, dims: Sequence[Any], axis: int) -> list[float]:
    """Finite gate coordinates on one plotted axis (so the gate is in view)."""
    from flowtools.gating.gates import EllipsoidGate, PolygonGate, QuadrantGate, RectangleGate

    d = dims[axis]
    if isinstance(g, RectangleGate):
        i = list(g.dimensions).index(d)
        return [v for v in (g.mins[i], g.maxs[i]) if v is not None]
    if isinstance(g, PolygonGate):
        return [v[axis] for v in g.vertices]
    if isinstance(g, EllipsoidGate):
        i = list(g.dimensions).index(d)
        half = float(np.sqrt(abs(g.covariance[i][i]) * g.distance_square))
        return [g.mean[i] - half, g.mean[i] + half]
    if isinstance(g, QuadrantGate):
        return [v for div in g.dividers if div.dimension == d for v in div.values]
    return []


def _limits(values: np.ndarray, gate: Sequence[float]) -> tuple[float, float]:
    """Axis range: the data's 0.5-99.5 percentiles and the gate, padded by 5%.

    Gate coordinates far outside the data (a bound at the top of the range) are
    clipped to one data span beyond it, so the events never shrink to a corner.
    """
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    elif gate:
        lo, hi = float(min(gate)), float(max(gate))
    else:
        lo, hi = 0.0, 1.0
    span = (hi - lo) or (abs(hi) or 1.0)
    for v in gate:
        if finite.size:
            v = min(max(v, lo - span), hi + span)
        lo, hi = min(lo, v), max(hi, v)
    pad = 0.05 * ((hi - lo) or 1.0)
    return lo - pad, hi + pad


def _hist_2d(ax: Any, x: np.ndarray, y: np.ndarray, xl: tuple[float, float], yl: tuple[float, float]) -> None:
    ok = np.isfinite(x) & np.isfinite(y)
    h, _, _ = np.histogram2d(x[ok], y[ok], bins=_BINS_2D, range=[xl, yl])
    dens = np.ma.masked_equal(np.log10(1.0 + h.T), 0.0)
    import matplotlib

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    ax.imshow(dens, origin="lower", extent=(*xl, *yl), aspect="auto", cmap=cmap, interpolation="nearest")


def _hist_1d(ax: Any, x: np.ndarray, lims: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the histogram; its counts and bin edges."""
    h, edges = np.histogram(x[np.isfinite(x)], bins=_BINS_1D, range=lims)
    ax.stairs(h, edges, fill=True, color="#4c72b0", alpha=0.8)
    ax.set_ylim(0, max(1.0, float(h.max()) * 1.1) if h.size else 1.0)
    return h, edges


def _draw_gate_1d(ax: Any, g: Any, quads: Sequence[Any], parent_n: int) -> None:
    from flowtools.gating.gates import EllipsoidGate, QuadrantGate, RectangleGate

    kw = {"color": _GATE_COLOUR, "linewidth": 1.3}
    if isinstance(g, RectangleGate):
        lo, hi = g.mins[0], g.maxs[0]
        for v in (lo, hi):
            if v is not None:
                ax.axvline(v, **kw)
        x0, x1 = ax.get_xlim()
        ax.axvspan(x0 if lo is None else lo, x1 if hi is None else hi, color=_GATE_COLOUR, alpha=0.08, lw=0)
    elif isinstance(g, EllipsoidGate):
        half = float(np.sqrt(abs(g.covariance[0][0]) * g.distance_square))
        for v in (g.mean[0] - half, g.mean[0] + half):
            ax.axvline(v, **kw)
    elif isinstance(g, QuadrantGate):
        for div in g.dividers:
            for v in div.values:
                ax.axvline(v, **kw)
        for q, name, n in quads:
            (_, lo, hi), *_ = g.bounds(q)
            xpos, ha = _corner((lo, hi))
            ax.text(
                xpos, 0.95, _quad_text(name, n, parent_n), transform=ax.transAxes, ha=ha, va="top", **_TEXT
            )


def _quad_text(name: str, n: int, parent_n: int) -> str:
    pct = f"{100.0 * n / parent_n:.1f}%" if parent_n else "n/a"
    return f"{_last(name)}\n{pct}"


def _draw_gate_2d(
    ax: Any,
    g: Any,
    dims: Sequence[Any],
    quads: Sequence[Any],
    parent_n: int,
    xl: tuple[float, float],
    yl: tuple[float, float],
) -> None:
    from matplotlib.patches import Polygon, Rectangle

    from flowtools.gating.gates import EllipsoidGate, PolygonGate, QuadrantGate, RectangleGate

    kw = {"edgecolor": _GATE_COLOUR, "facecolor": "none", "linewidth": 1.3}
    if isinstance(g, RectangleGate):
        # Open sides run past the axes (clipped), so they read as open.
        far = [
            (xl[0] - 10 * (xl[1] - xl[0]), xl[1] + 10 * (xl[1] - xl[0])),
            (yl[0] - 10 * (yl[1] - yl[0]), yl[1] + 10 * (yl[1] - yl[0])),
        ]
        lo = [far[i][0] if g.mins[i] is None else g.mins[i] for i in (0, 1)]
        hi = [far[i][1] if g.maxs[i] is None else g.maxs[i] for i in (0, 1)]
        ax.add_patch(Rectangle((lo[0], lo[1]), hi[0] - lo[0], hi[1] - lo[1], **kw))
    elif isinstance(g, PolygonGate):
        ax.add_patch(Polygon(np.array(g.vertices, dtype=np.float64), closed=True, **kw))
    elif isinstance(g, EllipsoidGate):
        ax.plot(*_ellipse_outline(g), color=_GATE_COLOUR, linewidth=1.3)
    elif isinstance(g, QuadrantGate):
        for div in g.dividers:
            for v in div.values:
                if div.dimension == dims[0]:
                    ax.axvline(v, color=_GATE_COLOUR, linewidth=1.3)
                elif div.dimension == dims[1]:
                    ax.axhline(v, color=_GATE_COLOUR, linewidth=1.3)
        for q, name, n in quads:
            pos = {div.dimension: (lo, hi) for div, lo, hi in g.bounds(q)}
            x = _corner(pos.get(dims[0], (-np.inf, np.inf)))
            y = _corner(pos.get(dims[1], (-np.inf, np.inf)))
            ax.text(
                x[0],
                y[0],
                _quad_text(name, n, parent_n),
                transform=ax.transAxes,
                ha=x[1],
                va={"left": "bottom", "right": "top", "center": "center"}[y[1]],
                **_TEXT,
            )


def _corner(bounds: tuple[float, float]) -> tuple[float, str]:
    """Axes-fraction position and alignment of a quadrant label along one axis."""
    lo, hi = bounds
    if np.isinf(hi) and not np.isinf(lo):
        return 0.97, "right"
    if np.isinf(lo) and not np.isinf(hi):
        return 0.03, "left"
    return 0.5, "center"


def _ellipse_outline(g: Any) -> tuple[np.ndarray, np.ndarray]:
    """Outline of an ellipsoid gate on its first two dimensions (the exact shadow for n > 2)."""
    # The gate tests x^T inv(C) x, i.e. the symmetric part of inv(C) (C itself need not be symmetric);
    # the shadow of that ellipsoid on two axes has those axes' block of its inverse as covariance.
    inv = g.inverse_covariance
    shape = np.linalg.inv((inv + inv.T) / 2.0)[:2, :2]
    mean = np.array(g.mean, dtype=np.float64)[:2]
    w, v = np.linalg.eigh((shape + shape.T) / 2.0)
    t = np.linspace(0.0, 2.0 * np.pi, 241)
    circle = np.vstack([np.cos(t), np.sin(t)])
    pts = mean[:, None] + v @ (np.sqrt(np.clip(w, 0.0, None) * g.distance_square)[:, None] * circle)
    return pts[0], pts[1]


# ------------------------------------------------------------------------------------------ decisions

_MARK_COLOUR = "#111111"
_RANGE_COLOUR = "0.45"
_BADGE = {
    "flagged": ("FLAGGED", "#fff4d6", "#8a5a00"),
    "failed": ("FAILED", "#fde2e1", "#b42318"),
    "fallback": ("fallback", "#fff4d6", "#8a5a00"),
}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if np.isfinite(f) else None


def _peaks(v: Any) -> list[tuple[float, float]]:
    """``[[position, height, prominence], ...]`` -> [(position, height 0..1)]; anything else dropped."""
    out = []
    if isinstance(v, list | tuple):
        for p in v:
            if isinstance(p, list | tuple) and len(p) >= 2:
                x, h = _number(p[0]), _number(p[1])
                if x is not None:
                    out.append((x, min(max(h if h is not None else 1.0, 0.0), 1.0)))
    return out


def _decision_marks(decision: Mapping[str, Any] | None, *, two_d: bool) -> dict[str, Any]:
    """What to draw from a decision record, per axis: peaks, cut and range searched.

    A 1-D gate's record has ``peaks`` (or ``peak``: a tail gate's main peak), ``cut`` and the
    ``range`` argument; a quadrant gate's has them per axis with ``x_``/``y_`` prefixes
    (``x_range``/``y_range`` arguments).
    """
    if not isinstance(decision, Mapping):
        return {}
    details = decision.get("details")
    params = decision.get("params")
    details = details if isinstance(details, Mapping) else {}
    params = params if isinstance(params, Mapping) else {}
    marks: dict[str, Any] = {"fallback": bool(decision.get("fallback"))}
    per_axis = two_d or any(str(k).startswith("x_") for k in details)  # quad: x_/y_ keys
    for axis, prefix in ((("x", "x_"), ("y", "y_")) if per_axis else (("x", ""),)):
        peaks = _peaks(details.get(f"{prefix}peaks"))
        single = _number(details.get(f"{prefix}peak"))
        if not peaks and single is not None:
            peaks = [(single, 1.0)]
        rng = params.get(f"{prefix}range")
        bounds = [b for b in (_number(r) for r in rng[:2]) if b is not None] \
            if isinstance(rng, list | tuple) else []
        marks[axis] = {"peaks": peaks, "cut": _number(details.get(f"{prefix}cut")), "range": bounds}
    return marks


def _draw_marks_1d(ax: Any, marks: Mapping[str, Any], hist: tuple[np.ndarray, np.ndarray]) -> None:
    """Range searched, cut and peaks of a 1-D decision; each peak's triangle sits on the histogram there."""
    m = marks.get("x")
    if not m:
        return
    for b in m["range"]:
        ax.axvline(b, color=_RANGE_COLOUR, linewidth=0.8, linestyle="-.")
    if m["cut"] is not None:
        ax.axvline(m["cut"], color=_MARK_COLOUR, linewidth=1.0, linestyle=":")
    h, edges = hist
    if m["peaks"] and h.size:
        xs = [p for p, _ in m["peaks"]]
        k = np.clip(np.searchsorted(edges, xs) - 1, 0, h.size - 1)
        lift = 0.04 * max(1.0, float(h.max()))
        ys = [float(h[max(i - 1, 0) : i + 2].max()) + lift for i in k]
        ax.plot(xs, ys, linestyle="none", marker="v", markersize=5, color=_MARK_COLOUR)


def _draw_marks_2d(ax: Any, marks: Mapping[str, Any]) -> None:
    """Per-axis marks of a quadrant gate: peaks on the axis edges, cuts as dotted lines."""
    for axis, line, edge, marker in (("x", ax.axvline, ax.get_xaxis_transform(), "^"),
                                     ("y", ax.axhline, ax.get_yaxis_transform(), ">")):
        m = marks.get(axis)
        if not m:
            continue
        for b in m["range"]:
            line(b, color=_RANGE_COLOUR, linewidth=0.8, linestyle="-.")
        if m["cut"] is not None:
            line(m["cut"], color="white", linewidth=1.0, linestyle=":")
        if m["peaks"]:
            pos = [p for p, _ in m["peaks"]]
            at = [0.015] * len(pos)
            xy = (pos, at) if axis == "x" else (at, pos)
            ax.plot(*xy, transform=edge, linestyle="none", marker=marker, markersize=5, color=_MARK_COLOUR,
                    clip_on=False)


def _draw_badge(ax: Any, status: str, *, fallback: bool) -> None:
    """The population's status (and a fallback) in words, at the top of the axes (corners hold quadrant %)."""
    words = [_BADGE[status][0]] if status in ("flagged", "failed") else []
    if fallback:
        words.append(_BADGE["fallback"][0])
    if not words:
        return
    _, face, ink = _BADGE["failed" if status == "failed" else "flagged"]
    ax.text(0.5, 0.98, " \u00b7 ".join(words), transform=ax.transAxes, ha="center", va="top", fontsize=7,
            fontweight="bold", color=ink, bbox={"boxstyle": "round,pad=0.25", "fc": face, "ec": ink},
            zorder=5)
