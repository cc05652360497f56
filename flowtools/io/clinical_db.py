"""The clinical follow-up database: schema, reading (CSV folder or SQL), validation, writing.

The study's research database follows every woman from recruitment (the day
her blood was sampled) with a visit every six months, and records each
pregnancy after recruitment. It has two tables.

``women`` (one row per woman; primary key ``woman_id``)
    ========================  ==========  ==============================================
    column                    type        meaning, allowed values
    ========================  ==========  ==============================================
    woman_id                  text        study ID (as in the sample sheet), unique
    age                       real        age in years at recruitment, 15-55
    bmi                       real        kg/m^2 at recruitment, 12-70 (may be empty)
    prior_losses              integer     pregnancy losses before recruitment, >= 0
    prior_live_births         integer     live births before recruitment, >= 0
    rm_type                   text        ``primary``/``secondary`` (RM women), ``none`` (controls)
    smoking                   text        ``never``/``former``/``current`` (may be empty)
    pcos                      integer     polycystic ovary syndrome: 0/1 (also yes/no, true/false)
    group                     text        ``rm`` (recurrent miscarriage) or ``control``
    recruitment_date          date        ISO date of recruitment / sampling
    followup_end              date        ISO date of the last visit attended (> recruitment_date)
    ========================  ==========  ==============================================

``episodes`` (one row per pregnancy after recruitment; key ``woman_id`` + ``episode_date``)
    ========================  ==========  ==============================================
    woman_id                  text        a woman of the ``women`` table
    episode_date              date        date the pregnancy ended; for ``ongoing`` the visit
                                          that last recorded it. After recruitment_date, not
                                          after followup_end
    outcome                   text        ``loss`` (< 24 weeks), ``stillbirth`` (>= 24 weeks),
                                          ``live_birth`` (>= 22 weeks), ``ongoing``
    gestational_weeks         real        completed weeks at episode_date, 0-45, consistent
                                          with the outcome
    ========================  ==========  ==============================================

:data:`SCHEMA` holds the same in code. Sources: a folder with ``women.csv`` and
``episodes.csv``; a ``.sqlite``/``.db`` file; or any SQLAlchemy URL (e.g.
``postgresql://user@server/study``) whose database has both tables. Validation
(:func:`validate_followup`) collects every problem and raises one
:class:`FollowupDataError` (a :class:`flowtools.errors.ClinicalDataError`)
naming table, row (CSV line, header = line 1, or the primary key in a
database) and column. :func:`write_followup` writes a CSV folder or a SQLite
file atomically (a temporary file renamed into place; a server URL inside one
transaction), so a failed write leaves nothing half-written.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowtools.errors import ClinicalDataError
from flowtools.provenance import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "EPISODE_OUTCOMES",
    "SCHEMA",
    "DBIssue",
    "FollowupDB",
    "FollowupDataError",
    "check_immune_women",
    "read_followup",
    "validate_followup",
    "write_followup",
]

EPISODE_OUTCOMES = ("loss", "stillbirth", "live_birth", "ongoing")
_SMOKING = ("never", "former", "current")
_RM_TYPES = ("primary", "secondary", "none")
_GROUPS = ("rm", "control")
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n"}

#: table -> column -> type ("text", "real", "integer", "bool", "date"), required, range or vocabulary.
SCHEMA: dict[str, dict[str, dict[str, Any]]] = {
    "women": {
        "woman_id": {"type": "text", "required": True, "key": True},
        "age": {"type": "real", "required": True, "range": (15, 55)},
        "bmi": {"type": "real", "required": False, "range": (12, 70)},
        "prior_losses": {"type": "integer", "required": True, "range": (0, 50)},
        "prior_live_births": {"type": "integer", "required": True, "range": (0, 30)},
        "rm_type": {"type": "text", "required": True, "values": _RM_TYPES},
        "smoking": {"type": "text", "required": False, "values": _SMOKING},
        "pcos": {"type": "bool", "required": True},
        "group": {"type": "text", "required": True, "values": _GROUPS},
        "recruitment_date": {"type": "date", "required": True},
        "followup_end": {"type": "date", "required": True},
    },
    "episodes": {
        "woman_id": {"type": "text", "required": True, "key": True},
        "episode_date": {"type": "date", "required": True, "key": True},
        "outcome": {"type": "text", "required": True, "values": EPISODE_OUTCOMES},
        "gestational_weeks": {"type": "real", "required": True, "range": (0, 45)},
    },
}
# gestational weeks allowed per outcome (inclusive low, exclusive high)
_WEEKS = {
    "loss": (0.0, 24.0),
    "stillbirth": (24.0, 45.01),
    "live_birth": (22.0, 45.01),
    "ongoing": (0.0, 45.01),
}


@dataclass(frozen=True)
class DBIssue:
    """One problem in the follow-up database.

    Attributes
    ----------
    table : str
        ``women``, ``episodes`` or ``database``.
    row : str or None
        Where: ``line 5`` (CSV) or the primary key (``W003`` / ``W003 2024-05-01``); None for the table.
    column : str or None
    message : str
    """

    table: str
    row: str | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = [f"table '{self.table}'"]
        if self.row is not None:
            where.append(self.row)
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}"


class FollowupDataError(ClinicalDataError):
    """The follow-up database is malformed; carries every problem found.

    Parameters
    ----------
    source : str
        The folder, file or URL (password masked).
    issues : sequence of DBIssue
    """

    def __init__(self, source: str, issues: Iterable[DBIssue]) -> None:
        self.source = str(source)
        self.issues = tuple(issues)
        n = len(self.issues)
        lines = "\n".join(f"  - {i}" for i in self.issues)
        super().__init__(
            f"{self.source}: {n} problem{'s' if n != 1 else ''} in the follow-up database:\n{lines}"
        )


@dataclass
class FollowupDB:
    """The two tables of the follow-up database (validated, typed).

    Attributes
    ----------
    women : pandas.DataFrame
        Columns of ``SCHEMA["women"]``: text as str, age/bmi float64, counts
        int64, pcos bool, dates datetime64[ns]; sorted by woman_id.
    episodes : pandas.DataFrame
        Columns of ``SCHEMA["episodes"]``; sorted by woman_id, episode_date.
    source : str
    """

    women: pd.DataFrame
    episodes: pd.DataFrame
    source: str = "<in-memory follow-up database>"
    attrs: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ reading


def _is_url(source: str) -> bool:
    return "://" in source


def _mask(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for the message
        return url


def _sql_url(source: str | os.PathLike[str]) -> str | None:
    s = str(source)
    if _is_url(s):
        return s
    if Path(s).suffix.lower() in (".sqlite", ".db", ".sqlite3"):
        return f"sqlite:///{Path(s).resolve()}"
    return None


def read_followup(
    source: str | os.PathLike[str], *, validate: bool = True, immune_women: Iterable[str] | None = None
) -> FollowupDB:
    """Read (and validate) the follow-up database.

    Parameters
    ----------
    source : str or PathLike
        A folder with ``women.csv`` and ``episodes.csv``, a ``.sqlite``/``.db``
        file, or an SQLAlchemy URL (``sqlite:///path``, ``postgresql://...``).
    validate : bool, default True
        Raise :class:`FollowupDataError` on any problem (always raised for
        values that cannot be parsed).
    immune_women : iterable of str, optional
        The women of the immune table: women on only one side are problems too
        (:func:`check_immune_women`).

    Returns
    -------
    FollowupDB

    Raises
    ------
    FollowupDataError
    """
    import pandas as pd

    url = _sql_url(source)
    issues: list[DBIssue] = []
    if url is None:
        folder = Path(source)
        name = str(folder)
        raw = {}
        if not folder.is_dir():
            raise FollowupDataError(
                name, [DBIssue("database", None, None, "no such folder, .sqlite/.db file or URL")]
            )
        for table in SCHEMA:
            p = folder / f"{table}.csv"
            if not p.is_file():
                issues.append(DBIssue(table, None, None, f"{p.name} is missing"))
                continue
            try:
                raw[table] = pd.read_csv(p, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                issues.append(DBIssue(table, None, None, f"cannot read {p.name}: {exc}"))
        rows = {t: [f"line {i + 2}" for i in range(len(df))] for t, df in raw.items()}
    else:
        name = _mask(url)
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).is_file():
            raise FollowupDataError(name, [DBIssue("database", None, None, "the SQLite file does not exist")])
        raw = _read_sql(url, name, issues)
        rows = {}
        for t, df in raw.items():
            keys = [c for c, spec in SCHEMA[t].items() if spec.get("key") and c in df.columns]
            rows[t] = (
                [" ".join(str(v) for v in r) for r in df[keys].itertuples(index=False)]
                if keys
                else [f"row {i + 1}" for i in range(len(df))]
            )
    if issues:
        raise FollowupDataError(name, issues)
    women, episodes = (_parse(t, raw[t], rows[t], issues) for t in ("women", "episodes"))
    women.attrs["rows"], episodes.attrs["rows"] = rows["women"], rows["episodes"]
    db = FollowupDB(women=women, episodes=episodes, source=name)
    if issues:
        raise FollowupDataError(name, issues)
    if validate:
        validate_followup(db, immune_women=immune_women)
    db.women = women.sort_values("woman_id", kind="stable").reset_index(drop=True)
    db.episodes = episodes.sort_values(["woman_id", "episode_date"], kind="stable").reset_index(drop=True)
    return db


def _read_sql(url: str, name: str, issues: list[DBIssue]) -> dict[str, pd.DataFrame]:
    import pandas as pd
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver, reported by name
        raise FollowupDataError(name, [DBIssue("database", None, None, f"cannot open: {exc}")]) from None
    out: dict[str, pd.DataFrame] = {}
    try:
        with engine.connect() as con:
            have = set(sa.inspect(con).get_table_names())
            for table in SCHEMA:
                if table not in have:
                    issues.append(DBIssue(table, None, None, "the database has no such table"))
                    continue
                df = pd.read_sql_table(table, con)
                out[table] = df.astype(object).where(df.notna(), "").astype(str)
    except sa.exc.SQLAlchemyError as exc:
        raise FollowupDataError(name, [DBIssue("database", None, None, f"cannot read: {exc}")]) from None
    finally:
        engine.dispose()
    return out


def _parse(table: str, raw: pd.DataFrame, rows: list[str], issues: list[DBIssue]) -> pd.DataFrame:
    """Typed columns; every unparseable or out-of-vocabulary value is an issue."""
    import numpy as np
    import pandas as pd

    schema = SCHEMA[table]
    missing = [c for c in schema if c not in raw.columns]
    for c in missing:
        issues.append(DBIssue(table, None, c, "column is missing"))
    out = {}
    for col, spec in schema.items():
        if col in missing:
            continue
        s = raw[col].astype(str).str.strip()
        blank = (s == "") | s.str.lower().isin(["nan", "none", "nat", "null"]) & (col != "rm_type")
        kind = spec["type"]
        if spec["required"]:
            for i in np.flatnonzero(blank.to_numpy()):
                if not (col == "followup_end"):  # reported as "no follow-up" by validation
                    issues.append(DBIssue(table, rows[i], col, "value is missing"))
        if kind == "text":
            v = s.where(~blank, "")
            if col in ("group", "rm_type", "smoking", "outcome"):
                v = v.str.lower().str.replace(" ", "_", regex=False)
                if col == "rm_type":
                    v = v.where(v != "", "none")
            if "values" in spec:
                for i in np.flatnonzero(((v != "") & ~v.isin(spec["values"])).to_numpy()):
                    issues.append(
                        DBIssue(table, rows[i], col, f"{s.iloc[i]!r} is not one of {list(spec['values'])}")
                    )
            out[col] = v.astype(object)
        elif kind in ("real", "integer"):
            num = pd.to_numeric(s.where(~blank, None), errors="coerce")
            bad = num.isna() & ~blank
            for i in np.flatnonzero(bad.to_numpy()):
                issues.append(DBIssue(table, rows[i], col, f"{s.iloc[i]!r} is not a number"))
            if kind == "integer":
                frac = num.notna() & (num != np.round(num))
                for i in np.flatnonzero(frac.to_numpy()):
                    issues.append(DBIssue(table, rows[i], col, f"{s.iloc[i]!r} is not a whole number"))
            lo, hi = spec.get("range", (-np.inf, np.inf))
            rng = num.notna() & ((num < lo) | (num > hi))
            for i in np.flatnonzero(rng.to_numpy()):
                issues.append(DBIssue(table, rows[i], col, f"{s.iloc[i]} is outside {lo}-{hi}"))
            num = num.astype("float64")
            out[col] = num.fillna(-1).astype("int64") if kind == "integer" else num
        elif kind == "bool":
            low = s.str.lower()
            ok = low.isin(_TRUE | _FALSE)
            for i in np.flatnonzero((~ok & ~blank).to_numpy()):
                issues.append(DBIssue(table, rows[i], col, f"{s.iloc[i]!r} is not 0/1 (yes/no)"))
            out[col] = low.isin(_TRUE)
        else:  # date
            d = pd.to_datetime(s.where(~blank, None), errors="coerce", format="ISO8601")
            for i in np.flatnonzero((d.isna() & ~blank).to_numpy()):
                issues.append(DBIssue(table, rows[i], col, f"{s.iloc[i]!r} is not an ISO date (YYYY-MM-DD)"))
            out[col] = d.astype("datetime64[ns]")
    return pd.DataFrame(out, index=raw.index)


# ------------------------------------------------------------------------------------------ validation


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


# ------------------------------------------------------------------------------------------ writing


def _text_frames(db: FollowupDB) -> dict[str, pd.DataFrame]:
    """Both tables as text columns (ISO dates, 0/1 booleans, empty for missing)."""
    import pandas as pd

    out = {}
    for table, df in (("women", db.women), ("episodes", db.episodes)):
        cols = {}
        for col, spec in SCHEMA[table].items():
            s = df[col]
            kind = spec["type"]
            if kind == "date":
                cols[col] = pd.to_datetime(s).dt.strftime("%Y-%m-%d").fillna("")
            elif kind == "bool":
                cols[col] = s.astype(bool).astype(int).astype(str)
            elif kind == "real":
                cols[col] = s.astype("float64").map(lambda v: "" if v != v else repr(float(v)))
            elif kind == "integer":
                cols[col] = s.astype("int64").astype(str)
            else:
                cols[col] = s.astype(str).replace({"nan": ""})
        out[table] = pd.DataFrame(cols)
    return out


def write_followup(db: FollowupDB, path_or_url: str | os.PathLike[str]) -> str:
    """Write both tables to a CSV folder, a SQLite file or an SQLAlchemy URL, atomically.

    A folder gets ``women.csv`` and ``episodes.csv`` (each written to a
    temporary file and renamed); a ``.sqlite``/``.db`` path is built as a
    temporary file and renamed into place; another URL is written in one
    transaction (tables replaced). Dates are ISO text, booleans 0/1.

    Returns
    -------
    str
        The folder, file or (masked) URL written.
    """
    frames = _text_frames(db)
    s = str(path_or_url)
    if _is_url(s) and not s.startswith("sqlite:///"):
        _write_sql(s, frames)
        return _mask(s)
    url = _sql_url(s) if not s.startswith("sqlite:///") else s
    if url is None:
        folder = Path(s)
        folder.mkdir(parents=True, exist_ok=True)
        for table, df in frames.items():
            atomic_write_text(folder / f"{table}.csv", df.to_csv(index=False, lineterminator="\n"))
        return str(folder)
    target = Path(url[len("sqlite:///") :])
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        _write_sql(f"sqlite:///{tmp}", frames)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return str(target)


def _write_sql(url: str, frames: dict[str, pd.DataFrame]) -> None:
    import sqlalchemy as sa

    types = {"text": sa.Text, "real": sa.Float, "integer": sa.Integer, "bool": sa.Integer, "date": sa.Text}
    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:  # one transaction: all or nothing
            for table, df in frames.items():
                typed = df.copy()
                for col, spec in SCHEMA[table].items():
                    if spec["type"] in ("real", "integer", "bool"):
                        import pandas as pd

                        typed[col] = pd.to_numeric(typed[col].replace("", None))
                typed = typed.astype(object).where(typed.notna(), None)
                typed.to_sql(
                    table,
                    con,
                    if_exists="replace",
                    index=False,
                    dtype={c: types[s["type"]]() for c, s in SCHEMA[table].items()},
                )
    finally:
        engine.dispose()
