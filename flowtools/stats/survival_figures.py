"""Kaplan-Meier / cumulative-incidence figures of the follow-up outcomes (matplotlib, imported lazily)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from flowtools.stats.figures import _new, _save  # one figure factory and PNG writer for stats

__all__ = ["cumulative_incidence", "survival_figures"]

_COLOURS = {"control": "#4C72B0", "rm": "#C44E52", "1": "#55A868", "2": "#DD8452", "3": "#C44E52"}


def cumulative_incidence(time: np.ndarray, event: np.ndarray, *, cause: int = 1) -> pd.Series:
    """Aalen-Johansen cumulative incidence of ``cause`` (lifelines) with other codes > 0 competing.

    With a single cause this is ``1 - KM``. lifelines breaks tied event times by
    a tiny jitter (its warning about that is silenced here). Index: time.
    """
    from lifelines import AalenJohansenFitter, KaplanMeierFitter

    t, e = np.asarray(time, float), np.asarray(event, int)
    if not (e > 0).any():
        return pd.Series([0.0], index=[0.0])
    if set(np.unique(e[e > 0])) == {cause}:
        km = KaplanMeierFitter().fit(t, e == cause)
        return 1.0 - km.survival_function_.iloc[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        aj = AalenJohansenFitter(seed=0).fit(t, e, event_of_interest=cause)
    return aj.cumulative_density_.iloc[:, 0]


def _step(ax: Any, ci: pd.Series, label: str, colour: str | None) -> None:
    ax.step(ci.index.to_numpy(float), ci.to_numpy(float), where="post", label=label, color=colour)


def survival_figures(
    outcomes: pd.DataFrame, evaluation: Any | None, out_dir: str | os.PathLike[str]
) -> list[Path]:
    """Draw cumulative incidence of live birth by group, of first-pregnancy outcomes, and by risk tertile.

    Parameters
    ----------
    outcomes : pandas.DataFrame
        :func:`flowtools.stats.survival.derive_outcomes`.
    evaluation : SurvivalEvaluation or None
        For the tertile figure (repeat-averaged out-of-fold predictions of
        ``clinical + immune``, or the first model).
    out_dir : str or PathLike

    Returns
    -------
    list of pathlib.Path
        ``km_live_birth_by_group.png``, ``cif_first_pregnancy.png``, and
        ``km_by_risk_tertile.png`` with an evaluation.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig = _new(5.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    for g, sub in outcomes.groupby("group"):
        _step(
            ax,
            cumulative_incidence(sub["ttlb_months"], sub["ttlb_event"]),
            f"{g} (n={len(sub)})",
            _COLOURS.get(str(g)),
        )
    ax.set_xlabel("months since recruitment")
    ax.set_ylabel("cumulative incidence of live birth (1 - KM)")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False)
    paths.append(_save(fig, out / "km_live_birth_by_group.png"))

    fig = _new(5.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    for cause, name in ((1, "live birth"), (2, "loss / stillbirth")):
        for g, sub in outcomes.groupby("group"):
            ci = cumulative_incidence(sub["fp_months"], sub["fp_event"], cause=cause)
            ax.step(
                ci.index,
                ci.to_numpy(float),
                where="post",
                label=f"{name}, {g}",
                color=_COLOURS.get(str(g)),
                linestyle="-" if cause == 1 else "--",
            )
    ax.set_xlabel("months since recruitment")
    ax.set_ylabel("cumulative incidence (Aalen-Johansen)")
    ax.set_title("outcome of the first pregnancy after recruitment", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=7)
    paths.append(_save(fig, out / "cif_first_pregnancy.png"))

    if evaluation is not None:
        pred = evaluation.predictions
        models = evaluation.parameters["models"]
        model = "clinical + immune" if "clinical + immune" in models else models[0]
        h = evaluation.parameters["horizons"][-1]
        risk = pred[f"{model}@{h:g}"].to_numpy(float)
        ranks = pd.Series(risk).rank(method="first").to_numpy()
        tert = np.minimum((3 * (ranks - 1) / risk.size).astype(int) + 1, 3)
        fig = _new(5.5, 4)
        ax = fig.add_subplot(1, 1, 1)
        for k in (1, 2, 3):
            m = tert == k
            ci = cumulative_incidence(pred["time"].to_numpy()[m], pred["event"].to_numpy()[m])
            _step(ax, ci, f"tertile {k} of predicted ({model})", _COLOURS[str(k)])
        ax.set_xlabel("months since recruitment")
        ax.set_ylabel(f"observed cumulative incidence ({evaluation.outcome})")
        ax.set_ylim(0, 1)
        ax.legend(frameon=False, fontsize=7)
        paths.append(_save(fig, out / "km_by_risk_tertile.png"))
    return paths
