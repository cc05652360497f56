"""The compare and predict commands, mounted on a test app as flowtools.cli mounts them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
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


def test_compare_summary_keeps_bracketed_scale_and_hashes_the_immune_table(tmp_path):
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from indep_cohort import IndepCohortSpec, make_indep_cohort

    counts, clin, _ = make_indep_cohort(IndepCohortSpec(n_rm=40, n_control=40, nk_shift=6, nk_fraction=1), 1)
    pops = counts.assign(sample_id=counts.woman_id + "-T", tube="T", pct_total=0.0)
    root = pops.drop_duplicates("woman_id").assign(
        population="Lymphocytes", count=lambda d: d.woman_id.map(
            counts[counts.parent == "Lymphocytes"].groupby("woman_id")["count"].sum()
        ), pct_parent=100.0
    )
    cols = ["sample_id", "woman_id", "tube", "population", "count", "pct_parent", "pct_total"]
    pd.concat([root[cols], pops[cols]]).to_csv(tmp_path / "populations.csv", index=False)
    clin.to_csv(tmp_path / "clinical.csv", index=False)
    out = tmp_path / "cmp"
    args = ["compare", str(tmp_path), "--clinical", str(tmp_path / "clinical.csv"), "--out", str(out)]
    r = CliRunner().invoke(app, [*args, "--no-figures", "--subgroup", ""])
    assert r.exit_code == 0, r.output
    assert "[test: logit-normal, correction: bh]" in r.output
    assert "NK cells [% of parent]" in r.output and "points" in r.output
    prov = json.loads((out / "comparison.provenance.json").read_text())
    assert set(prov["inputs"]) == {"clinical", "immune"}
    # plate fully confounded with group: nothing estimable, exit 1 with the reason
    confounded = clin.assign(plate=clin.group.map({"RM": "P1", "control": "P2"}))
    confounded.to_csv(tmp_path / "clinical.csv", index=False)
    r = CliRunner().invoke(app, [*args, "--no-figures", "--subgroup", ""])
    assert r.exit_code == 1 and "not estimable" in r.output


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
    # a binary model without --clinical, and a missing model file: each its own clear error, exit 1
    r = CliRunner().invoke(app, ["predict", "apply", str(small_cohort), "--model", str(m)])
    assert r.exit_code == 1 and "needs --clinical" in r.output
    r = CliRunner().invoke(app, ["predict", "apply", str(small_cohort), "--model", str(tmp_path / "no.json")])
    assert r.exit_code == 1 and "No such file" in r.output


def test_predict_evaluate_interval_method_is_chosen_and_recorded(small_cohort, tmp_path):
    import json

    clin = str(small_cohort / "clinical.csv")
    out = {}
    for ci in ("delong", "bootstrap"):
        out[ci] = tmp_path / ci
        r = CliRunner().invoke(app, ["predict", "evaluate", str(small_cohort), "--clinical", clin,
                                     "--out", str(out[ci]), "--repeats", "1", "--permutations", "0",
                                     "--ci", ci, "--bootstrap", "20", "--missing", "drop", "--json"])
        assert r.exit_code == 0, r.output
        rows = json.loads(r.output)["auc"]
        assert rows and all(row["ci_low"] <= row["auc"] <= row["ci_high"] for row in rows)
        assert ci in json.dumps(rows)  # the table says which interval each row carries
    r = CliRunner().invoke(app, ["predict", "evaluate", str(small_cohort), "--clinical", clin,
                                 "--out", str(tmp_path / "x"), "--ci", "wald"])
    assert r.exit_code != 0 and "ci must be one of" in r.output


def test_predict_evaluate_with_bead_analytes_in_the_immune_block(small_cohort, tmp_path):
    """A bead analyte that tracks the outcome lifts the immune model; <LLOQ rows enter as LLOQ/2."""
    import json

    import numpy as np

    clin = pd.read_csv(small_cohort / "clinical.csv", dtype={"woman_id": str})
    rng = np.random.default_rng(0)
    rows = []
    for _, w in clin.iterrows():
        loss = str(w.get("next_pregnancy_loss", "")).strip() in ("1", "1.0", "True")
        conc = float(np.exp(rng.normal(3.0 + 1.5 * loss, 0.3)))
        rows.append({"woman_id": w.woman_id, "analyte": "IL-6", "concentration": conc, "flag": "ok",
                     "limit": np.nan})
        rows.append({"woman_id": w.woman_id, "analyte": "IL-10", "concentration": np.nan, "flag": "<LLOQ",
                     "limit": 2.0})
    beads = tmp_path / "beads_per_woman.csv"
    pd.DataFrame(rows).to_csv(beads, index=False)
    common = ["predict", "evaluate", str(small_cohort), "--clinical", str(small_cohort / "clinical.csv"),
              "--repeats", "1", "--permutations", "0", "--ci", "delong", "--missing", "drop", "--json"]
    auc = {}
    for name, extra in (("cells", []), ("cells+beads", ["--analytes", str(beads)])):
        r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / name), *extra])
        assert r.exit_code == 0, r.output
        auc[name] = {row["model"]: row["auc"] for row in json.loads(r.output)["auc"]}
    assert auc["cells+beads"]["immune"] > max(0.8, auc["cells"]["immune"] + 0.1)
    bad = tmp_path / "bad.csv"
    bad.write_text("woman_id,analyte\nW001,IL-6\n")
    r = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "x"), "--analytes", str(bad)])
    assert r.exit_code == 1 and "bad.csv" in r.output and "concentration" in r.output


def test_compare_with_bead_analytes(small_cohort, tmp_path):
    import json

    import numpy as np

    clin = pd.read_csv(small_cohort / "clinical.csv", dtype={"woman_id": str})
    rng = np.random.default_rng(1)
    rows = [{"woman_id": w.woman_id, "analyte": "IL-6", "flag": "ok", "limit": np.nan,
             "concentration": float(np.exp(rng.normal(3.0 + 1.0 * (w.group == "RM"), 0.3)))}
            for _, w in clin.iterrows()]
    rows += [{"woman_id": w.woman_id, "analyte": "IL-10", "flag": "ok", "limit": np.nan,
              "concentration": float(np.exp(rng.normal(2.0, 0.3)))} for _, w in clin.iterrows()]
    beads = tmp_path / "beads.csv"
    pd.DataFrame(rows).to_csv(beads, index=False)
    out = tmp_path / "cmp"
    clin_csv = str(small_cohort / "clinical.csv")
    r = CliRunner().invoke(app, ["compare", str(small_cohort), "--clinical", clin_csv, "--out", str(out),
                                 "--no-figures", "--analytes", str(beads), "--json"])
    assert r.exit_code == 0, r.output
    hits = {h["analyte"]: h for h in json.loads(r.output)["significant_analytes"]}
    assert hits["IL-6"]["q_mannwhitney"] < 1e-10 and hits["IL-6"]["fold_change"] > 2  # planted: e^1 = 2.7
    table = pd.read_csv(out / "analytes_comparison.csv").set_index("analyte")
    assert set(table.index) == {"IL-6", "IL-10"} and (out / "analytes_comparison.parquet").is_file()
    assert 0.8 < table.loc["IL-10", "fold_change"] < 1.25  # no effect planted
