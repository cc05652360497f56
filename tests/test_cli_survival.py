"""``flowtools survival``: synth -> validate -> outcomes -> evaluate -> fit -> apply, and a bad database."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flowtools._cli.survival import survival_app
from flowtools.synth import make_cohort

runner = CliRunner()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_surv")
    make_cohort(d / "cohort", n_women=40, seed=2, write_fcs=False)
    return d


def test_cli_round_trip(cohort):
    fu = cohort / "fu"
    r = runner.invoke(survival_app, ["synth", str(cohort / "cohort"), "--out", str(fu), "--seed", "1"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        survival_app, ["validate", str(fu / "followup.sqlite"), "--immune", str(cohort / "cohort"), "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["women"] == 40
    r = runner.invoke(
        survival_app, ["outcomes", f"sqlite:///{fu / 'followup.sqlite'}", "--out", str(cohort / "o.csv")]
    )
    assert r.exit_code == 0, r.output
    assert (cohort / "o.csv").read_text().startswith("woman_id,group,followup_months")
    out = cohort / "ev"
    r = runner.invoke(
        survival_app,
        [
            "evaluate",
            str(cohort / "cohort"),
            str(fu),
            "--out",
            str(out),
            "--repeats",
            "1",
            "--splits",
            "3",
            "--bootstrap",
            "3",
            "--no-figures",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert set(doc["harrell_c"]) == {"clinical", "immune", "clinical + immune"}
    assert (out / "survival_evaluation.json").is_file()
    assert doc["gain"]["ci_method"] == "bootstrap"
    r = runner.invoke(
        survival_app,
        ["evaluate", str(cohort / "cohort"), str(fu), "--out", str(out), "--repeats", "1", "--splits", "3"]
        + ["--bootstrap", "20", "--ci", "fixed", "--no-figures"],
    )
    assert r.exit_code == 0, r.output
    assert "treated as fixed" in r.output
    r = runner.invoke(survival_app, ["evaluate", str(cohort / "cohort"), str(fu), "--ci", "wide"])
    assert r.exit_code == 1 and "ci must be 'bootstrap' or 'fixed'" in r.output
    model = cohort / "m.json"
    r = runner.invoke(
        survival_app, ["fit", str(cohort / "cohort"), str(fu), "--out", str(model), "--bootstrap", "10"]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(survival_app, ["apply", str(model), str(cohort / "cohort"), str(fu), "--json"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)
    assert len(preds) == 40 and 0 <= preds[0]["p_12"] <= preds[0]["p_24"] <= 1


def test_cli_bad_database(tmp_path):
    (tmp_path / "women.csv").write_text("woman_id,age\nW1,abc\n")
    (tmp_path / "episodes.csv").write_text("woman_id,episode_date,outcome,gestational_weeks\n")
    r = runner.invoke(survival_app, ["validate", str(tmp_path)])
    assert r.exit_code == 1
    assert "'abc' is not a number" in r.output and "column is missing" in r.output
    r = runner.invoke(survival_app, ["validate", str(tmp_path / "nope.sqlite")])
    assert r.exit_code == 1 and "does not exist" in r.output
