"""Validating the follow-up database: the cross-column and cross-table rules.

Part of :mod:`flowtools.io.clinical_db`, which re-exports the public names; import them from there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flowtools.io._followup_schema import _WEEKS, DBIssue, FollowupDataError, FollowupDB

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["OVERLAP_TOLERANCE_DAYS", "check_immune_women", "validate_followup"]


def _row_names(df: pd.DataFrame, table: str) -> list[str]:
    rows = df.attrs.get("rows")
    if rows is not None and len(rows) == len(df):
        return list(rows)
    if table == "women":
        return [str(w) for w in df["woman_id"]]
    return [
        f"{w} {d.date() if hasattr(d, 'date') else d}"
        for w, d in zip(df["woman_id"], df["episode_date"], strict=True)
    ]


def validate_followup(db: FollowupDB, *, immune_women: Iterable[str] | None = None) -> None:
    """Check the cross-column and cross-table rules; raise one error listing every problem.

    Rules: unique women; ``rm_type`` primary/secondary exactly for ``rm``
    women; ``recruitment_date < followup_end`` (a missing or equal end is "no
    follow-up"); episodes of known women only, dated after recruitment and not
    after the follow-up end, not duplicated (same woman and date), with
    gestational weeks consistent with the outcome, not overlapping (a
    pregnancy that began, by its gestational weeks, before the woman's
    previous episode ended; :data:`OVERLAP_TOLERANCE_DAYS`); with
    ``immune_women``, women on only one side of the immune table.

    Raises
    ------
    FollowupDataError
    """
    import numpy as np

    issues: list[DBIssue] = []
    w, e = db.women, db.episodes
    wrow, erow = _row_names(w, "women"), _row_names(e, "episodes")
    dup = w["woman_id"].duplicated(keep="first").to_numpy()
    for i in np.flatnonzero(dup):
        issues.append(DBIssue("women", wrow[i], "woman_id", f"duplicate woman {w['woman_id'].iloc[i]!r}"))
    for i, (g, t) in enumerate(zip(w["group"], w["rm_type"], strict=True)):
        if g == "rm" and t == "none":
            issues.append(
                DBIssue("women", wrow[i], "rm_type", "an RM woman needs rm_type primary or secondary")
            )
        elif g == "control" and t in ("primary", "secondary"):
            issues.append(
                DBIssue("women", wrow[i], "rm_type", f"a control has rm_type {t!r} (expected none)")
            )
    rec, end = w["recruitment_date"], w["followup_end"]
    for i in np.flatnonzero((end.isna() | (end == rec)).to_numpy() & rec.notna().to_numpy()):
        issues.append(
            DBIssue(
                "women",
                wrow[i],
                "followup_end",
                "no follow-up (follow-up end missing or equal to recruitment)",
            )
        )
    for i in np.flatnonzero((end < rec).to_numpy()):
        issues.append(
            DBIssue(
                "women",
                wrow[i],
                "followup_end",
                f"follow-up end {end.iloc[i].date()} is before recruitment {rec.iloc[i].date()}",
            )
        )
    known = dict(zip(w["woman_id"], range(len(w)), strict=False))
    seen: set[tuple[str, Any]] = set()
    for i, (wid, d, out, gw) in enumerate(
        zip(e["woman_id"], e["episode_date"], e["outcome"], e["gestational_weeks"], strict=True)
    ):
        j = known.get(wid)
        if j is None:
            issues.append(
                DBIssue("episodes", erow[i], "woman_id", f"unknown woman {wid!r} (not in the women table)")
            )
        elif d is not None and d == d:  # not NaT
            r, f = rec.iloc[j], end.iloc[j]
            if r == r and d <= r:
                issues.append(
                    DBIssue(
                        "episodes", erow[i], "episode_date", f"{d.date()} is not after recruitment {r.date()}"
                    )
                )
            if f == f and d > f:
                issues.append(
                    DBIssue(
                        "episodes",
                        erow[i],
                        "episode_date",
                        f"{d.date()} is after the follow-up end {f.date()}",
                    )
                )
        key = (wid, d)
        if key in seen:
            issues.append(
                DBIssue("episodes", erow[i], "episode_date", f"duplicate episode of {wid!r} on this date")
            )
        seen.add(key)
        if out in _WEEKS and gw == gw:
            lo, hi = _WEEKS[out]
            if not lo <= gw < hi and 0 <= gw <= 45:
                issues.append(
                    DBIssue(
                        "episodes",
                        erow[i],
                        "gestational_weeks",
                        f"{gw:g} weeks is inconsistent with outcome {out!r} (loss < 24, stillbirth >= 24, "
                        "live birth >= 22)",
                    )
                )
    issues += _overlap_issues(e, erow, set(known))
    if immune_women is not None:
        issues += _immune_issues(w, wrow, immune_women)
    if issues:
        raise FollowupDataError(db.source, issues)


# Slack of the overlap rule: dating by last period and by scan differ by days, and "completed weeks"
# round down; a pregnancy cannot begin before the previous one ended, by more than this.
OVERLAP_TOLERANCE_DAYS = 7


def _overlap_issues(e: pd.DataFrame, erow: list[str], known: set[str]) -> list[DBIssue]:
    """Episodes whose pregnancy began before the woman's previous episode ended (overlapping pregnancies).

    A pregnancy begins at conception, ``episode_date - (gestational_weeks - 2)``
    weeks (gestational age counts from the last period, two weeks before).
    An episode is flagged when that is more than :data:`OVERLAP_TOLERANCE_DAYS`
    before the date of the woman's previous episode (also an ``ongoing`` record
    followed by another episode of the same pregnancy: ``ongoing`` is the last
    record of a pregnancy still under way at follow-up end).
    """
    import numpy as np
    import pandas as pd

    ok = e["woman_id"].isin(known) & e["episode_date"].notna() & e["gestational_weeks"].notna()
    sub = e[ok.to_numpy()].assign(_row=np.flatnonzero(ok.to_numpy()))
    sub = sub.sort_values(["woman_id", "episode_date"], kind="stable")
    issues = []
    prev_w, prev_d, prev_row = None, None, None
    for wid, d, gw, i in zip(
        sub["woman_id"], sub["episode_date"], sub["gestational_weeks"], sub["_row"], strict=True
    ):
        if wid == prev_w and d != prev_d:
            began = d - pd.Timedelta(days=round((float(gw) - 2.0) * 7))
            if began < prev_d - pd.Timedelta(days=OVERLAP_TOLERANCE_DAYS):
                issues.append(
                    DBIssue(
                        "episodes",
                        erow[i],
                        "episode_date",
                        f"overlapping pregnancies: at {float(gw):g} weeks on {d.date()} this pregnancy began "
                        f"about {began.date()}, before the previous one ended on {prev_d.date()} "
                        f"({erow[prev_row]}); check the date or the gestational weeks",
                    )
                )
        prev_w, prev_d, prev_row = wid, d, i
    return issues


def _immune_issues(w: pd.DataFrame, wrow: list[str], immune_women: Iterable[str]) -> list[DBIssue]:
    imm = {str(x) for x in immune_women}
    ids = [str(x) for x in w["woman_id"]]
    issues = [
        DBIssue("women", wrow[i], "woman_id", f"woman {wid!r} is not in the immune table")
        for i, wid in enumerate(ids)
        if wid not in imm
    ]
    issues += [
        DBIssue("women", None, "woman_id", f"woman {wid!r} of the immune table is not in the women table")
        for wid in sorted(imm - set(ids))
    ]
    return issues


def check_immune_women(db: FollowupDB, immune_women: Iterable[str]) -> None:
    """Raise :class:`FollowupDataError` for women on only one side of the immune table."""
    issues = _immune_issues(db.women, _row_names(db.women, "women"), immune_women)
    if issues:
        raise FollowupDataError(db.source, issues)
