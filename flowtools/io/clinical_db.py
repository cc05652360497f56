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

This module is the public home of all these names and holds the writing. The
schema and the records are defined in :mod:`flowtools.io._followup_schema`,
reading in :mod:`flowtools.io._followup_read`, validation in
:mod:`flowtools.io._followup_validate`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from flowtools.io._followup_read import _is_url, _mask, _sql_url, read_followup
from flowtools.io._followup_schema import EPISODE_OUTCOMES, SCHEMA, DBIssue, FollowupDataError, FollowupDB
from flowtools.io._followup_validate import (
    OVERLAP_TOLERANCE_DAYS,  # noqa: F401 - public here as before, though not in __all__
    check_immune_women,
    validate_followup,
)
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
