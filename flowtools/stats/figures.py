"""Figures of the comparison and of the prediction (matplotlib, imported lazily; deterministic PNGs)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.provenance import atomic_write_bytes

__all__ = ["comparison_figures", "prediction_figures"]

_GROUP_COLOURS = {"control": "#4C72B0", "RM": "#C44E52"}


def _short(feature: str) -> str:
    tube, _, path = feature.partition("|")
    parts = path.split("/")
    return f"{'/'.join(parts[-2:])} ({tube})"


def _new(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None}, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def comparison_figures(
    result: Any, out_dir: str | os.PathLike[str], *, subgroup: str = "all RM"
) -> list[Path]:
    """Draw the volcano plot, the forest plot and per-population distributions by group.

    Parameters
    ----------
    result : ComparisonResult
    out_dir : str or PathLike
    subgroup : str, default "all RM"
        Which subgroup's rows to draw.

    Returns
    -------
    list of pathlib.Path
        ``volcano.png``, ``forest.png`` (one panel per scale), ``distributions.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tab = result.table[result.table["subgroup"] == subgroup].dropna(subset=["p"])
    paths = []

    fig = _new(7, 5)
    ax = fig.add_subplot(1, 1, 1)
    for scale, marker in (("% of parent", "o"), ("composition (CLR)", "s")):
        t = tab[tab["scale"] == scale]
        sig = t["q"] < 0.05
        y = -np.log10(t["p"].clip(lower=1e-300))
        ax.scatter(t["effect"][~sig], y[~sig], marker=marker, c="#999999", label=f"{scale}, q >= 0.05")
        ax.scatter(t["effect"][sig], y[sig], marker=marker, c="#C44E52", label=f"{scale}, q < 0.05")
        for (_, r), yy in zip(t[sig].iterrows(), y[sig], strict=True):
            ax.annotate(
                _short(r["population"]),
                (r["effect"], yy),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel("effect (log odds ratio on % of parent; CLR difference on composition)")
    ax.set_ylabel("-log10 p")
    ax.set_title(f"RM vs control ({subgroup})")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out / "volcano.png"))

    scales = [s for s in ("% of parent", "composition (CLR)") if (tab["scale"] == s).any()]
    n_rows = max(int((tab["scale"] == s).sum()) for s in scales) if scales else 1
    fig = _new(6 * max(len(scales), 1), 0.3 * n_rows + 1.5)
    for k, scale in enumerate(scales):
        ax = fig.add_subplot(1, len(scales), k + 1)
        t = tab[tab["scale"] == scale].sort_values("population", ascending=False)
        pos = np.arange(len(t))
        colours = np.where(t["q"] < 0.05, "#C44E52", "#333333")
        ax.errorbar(
            t["effect"],
            pos,
            xerr=[t["effect"] - t["ci_low"], t["ci_high"] - t["effect"]],
            fmt="none",
            ecolor=colours,
            lw=1,
        )
        ax.scatter(t["effect"], pos, c=colours, s=15, zorder=3)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_yticks(pos)
        ax.set_yticklabels([_short(p) for p in t["population"]], fontsize=7)
        ax.set_xlabel("log odds ratio, 95% CI" if scale == "% of parent" else "CLR difference, 95% CI")
        ax.set_title(f"{scale} (red: q < 0.05)", fontsize=9)
    paths.append(_save(fig, out / "forest.png"))

    data = result.data[(result.data["subgroup"] == subgroup) & (result.data["scale"] == "% of parent")]
    pops = sorted(data["population"].unique())
    ncol = 4
    nrow = max(1, -(-len(pops) // ncol))
    fig = _new(3 * ncol, 2.4 * nrow)
    for i, pop in enumerate(pops):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        d = data[data["population"] == pop]
        for j, grp in enumerate(("control", "RM")):
            v = d.loc[d["group"] == grp, "value"].to_numpy(float)
            if v.size:
                ax.boxplot([v], positions=[j], widths=0.5, showfliers=False)
                jitter = (np.arange(v.size) % 7 - 3) * 0.04
                ax.scatter(j + jitter, v, s=5, c=_GROUP_COLOURS[grp], alpha=0.6)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["control", "RM"], fontsize=7)
        ax.set_title(_short(pop), fontsize=7)
        ax.tick_params(labelsize=6)
        ax.set_ylabel("% of parent", fontsize=6)
    fig.tight_layout()
    paths.append(_save(fig, out / "distributions.png"))
    return paths


def prediction_figures(evaluation: Any, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw the AUCs with CIs and the calibration curves of an :class:`~flowtools.stats.predict.Evaluation`.

    Returns
    -------
    list of pathlib.Path
        ``auc.png`` and ``calibration.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    a = evaluation.auc
    fig = _new(5, 0.5 * len(a) + 1.5)
    ax = fig.add_subplot(1, 1, 1)
    pos = np.arange(len(a))
    ax.errorbar(
        a["auc"], pos, xerr=[a["auc"] - a["ci_low"], a["ci_high"] - a["auc"]], fmt="o", color="#333333"
    )
    ax.axvline(0.5, color="k", lw=0.5, ls="--")
    ax.set_yticks(pos)
    ax.set_yticklabels(a["model"])
    ax.set_xlim(0.2, 1.0)
    ax.set_xlabel("nested cross-validated AUC, 95% CI")
    ax.set_title(f"task: {evaluation.task}")
    p1 = _save(fig, out / "auc.png")
    fig = _new(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="k", lw=0.5, ls="--")
    for m, c in evaluation.calibration_curve.groupby("model", sort=False):
        ax.plot(c["mean_predicted"], c["observed"], marker="o", label=m)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed fraction")
    ax.legend(fontsize=8)
    p2 = _save(fig, out / "calibration.png")
    return [p1, p2]
