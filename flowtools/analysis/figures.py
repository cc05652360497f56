"""Figures of a cohort clustering (matplotlib, imported when called).

UMAP by cluster and by marker, cluster x marker heatmap, per-woman abundances. PNGs are deterministic
(no software or time stamp).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cluster_figures"]

_META = {"Software": None}


def cluster_figures(result: Any, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the figures of a :class:`~flowtools.analysis.cohort.CohortClusters` as PNGs.

    Parameters
    ----------
    result : CohortClusters
    out_dir : path
        Created if needed.

    Returns
    -------
    list of pathlib.Path
        ``cluster_heatmap.png``, ``cluster_abundance.png`` and, when the result
        has an embedding, ``embedding_clusters.png`` and ``embedding_markers.png``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ann = result.annotation
    names = list(ann["cluster"])
    labels = [f"{c} ({lbl})" for c, lbl in zip(ann["cluster"], ann["label"], strict=True)]
    med = ann[[f"median_{m}" for m in result.markers]].to_numpy(dtype=float)
    cmap = plt.get_cmap("tab20")

    def save(fig: Any, name: str) -> None:
        p = out / name
        fig.savefig(p, dpi=100, metadata=_META)
        plt.close(fig)
        written.append(p)

    size = (1.0 + 0.6 * len(result.markers), 1.2 + 0.35 * len(names))
    fig, ax = plt.subplots(figsize=size, layout="constrained")
    im = ax.imshow(med, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(result.markers)), result.markers, rotation=90)
    ax.set_yticks(range(len(names)), labels, fontsize=7)
    fig.colorbar(im, ax=ax, label="median (logicle)")
    ax.set_title(f"{result.population.rsplit('/', 1)[-1]}: clusters x markers")
    save(fig, "cluster_heatmap.png")

    wide = result.wide.set_index("woman_id")
    fig, ax = plt.subplots(figsize=(max(4.0, 0.3 * len(wide) + 2), 4), layout="constrained")
    bottom = np.zeros(len(wide))
    for i, col in enumerate(wide.columns):
        v = np.nan_to_num(wide[col].to_numpy(dtype=float))
        ax.bar(range(len(wide)), v, bottom=bottom, color=cmap(i % 20), label=col.rsplit("/", 1)[-1])
        bottom += v
    ax.set_xticks(range(len(wide)), list(wide.index), rotation=90, fontsize=6)
    ax.set_ylabel("% of parent population")
    ax.legend(fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    save(fig, "cluster_abundance.png")

    if result.embedding is not None:
        emb = result.embedding
        lab = result.fit_labels[result.embedding_index]
        fig, ax = plt.subplots(figsize=(6, 5), layout="constrained")
        for i, c in enumerate(sorted(set(lab.tolist()))):
            m = lab == c
            ax.scatter(emb[m, 0], emb[m, 1], s=1, color="lightgrey" if c < 0 else cmap(i % 20),
                       label="noise" if c < 0 else f"cluster_{c:02d}", rasterized=True)
        ax.legend(markerscale=8, fontsize=6, bbox_to_anchor=(1.0, 1.0), loc="upper left")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("embedding by cluster")
        save(fig, "embedding_clusters.png")

        n = len(result.markers)
        cols = min(4, n)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), layout="constrained",
                                 squeeze=False)
        xs = result.fit_x[result.embedding_index]
        for j, ax in enumerate(axes.flat):
            if j >= n:
                ax.axis("off")
                continue
            ax.scatter(emb[:, 0], emb[:, 1], s=1, c=xs[:, j], cmap="viridis", rasterized=True)
            ax.set_title(result.markers[j], fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        save(fig, "embedding_markers.png")
    return written
