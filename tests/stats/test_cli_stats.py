"""The compare and predict commands, mounted on a test app as flowtools.cli mounts them."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from flowtools._cli.stats import compare_command, predict_app

app = typer.Typer()
app.command("compare")(compare_command)
app.add_typer(predict_app, name="predict")


def test_compare_writes_tables_and_figures(small_cohort, tmp_path):
    out = tmp_path / "cmp"
    r = CliRunner().invoke(
        app,
        ["compare", str(small_cohort), "--clinical", str(small_cohort / "clinical.csv"), "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    for name in (
        "comparison.csv",
        "comparison.parquet",
        "comparison.provenance.json",
        "volcano.png",
        "forest.png",
        "distributions.png",
    ):
        assert (out / name).is_file(), name


def test_compare_bad_clinical_exits_1(small_cohort, tmp_path):
    bad = tmp_path / "c.csv"
    text = (small_cohort / "clinical.csv").read_text().splitlines()
    bad.write_text("\n".join([*text, text[1]]) + "\n")
    r = CliRunner().invoke(
        app, ["compare", str(small_cohort), "--clinical", str(bad), "--out", str(tmp_path)]
    )
    assert r.exit_code == 1 and "appears more than once" in r.output


def test_predict_fit_apply(small_cohort, tmp_path):
    m = tmp_path / "m.json"
    clin = str(small_cohort / "clinical.csv")
    r = CliRunner().invoke(app, ["predict", "fit", str(small_cohort), "--clinical", clin, "--out", str(m)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        app,
        [
            "predict",
            "apply",
            str(small_cohort),
            "--clinical",
            clin,
            "--model",
            str(m),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.csv").read_text().startswith("woman_id,probability,ci_low,ci_high,refused")
