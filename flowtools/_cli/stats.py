"""``flowtools compare`` and ``flowtools predict fit|evaluate|apply`` (mounted by :mod:`flowtools.cli`).

Heavy modules (pandas, scikit-learn, matplotlib) are imported inside the commands.
Exit status: 0 success, 1 failure (bad input), 2 partial (``apply``: some women refused).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["compare_command", "predict_app"]

console = Console()
err_console = Console(stderr=True)

predict_app = typer.Typer(
    help="Predict the next loss (or RM vs control): fit, evaluate (nested CV), apply.",
    no_args_is_help=True,
    add_completion=False,
)

_IMMUNE_HELP = (
    "Gate output folder, its populations.csv or per_woman.csv (counts come from populations.csv "
    "beside it), or a synthetic cohort folder (its truth/women.csv)."
)
_MISSING_HELP = "Missing values / unmatched women: error (stop), drop (drop those women), impute (median)."


def _fail(exc: Exception) -> None:
    err_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _load(immune: Path, clinical: Path, missing: str, *, impute_in_folds: bool = False) -> tuple[Any, Any]:
    """Counts and clinical record; with ``impute_in_folds`` gaps stay for the CV folds to impute."""
    from flowtools._cli.survival import _counts
    from flowtools.stats.tables import read_clinical

    counts = _counts(immune)
    # imputing here would fill gaps with the median of all women before the CV (a leak): the
    # prediction commands validate gaps only and let each training fold impute its own median
    if impute_in_folds and missing == "impute":
        import pandas as pd

        from flowtools.errors import SheetIssue
        from flowtools.stats.errors import ClinicalDataError

        try:
            raw = pd.read_csv(clinical, dtype=str, keep_default_na=False)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            issue = SheetIssue(None, None, f"cannot read the file: {exc}")
            raise ClinicalDataError(clinical, [issue]) from None
        raw.attrs["source"] = str(clinical)
        return counts, raw
    return counts, read_clinical(clinical, missing=missing)


def _immune_file(immune: Path) -> Path:
    """The file the counts were read from (hashed into the provenance record)."""
    if immune.is_dir():
        if (immune / "populations.csv").exists() or not (immune / "truth" / "women.csv").is_file():
            return immune / "populations.csv"
        return immune / "truth" / "women.csv"
    if immune.name.startswith("per_woman"):
        return immune.with_name("populations.csv")
    return immune


def _inputs(immune: Path, clinical: Path) -> dict[str, Path]:
    return {"clinical": clinical, "immune": _immune_file(immune)}


def compare_command(
    per_woman: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    clinical: Annotated[Path, typer.Option("--clinical", help="Clinical record CSV.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("comparison"),
    covariates: Annotated[str, typer.Option(help="Comma-separated adjustment covariates.")] = "age,bmi",
    batch: Annotated[str, typer.Option(help="Batch column ('' for none).")] = "plate",
    subgroup: Annotated[str, typer.Option(help="RM subgroup column ('' for none).")] = "rm_type",
    missing: Annotated[str, typer.Option(help=_MISSING_HELP)] = "error",
    test: Annotated[
        str,
        typer.Option(
            help="% of parent test: logit-normal (default: between-woman variance, precision weights), "
            "quasi-binomial, quasi-binomial-hc (sandwich SEs), ols-logit."
        ),
    ] = "logit-normal",
    correction: Annotated[
        str, typer.Option(help="Multiple testing within (subgroup, scale): bh (default) or two-level.")
    ] = "bh",
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="Draw volcano, forest, distributions.")
    ] = True,
    analytes: Annotated[
        Path | None,
        typer.Option(
            "--analytes",
            help="Bead-array per-woman table (flowtools beads run: per_woman.csv): also compare "
            "each analyte (log10 concentration, Mann-Whitney and Welch, BH q) into analytes_comparison.csv.",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Compare RM women with controls, population by population (logit-normal regression, BH q-values)."""
    from flowtools.errors import FlowtoolsError
    from flowtools.stats.comparison import compare as run_compare

    try:
        counts, clin = _load(per_woman, clinical, missing)
        covs = tuple(c.strip() for c in covariates.split(",") if c.strip())
        res = run_compare(
            counts,
            clin,
            covariates=covs,
            batch=batch or None,
            subgroup=subgroup or None,
            missing=missing,
            test=test,
            correction=correction,
        )
        paths = res.to_files(out, inputs=_inputs(per_woman, clinical))
        if figures:
            from flowtools.stats.figures import comparison_figures

            paths += comparison_figures(res, out)
        analyte_hits: list[dict[str, Any]] = []
        if analytes is not None:
            from flowtools.io.tables import write_table
            from flowtools.provenance import provenance_record
            from flowtools.stats.analytes import compare_analytes

            cmp = compare_analytes(analytes, clinical)
            params = {
                "test": "Mann-Whitney and Welch on log10 concentration, BH q",
                "censoring": "<LLOQ as LLOQ/2, >ULOQ as ULOQ",
            }
            prov = provenance_record(
                inputs={"analytes": analytes, "clinical": clinical},
                parameters=params,
                command="flowtools compare --analytes",
            )
            paths += list(write_table(cmp, out / "analytes_comparison", prov))
            sig = cmp[cmp["q_mannwhitney"] < 0.05]
            analyte_hits = sig[["analyte", "fold_change", "q_mannwhitney"]].to_dict(orient="records")
    except (FlowtoolsError, ValueError, OSError) as exc:
        _fail(exc)
    t = res.table
    main = t[t["subgroup"] == "all RM"]
    hits = main[main["q"] < 0.05]
    if json_out:
        sys.stdout.write(
            json.dumps(
                {
                    "out": str(out),
                    "files": [str(p) for p in paths],
                    "significant": hits[["population", "scale", "effect", "q"]].to_dict(orient="records"),
                    "significant_analytes": analyte_hits,
                    "parameters": res.parameters,
                },
                indent=2,
            )
            + "\n"
        )
        return
    from rich.markup import escape

    estimable = main["p"].notna().sum()
    console.print(
        f"[green]comparison written[/] {escape(str(out))}: {res.parameters['n_rm']} RM vs "
        f"{res.parameters['n_control']} controls, {len(main)} tests ({estimable} estimable), "
        f"{len(hits)} with q < 0.05 " + escape(f"[test: {res.parameters['test']}, correction: {correction}]"),
        highlight=False,
        soft_wrap=True,
    )
    for _, r in hits.iterrows():
        console.print(
            escape(
                f"  {r['population']} [{r['scale']}] effect {r['effect']:+.3f} "
                f"({r['ci_low']:+.3f}..{r['ci_high']:+.3f})"
                + (
                    f", {r['diff_pct']:+.2f} points"
                    f" ({r['diff_pct_ci_low']:+.2f}..{r['diff_pct_ci_high']:+.2f})"
                    if r["diff_pct"] == r["diff_pct"]
                    else ""
                )
                + f" q={r['q']:.3g}"
            ),
            highlight=False,
            soft_wrap=True,
        )
    if analytes is not None:
        console.print(
            f"analytes: {len(analyte_hits)} with q < 0.05 (Mann-Whitney on log10 concentration) -> "
            f"{escape(str(out / 'analytes_comparison.csv'))}",
            highlight=False,
            soft_wrap=True,
        )
        for h in analyte_hits:
            text = f"  {h['analyte']} fold change {h['fold_change']:.2f} q={h['q_mannwhitney']:.3g}"
            console.print(escape(text), highlight=False)
    for w in res.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(w)}", highlight=False, soft_wrap=True)
    if len(main) and estimable == 0:
        err_console.print(
            "[red]error:[/] no population could be tested (see the warnings and the table's note column)",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


def _analyte_features(path: Path) -> Any:
    """log10 of each woman's bead-array concentrations (the censoring rule of flowtools.stats.analytes)."""
    import numpy as np

    from flowtools.stats.analytes import analyte_wide

    wide = analyte_wide(path).set_index("woman_id")
    return np.log10(wide.where(wide > 0))


@predict_app.command("evaluate")
def evaluate(
    per_woman: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    clinical: Annotated[Path, typer.Option("--clinical", help="Clinical record CSV.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("prediction"),
    task: Annotated[str, typer.Option(help="next_loss (RM women) or rm_vs_control.")] = "next_loss",
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of the outer 5-fold CV.")] = 5,
    permutations: Annotated[int, typer.Option(min=0, help="Permutations for the test of the AUC gain.")] = 99,
    transform: Annotated[str, typer.Option(help="Immune features: logit or clr.")] = "logit",
    missing: Annotated[str, typer.Option(help=_MISSING_HELP)] = "error",
    ci: Annotated[
        str,
        typer.Option(
            help="Interval of the AUCs and the gain: bootstrap (women resampled around the whole nested CV; "
            "accounts for the CV's own variability) or delong (fast, narrower: the CV's variability is "
            "left out)."
        ),
    ] = "bootstrap",
    bootstrap: Annotated[
        int, typer.Option(min=20, help="Bootstrap replicates of the whole nested CV (--ci bootstrap).")
    ] = 200,
    analytes: Annotated[
        Path | None,
        typer.Option(
            "--analytes",
            help="Bead-array per-woman table (flowtools beads run: per_woman.csv): its log10 "
            "concentrations join the immune features (<LLOQ as LLOQ/2, >ULOQ as ULOQ).",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Repeated nested CV of clinical, immune and clinical + immune models: AUC, gain, calibration."""
    import warnings

    from flowtools.errors import FlowtoolsError
    from flowtools.stats.errors import LeakageWarning
    from flowtools.stats.figures import prediction_figures
    from flowtools.stats.predict import evaluate_models

    try:
        counts, clin = _load(per_woman, clinical, missing, impute_in_folds=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LeakageWarning)  # shown below, from ev.warnings
            ev = evaluate_models(
                counts,
                clin,
                task=task,
                transform=transform,
                missing=missing,
                n_repeats=repeats,
                n_permutations=permutations,
                ci=ci,
                n_bootstrap=bootstrap,
                seed=seed,
                extra_immune=None if analytes is None else _analyte_features(analytes),
            )
        paths = ev.to_files(out, inputs=_inputs(per_woman, clinical)) + prediction_figures(ev, out)
    except (FlowtoolsError, ValueError, OSError) as exc:
        _fail(exc)
    if json_out:
        sys.stdout.write(
            json.dumps(
                {
                    "out": str(out),
                    "auc": ev.auc.to_dict(orient="records"),
                    "gain": ev.gain,
                    "warnings": ev.warnings,
                    "files": [str(p) for p in paths],
                },
                indent=2,
                default=float,
            )
            + "\n"
        )
        return
    for _, r in ev.auc.iterrows():
        console.print(
            f"  {r['model']:<18} AUC {r['auc']:.3f} ({r['ci_low']:.3f}-{r['ci_high']:.3f})  "
            f"calibration slope {r['calibration_slope']:.2f}  Brier {r['brier']:.3f}",
            highlight=False,
        )
    g = ev.gain
    if "estimate" in g:
        pp = "" if g.get("p_permutation") is None else f", permutation p = {g['p_permutation']:.3g}"
        console.print(
            f"  gain of clinical + immune over clinical: {g['estimate']:+.3f} "
            f"({g['ci_low']:+.3f}..{g['ci_high']:+.3f}){pp}",
            highlight=False,
        )
    for w in ev.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


@predict_app.command("fit")
def fit(
    per_woman: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    clinical: Annotated[Path, typer.Option("--clinical", help="Clinical record CSV.", show_default=False)],
    model_out: Annotated[Path, typer.Option("--out", help="Where to save the model (JSON).")] = Path(
        "model.json"
    ),
    task: Annotated[str, typer.Option(help="next_loss (RM women) or rm_vs_control.")] = "next_loss",
    model: Annotated[
        str, typer.Option(help="clinical, immune or 'clinical + immune'.")
    ] = "clinical + immune",
    transform: Annotated[str, typer.Option(help="Immune features: logit or clr.")] = "logit",
    margin: Annotated[float, typer.Option(min=0.0, help="Refusal margin beyond the training range.")] = 0.1,
    missing: Annotated[str, typer.Option(help=_MISSING_HELP)] = "error",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fit the final model on all women and save it with its provenance."""
    from flowtools.errors import FlowtoolsError
    from flowtools.provenance import file_sha256
    from flowtools.stats.predict import fit_model, save_model

    try:
        counts, clin = _load(per_woman, clinical, missing)
        m = fit_model(
            counts,
            clin,
            task=task,
            model=model,
            transform=transform,
            missing=missing,
            margin=margin,
            seed=seed,
        )
        m.provenance["inputs"] = {k: file_sha256(v) for k, v in _inputs(per_woman, clinical).items()}
        save_model(m, model_out)
    except (FlowtoolsError, ValueError, OSError) as exc:
        _fail(exc)
    console.print(
        f"[green]model saved[/] {model_out}: {m.model}, task {m.task}, {m.n_train} women "
        f"({m.n_events} events), {len(m.features)} features, penalty C={m.penalty['C']:g}",
        highlight=False,
        soft_wrap=True,
    )


@predict_app.command("apply")
def apply(
    per_woman: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    clinical: Annotated[
        Path | None,
        typer.Option(
            "--clinical",
            help="Clinical record CSV of the new women (a `predict fit` model).",
            show_default=False,
        ),
    ] = None,
    model_path: Annotated[
        Path, typer.Option("--model", help="Model saved by `predict fit`, or by `survival fit` (live birth).")
    ] = Path("model.json"),
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Follow-up database holding the new women (a `survival fit` model).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Predictions CSV.")] = Path("predictions.csv"),
) -> None:
    """Predict for new women (probability with a 95% interval); refuse women outside the training range.

    With a model of ``survival fit`` for live birth (``--outcome time_to_live_birth`` or
    ``first_pregnancy``) and ``--db``: each woman's probability of a live birth by 12 and 24 months
    after sampling, with the interval of the model's bootstrap refits.
    """
    from flowtools.errors import FlowtoolsError
    from flowtools.provenance import atomic_write_text
    from flowtools.stats.survival import is_survival_model_file

    if is_survival_model_file(model_path):
        _apply_survival(per_woman, model_path, db, out)
        return
    from flowtools.stats.predict import apply_model, load_model

    try:
        m = load_model(model_path)  # first: a missing or unreadable model file is the error to report
        if clinical is None:
            msg = f"{model_path}: a `predict fit` model needs --clinical (the new women's clinical records)"
            raise ValueError(msg)
        counts, clin = _load(per_woman, clinical, "error")
        pred = apply_model(m, counts, clin, refuse="mark")
        atomic_write_text(out, pred.to_csv(index=False, lineterminator="\n"))
    except (FlowtoolsError, ValueError, OSError) as exc:
        _fail(exc)
    refused = pred[pred["refused"] != ""]
    console.print(f"[green]predictions written[/] {out}: {len(pred) - len(refused)} women", highlight=False)
    for _, r in refused.iterrows():
        err_console.print(
            f"[yellow]refused[/] {r['woman_id']}: {r['refused']}", highlight=False, soft_wrap=True
        )
    if len(refused):
        raise typer.Exit(1 if len(refused) == len(pred) else 2)


def _apply_survival(per_woman: Path, model_path: Path, db: str | None, out: Path) -> None:
    """``predict apply`` with a live-birth survival model: P(live birth by each horizon) per woman."""
    from flowtools.errors import FlowtoolsError
    from flowtools.provenance import atomic_write_text
    from flowtools.stats.survival import load_survival_model, predict_live_birth

    try:
        if db is None:
            msg = f"{model_path}: a `survival fit` model needs --db (the follow-up database of the new women)"
            raise ValueError(msg)
        from flowtools._cli.survival import _counts
        from flowtools.io.clinical_db import read_followup

        m = load_survival_model(model_path)
        fdb = read_followup(db)
        counts = _counts(per_woman)
        pred = predict_live_birth(m, fdb, counts)
        atomic_write_text(out, pred.to_csv(index=False, lineterminator="\n"))
    except (FlowtoolsError, ValueError, OSError) as exc:
        _fail(exc)
    console.print(
        f"[green]predictions written[/] {out}: {len(pred)} women, P(live birth) by "
        + ", ".join(f"{h:g}" for h in m.horizons)
        + " months",
        highlight=False,
    )
