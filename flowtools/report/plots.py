"""Figures. matplotlib is imported inside each function (never at ``import flowtools``)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from flowtools.provenance import atomic_write_bytes

__all__ = ["delta_heatmap"]


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
