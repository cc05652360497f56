"""Generate the synthetic study cohort described in ``shared/design/cohort.md``.

:func:`make_cohort` writes, under one output folder::

    fcs/<sample_id>.fcs        two tubes per woman (TBNK-NK, Treg-Th), FCS 3.1 float32
    samples.csv                the sample sheet (file, sample_id, woman_id, tube, plate, well,
                               acquisition_date)
    clinical.csv               one row per woman, as a clinical database exports it
    truth/<sample_id>.labels.npy   int16 leaf population code of every event
    truth/<sample_id>.qc.npy       uint8 artefact bits per event (files with artefacts only)
    truth/populations.json     code -> population path
    truth/women.csv            per woman and tube: true count and % of parent of every population
    truth/effects.json         the planted effects and the immune subgroup
    truth/artefacts.json       the acquisition artefacts planted, per file
    truth/params.json          seed, parameters and flowtools version

The truth is the biology: an event keeps its leaf population label in both
tubes, even where the tube lacks the markers to gate it (e.g. Treg in TBNK-NK,
NK subsets in Treg-Th); sum the leaves to the gateable parent there. Sample IDs
are per file (``S0001-TBNK``, ``S0001-TREG``); woman IDs are ``W001``... FCS
files carry canary personal keywords (``$SRC``, ``$OP``, ``PATIENT ID``, all
containing ``CANARY-PII``) that must never reach an output table.

Effects are planted only in the immune subgroup of RM women (shares of parent;
the untouched siblings of a changed population shrink proportionally so shares
still sum to 1). The next-pregnancy outcome of RM women follows a logistic model
of prior losses and age band plus a modest immune term (see
``truth/effects.json``), tuned so that clinical factors alone give an AUC of
about 0.63 and clinical + immune about 0.69 at best.

Randomness comes from one :class:`numpy.random.SeedSequence`: a cohort stream
(clinical record, groups, artefact placement), an instrument stream (one
spillover matrix per plate/day) and one stream per woman, split again per
purpose (composition, counts per tube, events per tube). A file therefore does
not depend on the order files are generated in, and the same seed gives
byte-identical outputs (no clock time is written anywhere).

The women, their plates, clinical record and outcome model are in
:mod:`flowtools.synth._cohort_women`; the FCS keywords, truth tables and file writers in
:mod:`flowtools.synth._cohort_files`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from flowtools.io.fcs_write import write_fcs as _write_fcs_file
from flowtools.provenance import provenance_record

# The women (groups, plates, clinical record, outcome model) and the file writers live in two private
# modules; their names stay importable from here, as synth.batch, synth.followup, tests and benchmarks
# import them.
from flowtools.synth._cohort_files import (  # noqa: F401 - re-exported
    _CANARY,
    _clock,
    _keywords,
    _save_npy,
    _truth_rows,
    _tube_spillover,
    _write_clinical,
    _write_csv,
    _write_json,
)
from flowtools.synth._cohort_women import (  # noqa: F401 - re-exported
    _AGE_BANDS,
    _AGE_LOG_OR,
    _IMMUNE_LOG_OR,
    _LOSS_RISK,
    _NK_LOG_OR_PER_SD,
    _NK_LOG_SD,
    _OUTCOME_NOTE,
    _WOMEN_PER_PLATE,
    _draw_clinical,
    _draw_women,
    _outcome_logit,
    _outcomes,
    _place_artefacts,
    _well,
    _Woman,
)
from flowtools.synth._events import channel_names, make_file_events
from flowtools.synth._model import (
    EFFECTS,
    LEAVES,
    NODES,
    PANELS,
    TUBES,
    apply_effects,
    draw_shares,
    leaf_probabilities,
    spillover_matrix,
)

__all__ = ["CohortResult", "CohortSpec", "make_cohort"]

_log = logging.getLogger(__name__)

_TUBE_TAG = {"TBNK-NK": "TBNK", "Treg-Th": "TREG"}
_NK = NODES.index("Singlets/Live/Lymphocytes/NK cells")
_LYMPH = NODES.index("Singlets/Live/Lymphocytes")

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class CohortSpec:
    """Parameters of a synthetic cohort (validated on construction).

    Parameters
    ----------
    n_women : int, default 24
        Women in the cohort; half (rounded up) have recurrent miscarriage (RM).
    seed : int, default 0
        Non-negative seed of every random draw.
    events : int, default 100_000
        Events per FCS file (a low-event well gets 3-8% of this).
    null : bool, default False
        Plant no effect at all (for calibration runs).
    immune_fraction : float, default 0.4
        Share of RM women in the immune subgroup, the only women with effects.
    artefacts : bool, default True
        Plant acquisition artefacts (clog, margin events, a low-event well) in a few files.

    Raises
    ------
    ValueError
        A parameter is out of range.
    """

    n_women: int = 24
    seed: int = 0
    events: int = 100_000
    null: bool = False
    immune_fraction: float = 0.4
    artefacts: bool = True

    def __post_init__(self) -> None:
        for name in ("n_women", "seed", "events"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                msg = f"{name} must be an int, not {value!r}"
                raise ValueError(msg)
        if not 1 <= self.n_women <= 9999:
            msg = f"n_women must be between 1 and 9999, not {self.n_women}"
            raise ValueError(msg)
        if self.seed < 0:
            msg = f"seed must be non-negative, not {self.seed}"
            raise ValueError(msg)
        if not 100 <= self.events <= 10_000_000:
            msg = f"events must be between 100 and 10,000,000 per file, not {self.events}"
            raise ValueError(msg)
        if not 0.0 <= float(self.immune_fraction) <= 1.0:
            msg = f"immune_fraction must be in [0, 1], not {self.immune_fraction}"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, object]:
        """Return the parameters as a JSON-ready dict."""
        d = asdict(self)
        d["n_women"], d["seed"], d["events"] = int(self.n_women), int(self.seed), int(self.events)
        d["immune_fraction"] = float(self.immune_fraction)
        return d


@dataclass(frozen=True)
class CohortResult:
    """What :func:`make_cohort` wrote.

    Attributes
    ----------
    out_dir, fcs_dir, truth_dir : pathlib.Path
        The output folder, its ``fcs/`` and its ``truth/`` folders.
    samples_csv, clinical_csv : pathlib.Path
        The sample sheet and the clinical table.
    spec : CohortSpec
        The parameters.
    n_women, n_rm, n_controls, n_immune_subgroup : int
        Women in the cohort, by group; the subgroup is drawn even with ``null``.
    n_files : int
        FCS files in the cohort (two per woman), written or not.
    n_events : int
        Events in all files together.
    files : tuple of pathlib.Path
        The FCS files written (empty when ``write_fcs=False``).
    """

    out_dir: Path
    fcs_dir: Path
    samples_csv: Path
    clinical_csv: Path
    truth_dir: Path
    spec: CohortSpec
    n_women: int
    n_rm: int
    n_controls: int
    n_immune_subgroup: int
    n_files: int
    n_events: int
    files: tuple[Path, ...]


def make_cohort(
    out_dir: str | os.PathLike[str],
    *,
    n_women: int = 24,
    seed: int = 0,
    events: int = 100_000,
    null: bool = False,
    immune_fraction: float = 0.4,
    artefacts: bool = True,
    write_fcs: bool = True,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> CohortResult:
    """Write a synthetic RM/control cohort: FCS files, sample sheet, clinical table and truth.

    Parameters
    ----------
    out_dir : str or PathLike
        Output folder; created if needed. It must be empty unless ``overwrite``.
    n_women : int, default 24
        Women (two FCS files each); half, rounded up, are RM, the rest controls.
    seed : int, default 0
        Seed of every draw; the same seed gives byte-identical outputs.
    events : int, default 100_000
        Events per file.
    null : bool, default False
        Plant no effect (neither in the cells nor in the outcome).
    immune_fraction : float, default 0.4
        Share of RM women in the immune subgroup, the only women with planted effects.
    artefacts : bool, default True
        Plant a clog, margin events and a low-event well in a few files.
    write_fcs : bool, default True
        Write the FCS files and per-event labels. With False only the tables
        and the per-woman truth are written (the same counts as with True).
    overwrite : bool, default False
        Allow a non-empty ``out_dir``: files of the same names are replaced,
        and ``fcs/*.fcs`` and ``truth/*.npy`` files this run did not write are
        removed, so the folder describes one cohort only.
    progress : callable(done, total), optional
        Called once per file, after it is written (after its counts are drawn
        when ``write_fcs`` is False); ``total`` = 2 x ``n_women``.

    Returns
    -------
    CohortResult

    Raises
    ------
    ValueError
        A parameter is out of range.
    FileExistsError
        ``out_dir`` is not empty and ``overwrite`` is False.

    Examples
    --------
    >>> res = make_cohort("demo", n_women=4, events=5000, seed=1)  # doctest: +SKIP
    >>> res.n_files  # doctest: +SKIP
    8
    """
    spec = CohortSpec(
        n_women=n_women,
        seed=seed,
        events=events,
        null=null,
        immune_fraction=immune_fraction,
        artefacts=artefacts,
    )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        msg = f"{out} exists and is not a folder"
        raise FileExistsError(msg)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        msg = f"{out} is not empty; pass overwrite=True to write over it"
        raise FileExistsError(msg)
    fcs_dir, truth_dir = out / "fcs", out / "truth"
    fcs_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)

    ss_cohort, ss_instrument, ss_women = np.random.SeedSequence(int(spec.seed)).spawn(3)
    rng = np.random.default_rng(ss_cohort)
    women = _draw_women(rng, spec)
    clinical = _draw_clinical(rng, women)
    planted = _place_artefacts(rng, spec)
    outcome_u = rng.random(spec.n_women)
    plates = sorted({w.plate for w in women})
    spills = {
        plate: spillover_matrix(np.random.default_rng(child))
        for plate, child in zip(plates, ss_instrument.spawn(len(plates)), strict=True)
    }

    truth_rows: list[list[str]] = []
    sample_rows: list[list[str]] = []
    artefact_log: dict[str, list[dict[str, object]]] = {}
    nk_pct: list[float] = []
    files: list[Path] = []
    written_npy: list[Path] = []
    n_total = 0
    done = 0
    width = max(4, len(str(spec.n_women)))
    for w, w_ss in zip(women, ss_women.spawn(spec.n_women), strict=True):
        streams = w_ss.spawn(1 + 2 * len(TUBES))
        shares = draw_shares(np.random.default_rng(streams[0]))
        if w.immune and not spec.null:
            shares = apply_effects(shares, EFFECTS)
        nk_pct.append(100.0 * shares[_NK])
        p = leaf_probabilities(shares)
        for j, tube in enumerate(TUBES):
            sample_id = f"S{w.index + 1:0{width}d}-{_TUBE_TAG[tube]}"
            file_no = 2 * w.index + j
            count_rng = np.random.default_rng(streams[1 + j])
            n_ev = spec.events
            if file_no in planted["low"]:
                n_ev = max(20, int(spec.events * count_rng.uniform(0.03, 0.08)))
                artefact_log.setdefault(sample_id, []).append({"kind": "low_events", "events": n_ev})
            counts = count_rng.multinomial(n_ev, p)
            n_total += n_ev
            well = _well(2 * (w.index % _WOMEN_PER_PLATE) + j)
            rel = f"fcs/{sample_id}.fcs"
            sample_rows.append([rel, sample_id, w.woman_id, tube, w.plate, well, w.date.isoformat()])
            truth_rows.extend(_truth_rows(w, tube, sample_id, counts, shares))
            if write_fcs:
                fe = make_file_events(
                    np.random.default_rng(streams[1 + len(TUBES) + j]),
                    tube,
                    counts,
                    spills[w.plate],
                    clog=file_no in planted["clog"],
                    margin=file_no in planted["margin"],
                )
                if fe.artefacts:
                    artefact_log.setdefault(sample_id, []).extend(fe.artefacts)
                    written_npy.append(_save_npy(truth_dir / f"{sample_id}.qc.npy", fe.qc))
                path = out / rel
                names, markers = channel_names(tube)
                _write_fcs_file(
                    path,
                    fe.events,
                    names,
                    markers=markers,
                    spillover=_tube_spillover(tube, spills[w.plate]),
                    keywords=_keywords(w, tube, sample_id, well, fe.duration_s, spec.seed),
                )
                written_npy.append(_save_npy(truth_dir / f"{sample_id}.labels.npy", fe.labels))
                files.append(path)
            done += 1
            if progress is not None:
                progress(done, 2 * spec.n_women)

    outcomes = _outcomes(women, clinical, np.array(nk_pct), outcome_u, null=spec.null)
    _write_csv(
        out / "samples.csv",
        ["file", "sample_id", "woman_id", "tube", "plate", "well", "acquisition_date"],
        sample_rows,
    )
    _write_clinical(out / "clinical.csv", women, clinical, outcomes)
    _write_csv(
        truth_dir / "women.csv",
        [
            "woman_id",
            "group",
            "immune_subgroup",
            "tube",
            "sample_id",
            "population",
            "parent",
            "count",
            "parent_count",
            "pct_parent",
            "expected_pct_parent",
        ],
        truth_rows,
    )
    _write_json(truth_dir / "populations.json", {str(k): path for k, path in enumerate(LEAVES)})
    subgroup = [w.woman_id for w in women if w.immune]
    _write_json(
        truth_dir / "effects.json",
        {
            "null": spec.null,
            "immune_fraction": float(spec.immune_fraction),
            "immune_subgroup": subgroup,
            "effects": [] if spec.null else [e.as_dict() for e in EFFECTS],
            "outcome": _OUTCOME_NOTE if not spec.null else {},
            "note": "Shares of parent; siblings of a changed population shrink proportionally "
            "so that shares still sum to 1.",
        },
    )
    _write_json(truth_dir / "artefacts.json", artefact_log)
    record = provenance_record(
        parameters={**spec.to_dict(), "write_fcs": write_fcs}, seed=int(spec.seed), command="synth"
    )
    record.pop("created", None)  # no clock time: same seed, same bytes
    record["tubes"] = {t: [list(c) for c in pairs] for t, pairs in PANELS.items()}
    _write_json(truth_dir / "params.json", record)

    written = {p.name for p in files} | {p.name for p in written_npy}
    for stale in [*fcs_dir.glob("*.fcs"), *truth_dir.glob("*.npy")]:
        if stale.name not in written:
            stale.unlink()

    n_rm = sum(w.group == "RM" for w in women)
    _log.info(
        "synthetic cohort: %d women, %d files, %d events -> %s", spec.n_women, 2 * spec.n_women, n_total, out
    )
    return CohortResult(
        out_dir=out,
        fcs_dir=fcs_dir,
        samples_csv=out / "samples.csv",
        clinical_csv=out / "clinical.csv",
        truth_dir=truth_dir,
        spec=spec,
        n_women=spec.n_women,
        n_rm=n_rm,
        n_controls=spec.n_women - n_rm,
        n_immune_subgroup=len(subgroup),
        n_files=2 * spec.n_women,
        n_events=n_total,
        files=tuple(files),
    )
