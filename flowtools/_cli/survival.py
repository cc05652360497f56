"""``flowtools survival validate|outcomes|evaluate|fit|apply|synth`` (mounted by :mod:`flowtools.cli`).

Time to live birth / pregnancy from the clinical follow-up database (CSV folder,
SQLite file or SQLAlchemy URL). Heavy modules are imported inside the commands.
Exit status: 0 success, 1 failure (bad input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowtools._cli._common import console, fail

__all__ = ["survival_app"]

survival_app = typer.Typer(
    help="Time to live birth / pregnancy from the follow-up database: validate, evaluate, fit, apply.",
    no_args_is_help=True,
    add_completion=False,
)

_DB_HELP = (
    "Follow-up database: a folder with women.csv + episodes.csv, a .sqlite/.db file or an SQLAlchemy URL."
)
_OUTCOME_HELP = (
    "time_to_live_birth, time_to_pregnancy, or first_pregnancy (the first pregnancy's live birth vs loss "
    "as competing events: cause-specific Cox hazards, cumulative incidence of live birth; its C is "
    "Wolbers': losses ranked below every live birth)."
)
_IMMUNE_HELP = "Gate output folder (populations.csv) or a synthetic cohort folder (its truth/women.csv)."


def _counts(immune: Path) -> Any:
    from flowtools.stats.tables import tables_from_gate, tables_from_truth

    if (
        immune.is_dir()
        and (immune / "truth" / "women.csv").is_file()
        and not (immune / "populations.csv").exists()
    ):
        return tables_from_truth(immune)
    return tables_from_gate(immune)


def _errors() -> tuple[type[BaseException], ...]:
    from flowtools.errors import FlowtoolsError

    return (FlowtoolsError, ValueError, OSError)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


@survival_app.command("validate")
def validate(
    db: Annotated[str, typer.Argument(help=_DB_HELP, show_default=False)],
    immune: Annotated[
        Path | None, typer.Option("--immune", help="Also check the women against this immune table.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Validate the follow-up database; every problem is listed (table, row, column)."""
    from flowtools.io.clinical_db import read_followup

    try:
        ids = None
        if immune is not None:
            ids = sorted(set(_counts(immune)["woman_id"].astype(str)))
        fdb = read_followup(db, immune_women=ids)
    except _errors() as exc:
        if json_out:
            issues = [str(i) for i in getattr(exc, "issues", ())] or [str(exc)]
            _print_json({"valid": False, "issues": issues})
        raise fail(exc) from None
    summary = {
        "valid": True,
        "source": fdb.source,
        "women": len(fdb.women),
        "episodes": len(fdb.episodes),
        "outcomes": {str(k): int(v) for k, v in fdb.episodes["outcome"].value_counts().items()},
    }
    if json_out:
        _print_json(summary)
        return
    console.print(
        f"[green]valid[/]: {summary['women']} women, {summary['episodes']} episodes {summary['outcomes']}",
        highlight=False,
    )


@survival_app.command("outcomes")
def outcomes(
    db: Annotated[str, typer.Argument(help=_DB_HELP, show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="CSV file of the derived outcomes.")] = Path(
        "outcomes.csv"
    ),
) -> None:
    """Derive the per-woman outcomes (time to live birth, first pregnancy, time to pregnancy, first loss)."""
    from flowtools.io.clinical_db import read_followup
    from flowtools.provenance import atomic_write_text
    from flowtools.stats.survival import derive_outcomes

    try:
        o = derive_outcomes(read_followup(db))
        atomic_write_text(out, o.reset_index().to_csv(index=False, lineterminator="\n"))
    except _errors() as exc:
        raise fail(exc) from None
    console.print(f"[green]outcomes written[/] {out}: {len(o)} women", highlight=False)


