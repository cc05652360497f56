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


def test_cli_first_pregnancy_competing(cohort):
    fu = cohort / "fu_cr"
    assert runner.invoke(survival_app, ["synth", str(cohort / "cohort"), "--out", str(fu)]).exit_code == 0
    args = ["--outcome", "first_pregnancy"]
    r = runner.invoke(
        survival_app,
        ["evaluate", str(cohort / "cohort"), str(fu), "--out", str(cohort / "ev_cr"), "--repeats", "1"]
        + ["--splits", "3", "--bootstrap", "2", "--no-figures", *args],
    )
    assert r.exit_code == 0, r.output
    assert "Wolbers C" in r.output
    model = cohort / "cr.json"
    r = runner.invoke(
        survival_app,
        [
            "fit",
            str(cohort / "cohort"),
            str(fu),
            "--out",
            str(model),
            "--bootstrap",
            "5",
            "--model",
            "clinical",
        ]
        + args,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(model.read_text())["format"] == "flowtools-competing-model/1"
    r = runner.invoke(survival_app, ["apply", str(model), str(cohort / "cohort"), str(fu), "--json"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)
    assert len(preds) == 40 and all(0 <= p["p_12"] <= p["p_24"] < 1 for p in preds)


def test_predict_apply_takes_a_live_birth_model(cohort, tmp_path):
    """``predict apply --model <survival fit model> --db`` gives P(live birth by 12/24 months) per woman."""
    from flowtools._cli.stats import predict_app
    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.survival import load_survival_model, predict_live_birth
    from flowtools.stats.tables import tables_from_truth

    fu = cohort / "fu_apply"
    assert runner.invoke(survival_app, ["synth", str(cohort / "cohort"), "--out", str(fu)]).exit_code == 0
    model = tmp_path / "lb.json"
    r = runner.invoke(
        survival_app,
        ["fit", str(cohort / "cohort"), str(fu), "--out", str(model), "--bootstrap", "8"],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "pred.csv"
    args = ["apply", str(cohort / "cohort"), "--model", str(model), "--out", str(out)]
    r = runner.invoke(predict_app, [*args, "--db", str(fu / "followup.sqlite")])
    assert r.exit_code == 0, r.output
    assert "P(live birth) by 12, 24 months" in r.output
    import pandas as pd

    got = pd.read_csv(out)
    assert list(got.columns[:4]) == ["woman_id", "p_12", "p_12_low", "p_12_high"]
    assert len(got) == 40
    assert ((got["p_12_low"] <= got["p_12"]) & (got["p_12"] <= got["p_12_high"])).all()
    assert (got["p_12"] <= got["p_24"] + 1e-12).all()
    # the same numbers as the library call, and as the model's own apply on its features
    m = load_survival_model(model)
    fdb = read_followup(fu / "followup.sqlite")
    counts = tables_from_truth(cohort / "cohort")
    lib = predict_live_birth(m, fdb, counts)
    pd.testing.assert_frame_equal(got, lib.reset_index(drop=True), check_dtype=False, atol=1e-12)
    # a survival model without --db: a clear error, exit 1 (a binary model without --clinical:
    # tests/stats/test_cli_stats.py)
    r = runner.invoke(predict_app, args)
    assert r.exit_code == 1 and "needs --db" in r.output
