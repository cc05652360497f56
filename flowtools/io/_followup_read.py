"""Reading the follow-up database from a CSV folder or an SQL database: :func:`read_followup`.

Part of :mod:`flowtools.io.clinical_db`, which re-exports the public names; import them from there.
Values are parsed into typed columns here; the cross-column rules are in
:mod:`flowtools.io._followup_validate`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from flowtools.io._followup_schema import _FALSE, _TRUE, SCHEMA, DBIssue, FollowupDataError, FollowupDB
from flowtools.io._followup_validate import validate_followup

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_followup"]


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
