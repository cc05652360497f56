"""``flowtools normalize fit`` / ``apply`` on a tiny synthetic batch cohort."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from flowtools._cli.normalize import normalize_app


def test_fit_apply_round_trip(tmp_path: Path) -> None:
    from flowtools._resources import study_template
    from flowtools.io.sample_sheet import read_sample_sheet
    from flowtools.synth.batch import make_batch_cohort

    res = make_batch_cohort(tmp_path / "c", n_plates=2, n_women=4, events=2000, seed=1)
    t = study_template("TBNK-NK")
    runner = CliRunner()
    model = tmp_path / "model.json"
    r = runner.invoke(normalize_app, ["fit", str(res.samples_csv), "-t", str(t), "--out", str(model),
                                      "--markers", "CD3,CD4,CD8", "--mode", "global", "--min-events", "500",
                                      "--anchors", "matched", "--soft", "0.2", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["batches"] == ["P01", "P02"] and s["markers"] == ["CD3", "CD4", "CD8"]
    doc = json.loads(model.read_text())
    assert doc["provenance"]["anchor_mode"] == "matched" and doc["params"]["soft"] == 0.2
    r = runner.invoke(normalize_app, ["apply", str(res.samples_csv), "--model", str(model), "--out",
                                      str(tmp_path / "norm"), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["files"] == 6
    assert len(read_sample_sheet(tmp_path / "norm" / "samples.csv")) == 6
    r = runner.invoke(normalize_app, ["apply", str(res.samples_csv), "--model", str(model), "--out",
                                      str(tmp_path / "norm2")])
    assert r.exit_code == 0, r.output
    assert "EMD before" in r.output


def test_fit_error_exits_non_zero(tmp_path: Path) -> None:
    from flowtools._resources import study_template
    from flowtools.synth.batch import make_batch_cohort

    res = make_batch_cohort(tmp_path / "c", n_plates=2, n_women=2, events=500, seed=1)
    r = CliRunner().invoke(normalize_app, ["fit", str(res.samples_csv), "-t", str(study_template("TBNK-NK")),
                                           "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 1
    assert "fewer than" in r.output and "D001-P01-TBNK" in r.output
    assert not (tmp_path / "m.json").exists()


def test_small_cluster_option_is_recorded_and_checked(tmp_path: Path) -> None:
    from flowtools._resources import study_template
    from flowtools.synth.batch import make_batch_cohort

    res = make_batch_cohort(tmp_path / "c", n_plates=2, n_women=3, events=2000, seed=2)
    t = str(study_template("TBNK-NK"))
    runner = CliRunner()
    model = tmp_path / "model.json"
    args = ["fit", str(res.samples_csv), "-t", t, "--out", str(model), "--markers", "CD3,CD4,CD8",
            "--clusters", "4", "--min-events", "500", "--json"]
    r = runner.invoke(normalize_app, [*args, "--small-cluster", "identity"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["small_cluster"] == "identity"
    assert json.loads(model.read_text())["params"]["small_cluster"] == "identity"
    r = runner.invoke(normalize_app, [*args[:-1], "--small-cluster", "coarse"])
    assert r.exit_code == 0, r.output
    assert json.loads(model.read_text())["params"]["small_cluster"] == "coarse"
    r = runner.invoke(normalize_app, [*args, "--small-cluster", "nearest"])
    assert r.exit_code == 1
    assert "small_cluster must be one of" in r.output
