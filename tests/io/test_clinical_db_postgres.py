"""The follow-up database on a PostgreSQL server, as a study server would hold it.

Runs only where ``FLOWTOOLS_TEST_POSTGRES_URL`` names a database the tests may write to (its
``women`` and ``episodes`` tables are replaced), e.g.
``postgresql+psycopg://user:password@localhost/ftdb``, and the driver is installed; skipped otherwise.
"""

from __future__ import annotations

import dataclasses
import os

import pandas as pd
import pytest

from flowtools.io.clinical_db import FollowupDataError, read_followup, write_followup
from flowtools.synth import make_cohort
from flowtools.synth.followup import make_followup

URL = os.environ.get("FLOWTOOLS_TEST_POSTGRES_URL", "")
pytestmark = pytest.mark.skipif(not URL, reason="set FLOWTOOLS_TEST_POSTGRES_URL to test on PostgreSQL")


@pytest.fixture(scope="module")
def followup(tmp_path_factory):
    d = tmp_path_factory.mktemp("pg")
    make_cohort(d / "cohort", n_women=30, seed=4, write_fcs=False)
    return read_followup(make_followup(d / "cohort", d / "fu", seed=4).sqlite)


def _engine():
    sa = pytest.importorskip("sqlalchemy")
    try:
        return sa.create_engine(URL)
    except Exception as exc:  # noqa: BLE001 - a missing driver: skip, the SQLite tests cover the code
        pytest.skip(f"cannot open {URL.split('@')[-1]}: {exc}")


def test_round_trip_on_postgres_equals_sqlite(followup):
    sa = pytest.importorskip("sqlalchemy")
    _engine().dispose()
    masked = write_followup(followup, URL)
    password = sa.engine.make_url(URL).password
    if password:  # what is returned (and may be printed or logged) never holds the password
        assert f":{password}@" not in masked
    back = read_followup(URL)
    pd.testing.assert_frame_equal(back.women, followup.women)
    pd.testing.assert_frame_equal(back.episodes, followup.episodes)


def test_postgres_rewrite_is_one_transaction(followup, monkeypatch):
    """A write that fails in the database half-way (women replaced, then episodes fail) changes nothing."""
    sa = pytest.importorskip("sqlalchemy")
    write_followup(followup, URL)
    fewer = dataclasses.replace(followup, women=followup.women.iloc[:5], episodes=followup.episodes.iloc[:0])
    real = pd.DataFrame.to_sql

    def failing(self, name, con, **kw):
        if name == "episodes":  # the women table is already replaced inside the transaction
            con.execute(sa.text("select no_such_column from women"))
        return real(self, name, con, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_sql", failing)
    with pytest.raises(sa.exc.ProgrammingError):
        write_followup(fewer, URL)
    monkeypatch.undo()
    engine = _engine()
    try:
        with engine.connect() as con:
            n = con.execute(sa.text("select count(*) from episodes")).scalar_one()
            n_women = con.execute(sa.text("select count(*) from women")).scalar_one()
    finally:
        engine.dispose()
    assert (n, n_women) == (len(followup.episodes), len(followup.women))
    pd.testing.assert_frame_equal(read_followup(URL).episodes, followup.episodes)


def test_postgres_without_tables_is_a_clear_error():
    sa = pytest.importorskip("sqlalchemy")
    engine = _engine()
    try:
        with engine.begin() as con:
            con.execute(sa.text("drop table if exists episodes"))
            con.execute(sa.text("drop table if exists women"))
    finally:
        engine.dispose()
    with pytest.raises(FollowupDataError) as exc:
        read_followup(URL)
    text = " ".join(str(i) for i in exc.value.issues)
    assert "women" in text and "episodes" in text
