"""The follow-up database: schema, CSV / SQLite / URL round trips, every kind of validation error."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from flowtools.errors import ClinicalDataError
from flowtools.io.clinical_db import SCHEMA, FollowupDataError, read_followup, write_followup

HEADER = ",".join(SCHEMA["women"])
WOMEN = f"""{HEADER}
W1,31,22.5,3,0,primary,never,0,rm,2024-01-01,2026-01-01
W2,35,,0,1,none,current,1,control,2024-01-01,2025-01-01
W3,28,30.1,2,1,secondary,,no,rm,2024-02-01,2024-08-01
"""
EPISODES = """woman_id,episode_date,outcome,gestational_weeks
W1,2024-04-01,loss,10
W1,2025-03-01,live_birth,39
W3,2024-07-01,ongoing,20
"""


def _folder(tmp: Path, women: str = WOMEN, episodes: str = EPISODES) -> Path:
    d = tmp / "db"
    d.mkdir(exist_ok=True)
    (d / "women.csv").write_text(women)
    (d / "episodes.csv").write_text(episodes)
    return d


def _issues(exc: pytest.ExceptionInfo) -> list[str]:
    return [str(i) for i in exc.value.issues]


def test_read_types_and_schema(tmp_path):
    db = read_followup(_folder(tmp_path))
    assert list(db.women.columns) == list(SCHEMA["women"])
    assert list(db.episodes.columns) == list(SCHEMA["episodes"])
    w = db.women.set_index("woman_id")
    assert w.loc["W2", "rm_type"] == "none" and pd.isna(w.loc["W2", "bmi"])
    assert w["pcos"].tolist() == [False, True, False]
    assert str(w["recruitment_date"].dtype) == "datetime64[ns]"
    assert db.episodes["outcome"].tolist() == ["loss", "live_birth", "ongoing"]


@pytest.mark.parametrize("target", ["csv", "sqlite", "url"])
def test_round_trip(tmp_path, target):
    db = read_followup(_folder(tmp_path))
    if target == "csv":
        dest = tmp_path / "copy"
        write_followup(db, dest)
        back = read_followup(dest)
    elif target == "sqlite":
        dest = tmp_path / "f.sqlite"
        write_followup(db, dest)
        back = read_followup(dest)
    else:
        url = f"sqlite:///{tmp_path / 'u.db'}"
        write_followup(db, url)
        back = read_followup(url)
    pd.testing.assert_frame_equal(back.women, db.women)
    pd.testing.assert_frame_equal(back.episodes, db.episodes)


def test_failed_write_leaves_nothing(tmp_path):
    db = read_followup(_folder(tmp_path))
    db.women = db.women.drop(columns=["age"])
    with pytest.raises(KeyError):
        write_followup(db, tmp_path / "bad.sqlite")
    assert not any(p.name.startswith(("bad", ".bad")) for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("women", "episodes", "expected"),
    [
        # episode before recruitment
        (
            WOMEN,
            EPISODES.replace("2024-04-01", "2023-12-01"),
            "table 'episodes', line 2, column 'episode_date'",
        ),
        # episode after follow-up end
        (WOMEN, EPISODES.replace("2024-07-01", "2024-09-01"), "after the follow-up end"),
        # duplicate episode
        (WOMEN, EPISODES + "W1,2024-04-01,loss,9\n", "duplicate episode"),
        # a woman with no follow-up
        (WOMEN.replace("2024-01-01,2025-01-01", "2024-01-01,2024-01-01"), EPISODES, "no follow-up"),
        (WOMEN.replace("2024-01-01,2025-01-01", "2024-01-01,"), EPISODES, "no follow-up"),
        # follow-up end before recruitment
        (WOMEN.replace("2024-01-01,2025-01-01", "2024-01-01,2023-06-01"), EPISODES, "before recruitment"),
        # outcome outside the vocabulary
        (WOMEN, EPISODES.replace("ongoing", "miscarried"), "column 'outcome': 'miscarried' is not one of"),
        # unknown woman
        (WOMEN, EPISODES + "W9,2024-05-01,loss,8\n", "unknown woman 'W9'"),
        # types and ranges
        (
            WOMEN.replace("W1,31,", "W1,abc,"),
            EPISODES,
            "table 'women', line 2, column 'age': 'abc' is not a number",
        ),
        (WOMEN.replace("W1,31,", "W1,70,"), EPISODES, "column 'age': 70 is outside 15-55"),
        (WOMEN.replace("22.5", "7"), EPISODES, "column 'bmi'"),
        (WOMEN.replace("W1,31,22.5,3", "W1,31,22.5,-1"), EPISODES, "column 'prior_losses'"),
        (WOMEN.replace("W1,31,22.5,3", "W1,31,22.5,2.5"), EPISODES, "not a whole number"),
        (WOMEN, EPISODES.replace("loss,10", "loss,30"), "inconsistent with outcome 'loss'"),
        (WOMEN, EPISODES.replace("live_birth,39", "stillbirth,20"), "inconsistent with outcome 'stillbirth'"),
        (WOMEN, EPISODES.replace("loss,10", "loss,50"), "50 is outside 0-45"),
        (WOMEN, EPISODES.replace("2024-04-01", "01/04/2024"), "not an ISO date"),
        (WOMEN.replace(",0,rm,2024-01-01", ",maybe,rm,2024-01-01"), EPISODES, "column 'pcos'"),
        (WOMEN.replace("W1,31,22.5,3,0,primary", "W1,31,22.5,3,0,none"), EPISODES, "needs rm_type"),
        (WOMEN.replace("0,1,none", "0,1,primary"), EPISODES, "a control has rm_type"),
        (WOMEN.replace("never", "sometimes"), EPISODES, "column 'smoking'"),
        (WOMEN + "W1,30,22,0,0,none,never,0,control,2024-01-01,2025-01-01\n", EPISODES, "duplicate woman"),
        (WOMEN.replace(",group,", ",grp,"), EPISODES, "column 'group': column is missing"),
    ],
)
def test_validation_errors(tmp_path, women, episodes, expected):
    with pytest.raises(FollowupDataError) as exc:
        read_followup(_folder(tmp_path, women, episodes))
    assert isinstance(exc.value, ClinicalDataError)
    assert any(expected in s for s in _issues(exc)), _issues(exc)


def test_every_problem_collected(tmp_path):
    ep = EPISODES.replace("ongoing", "bad") + "W9,2024-05-01,loss,8\n"
    with pytest.raises(FollowupDataError) as exc:
        read_followup(_folder(tmp_path, WOMEN.replace("W1,31,", "W1,99,"), ep))
    assert len(exc.value.issues) >= 2  # parse problems are all reported together
    assert "problems in the follow-up database" in str(exc.value)


def test_unknown_women_both_ways(tmp_path):
    with pytest.raises(FollowupDataError) as exc:
        read_followup(_folder(tmp_path), immune_women=["W1", "W2", "W7"])
    text = _issues(exc)
    assert any("'W3' is not in the immune table" in s for s in text)
    assert any("'W7' of the immune table is not in the women table" in s for s in text)


def test_database_without_tables(tmp_path):
    path = tmp_path / "empty.sqlite"
    con = sqlite3.connect(path)
    con.execute("create table women (woman_id text)")
    con.commit()
    con.close()
    with pytest.raises(FollowupDataError) as exc:
        read_followup(path)
    assert any("table 'episodes'" in s and "no such table" in s for s in _issues(exc))
    with pytest.raises(FollowupDataError, match="does not exist"):
        read_followup(tmp_path / "nothing.sqlite")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "women.csv").write_text(WOMEN)
    with pytest.raises(FollowupDataError, match="episodes.csv is missing"):
        read_followup(tmp_path / "half")


def test_sqlite_rows_named_by_key(tmp_path):
    db = read_followup(_folder(tmp_path))
    path = tmp_path / "f.sqlite"
    write_followup(db, path)
    con = sqlite3.connect(path)
    con.execute("update episodes set outcome = 'unknown' where woman_id = 'W3'")
    con.commit()
    con.close()
    with pytest.raises(FollowupDataError) as exc:
        read_followup(path)
    assert any("W3 2024-07-01" in s and "column 'outcome'" in s for s in _issues(exc))


def test_overlapping_pregnancies(tmp_path):
    """A pregnancy that began (by its gestational weeks) before the previous episode ended is refused."""
    # W1's loss ended 2024-04-01; a birth at 39 weeks on 2024-10-01 began about 2024-01-16
    ep = EPISODES.replace("W1,2025-03-01,live_birth,39", "W1,2024-10-01,live_birth,39")
    with pytest.raises(FollowupDataError) as exc:
        read_followup(_folder(tmp_path, WOMEN, ep))
    msg = [s for s in _issues(exc) if "overlapping" in s]
    assert len(msg) == 1, _issues(exc)
    assert "table 'episodes', line 3, column 'episode_date'" in msg[0]
    assert "began about 2024-01-16" in msg[0] and "ended on 2024-04-01 (line 2)" in msg[0]
    # the rule's slack: 7 days before the previous end passes, 8 does not (a loss at 10 weeks: 56 days)
    ok = EPISODES.replace("W1,2025-03-01,live_birth,39", "W1,2024-05-20,loss,10")
    assert len(read_followup(_folder(tmp_path, WOMEN, ok)).episodes) == 3
    bad = EPISODES.replace("W1,2025-03-01,live_birth,39", "W1,2024-05-19,loss,10")
    with pytest.raises(FollowupDataError, match="overlapping pregnancies"):
        read_followup(_folder(tmp_path, WOMEN, bad))
    # an 'ongoing' record followed by the same pregnancy's birth is an overlap too; rows out of date order
    # are sorted first (the message names the later episode)
    ep = "woman_id,episode_date,outcome,gestational_weeks\n"
    ep += "W1,2025-03-01,live_birth,39\nW1,2024-12-01,ongoing,26\n"
    with pytest.raises(FollowupDataError) as exc:
        read_followup(_folder(tmp_path, WOMEN, ep))
    assert any("line 2, column 'episode_date': overlapping" in s for s in _issues(exc)), _issues(exc)