@survival_app.command("evaluate")
def evaluate(
    immune: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    db: Annotated[str, typer.Argument(help=_DB_HELP, show_default=False)],
    outcome: Annotated[str, typer.Option(help=_OUTCOME_HELP)] = "time_to_live_birth",
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("survival"),
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of the outer CV.")] = 3,
    splits: Annotated[int, typer.Option(min=2, help="Outer folds.")] = 5,
    permutations: Annotated[int, typer.Option(min=0, help="Permutations for the test of the gain.")] = 0,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap replicates of the intervals.")] = 50,
    ci: Annotated[
        str,
        typer.Option(
            "--ci",
            help="Intervals: 'bootstrap' (women resampled, the whole nested CV re-run: honest) or 'fixed' "
            "(the out-of-fold predictions treated as fixed: fast, narrower).",
        ),
    ] = "bootstrap",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Draw KM / CIF figures.")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Nested CV of penalised Cox models (clinical, immune, both): C, td-AUC, calibration, gain."""
    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.survival import derive_outcomes, evaluate_survival

    try:
        counts = _counts(immune)
        fdb = read_followup(db)
        ev = evaluate_survival(
            counts,
            fdb,
            outcome=outcome,
            n_repeats=repeats,
            n_splits=splits,
            n_permutations=permutations,
            n_bootstrap=bootstrap,
            ci=ci,
            seed=seed,
        )
        paths = ev.to_files(out)
        if figures:
            from flowtools.stats.survival_figures import survival_figures

            paths += survival_figures(derive_outcomes(fdb), ev, out)
    except _errors() as exc:
        raise fail(exc) from None
    if json_out:
        _print_json({"out": str(out), "files": [str(p) for p in paths], **ev.summary()})
        return
    c_name = "Wolbers C" if outcome == "first_pregnancy" else "Harrell C"
    for _, r in ev.concordance.iterrows():
        console.print(
            f"{r['model']:>18}: {c_name} {r['harrell_c']:.3f} "
            f"({r['harrell_ci_low']:.3f}-{r['harrell_ci_high']:.3f})"
            f", Uno C {r['uno_c']:.3f}, AUC@12 {r['auc_12']:.3f}",
            highlight=False,
        )
    g = ev.gain.get("harrell_c")
    if g:
        console.print(
            f"gain of clinical + immune: {g['estimate']:+.3f} ({g['ci_low']:+.3f}..{g['ci_high']:+.3f})"
            + (f", permutation p = {ev.gain['p_permutation']:.3g}" if ev.gain.get("p_permutation") else ""),
            highlight=False,
        )
    console.print(f"intervals: {ev.parameters['ci_description']}", highlight=False)
    console.print(f"[green]written[/] {out}", highlight=False)


@survival_app.command("fit")
def fit(
    immune: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    db: Annotated[str, typer.Argument(help=_DB_HELP, show_default=False)],
    model: Annotated[
        str, typer.Option(help="clinical, immune or 'clinical + immune'.")
    ] = "clinical + immune",
    outcome: Annotated[str, typer.Option(help=_OUTCOME_HELP)] = "time_to_live_birth",
    out: Annotated[Path, typer.Option("--out", help="Model file (JSON).")] = Path("survival_model.json"),
    bootstrap: Annotated[int, typer.Option(min=1, help="Bootstrap refits for the intervals.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Fit the final Cox model on all women (for ``apply``)."""
    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.survival import fit_survival_model

    try:
        m = fit_survival_model(
            _counts(immune), read_followup(db), outcome=outcome, model=model, n_bootstrap=bootstrap, seed=seed
        )
        m.save(out)
    except _errors() as exc:
        raise fail(exc) from None
    console.print(f"[green]model written[/] {out} ({m.n_train} women, {m.n_events} events)", highlight=False)


@survival_app.command("apply")
def apply(
    model: Annotated[Path, typer.Argument(help="Model file from 'survival fit'.", show_default=False)],
    immune: Annotated[Path, typer.Argument(help=_IMMUNE_HELP, show_default=False)],
    db: Annotated[str, typer.Argument(help="Follow-up database holding the new women.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="CSV of the predictions.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """A new woman's probability of live birth by 12 and 24 months, with a bootstrap interval.

    A ``first_pregnancy`` model gives the probability that her first pregnancy ends in a live birth by
    then (losses competing); a ``time_to_pregnancy`` model that of a pregnancy.
    """
    from flowtools.io.clinical_db import read_followup
    from flowtools.stats.survival import load_survival_model, model_features

    try:
        m = load_survival_model(model)
        fdb = read_followup(db)
        pred = m.apply(model_features(m, _counts(immune), fdb))
        if out is not None:
            from flowtools.provenance import atomic_write_text

            atomic_write_text(out, pred.to_csv(index=False, lineterminator="\n"))
    except _errors() as exc:
        raise fail(exc) from None
    if json_out:
        _print_json(pred.to_dict(orient="records"))
        return
    for _, r in pred.iterrows():
        cells = [
            f"{h:g} mo {r[f'p_{h:g}']:.2f} ({r[f'p_{h:g}_low']:.2f}-{r[f'p_{h:g}_high']:.2f})"
            for h in m.horizons
        ]
        console.print(f"{r['woman_id']}: " + ", ".join(cells), highlight=False)


@survival_app.command("synth")
def synth(
    cohort: Annotated[
        Path, typer.Argument(help="Synthetic cohort folder (flowtools synth).", show_default=False)
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("followup"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    loss_to_followup: Annotated[float, typer.Option(help="Share lost to follow-up.")] = 0.18,
) -> None:
    """Write a synthetic follow-up database (CSV + SQLite + truth) for a synthetic cohort."""
    from flowtools.synth.followup import make_followup

    try:
        r = make_followup(cohort, out, seed=seed, loss_to_followup=loss_to_followup)
    except _errors() as exc:
        raise fail(exc) from None
    console.print(
        f"[green]follow-up written[/] {out}: {r.n_women} women, {r.n_episodes} episodes, {r.n_lost} lost",
        highlight=False,
    )
