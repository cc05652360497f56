"""Cluster quality against known labels: Hungarian-matched F1 (Weber & Robinson 2016)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["f1_matrix", "hungarian_f1"]


def f1_matrix(truth: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 of every (true population, cluster) pair.

    Parameters
    ----------
    truth : ndarray of int, shape (n,)
        True population of every event; negative values are not scored (left out).
    labels : ndarray of int, shape (n,)
        Cluster of every event; negative values (noise) belong to no cluster.

    Returns
    -------
    f1 : ndarray of float64, shape (n_populations, n_clusters)
    populations, clusters : ndarray of int64
        The label values of the rows and the columns.
    """
    truth = np.asarray(truth)
    labels = np.asarray(labels)
    if truth.shape != labels.shape:
        msg = f"truth {truth.shape} and labels {labels.shape} differ in shape"
        raise ValueError(msg)
    keep = truth >= 0
    t, c = truth[keep].astype(np.int64), labels[keep].astype(np.int64)
    pops = np.unique(t)
    clus = np.unique(c[c >= 0])
    if pops.size == 0 or clus.size == 0:
        return np.zeros((pops.size, clus.size)), pops, clus
    ti = np.searchsorted(pops, t)
    ok = c >= 0
    ci = np.searchsorted(clus, c[ok])
    both = np.zeros((pops.size, clus.size))
    np.add.at(both, (ti[ok], ci), 1.0)
    n_t = np.bincount(ti, minlength=pops.size).astype(np.float64)
    n_c = np.bincount(ci, minlength=clus.size).astype(np.float64)
    denom = n_t[:, None] + n_c[None, :]
    f1 = np.where(denom > 0, 2.0 * both / np.maximum(denom, 1.0), 0.0)
    return f1, pops, clus


def hungarian_f1(truth: Any, labels: Any) -> dict[str, Any]:
    """Mean F1 over true populations, clusters matched one-to-one by the Hungarian algorithm.

    As Weber & Robinson (2016): each true population is matched to at most one
    cluster (and each cluster to at most one population) so that the summed F1
    is largest; a population left without a cluster scores 0. Events whose true
    label is negative are left out (unassigned in the truth).

    Parameters
    ----------
    truth : array-like of int, shape (n,)
    labels : array-like of int, shape (n,)

    Returns
    -------
    dict
        ``mean_f1`` (float), ``f1`` (population -> F1), ``match`` (population -> cluster or None).
    """
    from scipy.optimize import linear_sum_assignment

    f1, pops, clus = f1_matrix(np.asarray(truth), np.asarray(labels))
    per = {int(p): 0.0 for p in pops}
    match: dict[int, int | None] = {int(p): None for p in pops}
    if f1.size:
        rows, cols = linear_sum_assignment(-f1)
        for r, c in zip(rows, cols, strict=True):
            per[int(pops[r])] = float(f1[r, c])
            match[int(pops[r])] = int(clus[c])
    mean = float(np.mean(list(per.values()))) if per else float("nan")
    return {"mean_f1": mean, "f1": per, "match": match}
