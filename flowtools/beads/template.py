"""The bead-panel template (YAML) and the plate-layout columns of the sample sheet.

A bead panel names the channels and the beads of a kit::

    name: legendplex_13plex
    units: pg/mL
    scatter: {x: FSC-A, y: SSC-A}       # bead groups by size
    classification: APC-A               # bead regions within a group
    reporter: PE-A                      # the analyte signal (median = MFI)
    groups:                             # in order of size: the first is the smallest
      - name: A
        regions:                        # in order of classification intensity (low to high)
          - {analyte: IL-5}
          - {analyte: IL-13, position: 2.9}   # optional expected peak (asinh units, see below)
      - name: B
        regions: [...]
    standards:
      top: 10000                        # concentration of standard level 1 (units above)
      dilution_factor: 4                # level k = top / dilution_factor ** (k - 1)
      n_points: 8                       # 7 or 8 in the kits
      labels: [C7, C6, C5, C4, C3, C2, C1, C0.5]   # optional names of levels 1..n (sheet values)
    sample_dilution: 2                  # samples' back-calculated values are multiplied by it
    min_beads: 35                       # fewer beads in a region: flagged

A region may carry its own ``top`` (kits with different top standards per analyte).
The classification channel is compared on ``asinh(x / classification_cofactor)``
(default cofactor 50), which is log-like for bright beads and tolerates values
at or below zero after compensation.

Sample sheet (plate layout)
---------------------------
The plate comes from a study sample sheet (:func:`flowtools.io.sample_sheet.read_sample_sheet`,
any tube name) with these extra columns, checked by :func:`read_bead_sheet`:

``role``
    ``standard``, ``sample`` or ``blank`` (default ``sample`` when the column is absent).
``standard_level``
    For standards: the level number ``1..n_points`` (1 = top) or one of the panel's
    ``labels``. Empty for other rows.
``dilution``
    Optional per-row sample dilution, overriding the panel's ``sample_dilution``.

The sheet's rule "one row per woman and tube" means standards and blanks need a
distinct ``woman_id`` each (their own ``sample_id`` is the usual choice); the
``woman_id`` of a standard or blank row is never used. For the same reason a woman measured
in several wells (replicates, or on several plates of one sheet) needs a distinct ``tube``
per well (e.g. ``beads``, ``beads-2``); her wells are combined in the per-woman table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowtools.errors import BeadAssayError, SampleSheetError, SheetIssue

__all__ = [
    "ROLES",
    "BeadGroup",
    "BeadPanel",
    "BeadRegion",
    "BeadWell",
    "StandardSeries",
    "load_panel",
    "panel_from_dict",
    "read_bead_sheet",
]

ROLES = ("standard", "sample", "blank")


@dataclass(frozen=True)
class BeadRegion:
    """One bead region: one analyte.

    Attributes
    ----------
    analyte : str
    position : float or None
        Expected classification peak (asinh units); None: learned from the plate.
    top : float or None
        Top standard concentration of this analyte; None: the panel's.
    """

    analyte: str
    position: float | None = None
    top: float | None = None


@dataclass(frozen=True)
class BeadGroup:
    """A bead group (one size class on scatter) and its regions, low to high classification."""

    name: str
    regions: tuple[BeadRegion, ...]


@dataclass(frozen=True)
class StandardSeries:
    """The standards' dilution series.

    Attributes
    ----------
    top : float
        Concentration of level 1.
    dilution_factor : float
    n_points : int
    labels : tuple of str
        Names of levels 1..n_points on the sheet (empty: numbers only).
    """

    top: float
    dilution_factor: float
    n_points: int
    labels: tuple[str, ...] = ()

    def concentration(self, level: int, top: float | None = None) -> float:
        """Nominal concentration of a level (1 = top)."""
        return float(top if top is not None else self.top) / self.dilution_factor ** (level - 1)


@dataclass(frozen=True)
class BeadPanel:
    """A validated bead-panel template; see the module docstring for the YAML fields."""

    name: str
    units: str
    scatter: tuple[str, str]
    classification: str
    reporter: str
    groups: tuple[BeadGroup, ...]
    standards: StandardSeries
    sample_dilution: float = 1.0
    min_beads: int = 35
    classification_cofactor: float = 50.0
    scatter_radius: float = 3.0
    source: str = "<in-memory panel>"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def analytes(self) -> list[str]:
        """Every analyte, group by group, in region order."""
        return [r.analyte for g in self.groups for r in g.regions]

    def region(self, analyte: str) -> tuple[BeadGroup, BeadRegion]:
        """The group and region of an analyte."""
        for g in self.groups:
            for r in g.regions:
                if r.analyte == analyte:
                    return g, r
        msg = f"{self.source}: analyte {analyte!r} is not in the panel"
        raise BeadAssayError(msg)

    def nominal(self, analyte: str, level: int) -> float:
        """Nominal concentration of an analyte's standard level."""
        return self.standards.concentration(level, self.region(analyte)[1].top)

    def level_of(self, value: str) -> int | None:
        """The level number of a sheet value (a number or a label), or None."""
        v = value.strip()
        if v in self.standards.labels:
            return self.standards.labels.index(v) + 1
        try:
            n = int(v)
        except ValueError:
            return None
        return n if 1 <= n <= self.standards.n_points else None


def _err(source: str, field_name: str, message: str) -> BeadAssayError:
    return BeadAssayError(f"{source}: field '{field_name}': {message}")


def _need(d: dict[str, Any], key: str, source: str, where: str) -> Any:
    if key not in d or d[key] is None or d[key] == "":
        raise _err(source, f"{where}{key}", "required field is missing")
    return d[key]


def _str(v: Any, source: str, name: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _err(source, name, f"must be a non-empty string, not {v!r}")
    return v.strip()


def _num(v: Any, source: str, name: str, *, low: float, inclusive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(float(v)):
        raise _err(source, name, f"must be a number, not {v!r}")
    x = float(v)
    if x < low or (x == low and not inclusive):
        raise _err(source, name, f"must be {'>=' if inclusive else '>'} {low:g}, not {x:g}")
    return x


_TOP_KEYS = {
    "name",
    "units",
    "scatter",
    "classification",
    "reporter",
    "groups",
    "standards",
    "sample_dilution",
    "min_beads",
    "classification_cofactor",
    "scatter_radius",
    "description",
    "version",
    "kit",
}


def panel_from_dict(d: Any, source: str = "<in-memory panel>") -> BeadPanel:
    """Build and validate a panel from its parsed YAML mapping.

    Parameters
    ----------
    d : mapping
    source : str
        Named in every error message (the file).

    Returns
    -------
    BeadPanel

    Raises
    ------
    BeadAssayError
        A missing, mistyped or inconsistent field; the message names the file and field.
    """
    if not isinstance(d, dict):
        msg = f"{source}: a bead panel must be a YAML mapping, not {type(d).__name__}"
        raise BeadAssayError(msg)
    unknown = sorted(set(map(str, d)) - _TOP_KEYS)
    if unknown:
        raise _err(source, unknown[0], f"unknown field (known: {', '.join(sorted(_TOP_KEYS))})")
    name = _str(_need(d, "name", source, ""), source, "name")
    units = _str(d.get("units", "pg/mL"), source, "units")
    sc = _need(d, "scatter", source, "")
    if not isinstance(sc, dict) or set(sc) != {"x", "y"}:
        raise _err(source, "scatter", "must be a mapping with keys x and y (e.g. {x: FSC-A, y: SSC-A})")
    scatter = (_str(sc["x"], source, "scatter.x"), _str(sc["y"], source, "scatter.y"))
    classification = _str(_need(d, "classification", source, ""), source, "classification")
    reporter = _str(_need(d, "reporter", source, ""), source, "reporter")
    if reporter == classification or reporter in scatter or classification in scatter:
        raise _err(source, "reporter", "scatter, classification and reporter channels must differ")
    groups_raw = _need(d, "groups", source, "")
    if not isinstance(groups_raw, list) or not groups_raw:
        raise _err(source, "groups", "must be a non-empty list of bead groups")
    groups: list[BeadGroup] = []
    seen: dict[str, str] = {}
    for gi, g in enumerate(groups_raw):
        where = f"groups[{gi}]"
        if not isinstance(g, dict):
            raise _err(source, where, "each group must be a mapping with name and regions")
        gname = _str(_need(g, "name", source, f"{where}."), source, f"{where}.name")
        regs = _need(g, "regions", source, f"{where}.")
        if not isinstance(regs, list) or not regs:
            raise _err(source, f"{where}.regions", "must be a non-empty list of {analyte: ...}")
        regions: list[BeadRegion] = []
        for ri, r in enumerate(regs):
            rw = f"{where}.regions[{ri}]"
            if isinstance(r, str):
                r = {"analyte": r}
            if not isinstance(r, dict):
                raise _err(source, rw, "must be a mapping {analyte: NAME, position: ..., top: ...}")
            bad = sorted(set(map(str, r)) - {"analyte", "position", "top"})
            if bad:
                raise _err(source, f"{rw}.{bad[0]}", "unknown field (known: analyte, position, top)")
            analyte = _str(_need(r, "analyte", source, f"{rw}."), source, f"{rw}.analyte")
            if analyte in seen:
                raise _err(source, f"{rw}.analyte", f"analyte {analyte!r} is already in {seen[analyte]}")
            seen[analyte] = rw
            pos = r.get("position")
            position = None if pos is None else _num(pos, source, f"{rw}.position", low=-1e9)
            top = r.get("top")
            regions.append(
                BeadRegion(analyte, position, None if top is None else _num(top, source, f"{rw}.top", low=0))
            )
        known = [x.position for x in regions if x.position is not None]
        if known and (
            len(known) != len(regions) or any(b <= a for a, b in zip(known, known[1:], strict=False))
        ):
            raise _err(
                source, f"{where}.regions", "positions must be given for every region or none, increasing"
            )
        groups.append(BeadGroup(gname, tuple(regions)))
    if len({g.name for g in groups}) != len(groups):
        raise _err(source, "groups", "group names must be unique")
    st = _need(d, "standards", source, "")
    if not isinstance(st, dict):
        raise _err(source, "standards", "must be a mapping {top, dilution_factor, n_points, labels}")
    top = _num(_need(st, "top", source, "standards."), source, "standards.top", low=0)
    dil = _num(_need(st, "dilution_factor", source, "standards."), source, "standards.dilution_factor", low=1)
    n_raw = _need(st, "n_points", source, "standards.")
    if isinstance(n_raw, bool) or not isinstance(n_raw, int) or not 4 <= n_raw <= 12:
        raise _err(source, "standards.n_points", f"must be an integer from 4 to 12, not {n_raw!r}")
    labels_raw = st.get("labels", [])
    if not isinstance(labels_raw, list) or (labels_raw and len(labels_raw) != n_raw):
        raise _err(source, "standards.labels", f"must be a list of {n_raw} names (levels 1..{n_raw})")
    labels = tuple(str(x).strip() for x in labels_raw)
    if len(set(labels)) != len(labels):
        raise _err(source, "standards.labels", "labels must be unique")
    sd = _num(d.get("sample_dilution", 1), source, "sample_dilution", low=0)
    mb = d.get("min_beads", 35)
    if isinstance(mb, bool) or not isinstance(mb, int) or mb < 1:
        raise _err(source, "min_beads", f"must be a positive integer, not {mb!r}")
    cof = _num(d.get("classification_cofactor", 50.0), source, "classification_cofactor", low=0)
    rad = _num(d.get("scatter_radius", 3.0), source, "scatter_radius", low=0.5, inclusive=True)
    return BeadPanel(
        name=name,
        units=units,
        scatter=scatter,
        classification=classification,
        reporter=reporter,
        groups=tuple(groups),
        standards=StandardSeries(top, dil, int(n_raw), labels),
        sample_dilution=sd,
        min_beads=int(mb),
        classification_cofactor=cof,
        scatter_radius=rad,
        source=source,
    )


def load_panel(path: str | os.PathLike[str]) -> BeadPanel:
    """Read and validate a bead-panel template.

    Parameters
    ----------
    path : path
        The YAML file.

    Returns
    -------
    BeadPanel

    Raises
    ------
    BeadAssayError
        Unreadable YAML or an invalid field (the message names the file and the field).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{p}: cannot read bead panel: {exc}"
        raise BeadAssayError(msg) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        msg = f"{p}: not valid YAML: {exc}"
        raise BeadAssayError(msg) from None
    return panel_from_dict(data, str(p))


@dataclass(frozen=True)
class BeadWell:
    """One well of a bead plate, from the sample sheet.

    Attributes
    ----------
    file : pathlib.Path
    sample_id, woman_id, plate, well : str
    role : {"standard", "sample", "blank"}
    level : int or None
        Standard level (1 = top) for standards.
    dilution : float
        Sample dilution (1 for standards and blanks).
    line : int
        Line on the sheet.
    """

    file: Path
    sample_id: str
    woman_id: str
    plate: str
    well: str
    role: str
    level: int | None
    dilution: float
    line: int = 0


def _column(extra: dict[str, str], name: str) -> str:
    for k, v in extra.items():
        if k.strip().lower() == name:
            return v.strip()
    return ""


def read_bead_sheet(
    path: str | os.PathLike[str], panel: BeadPanel, *, check_files: bool = True
) -> list[BeadWell]:
    """Read a bead plate's sample sheet and check its layout columns.

    Parameters
    ----------
    path : path
        The sample sheet (any tube names).
    panel : BeadPanel
        For the standard levels and the default sample dilution.
    check_files : bool, default True

    Returns
    -------
    list of BeadWell

    Raises
    ------
    SampleSheetError
        Every problem, each naming line and column: the sheet's own checks, an unknown
        ``role``, a standard without a valid ``standard_level``, a level on a non-standard
        row, a bad ``dilution``.
    """
    from flowtools.io.sample_sheet import read_sample_sheet

    sheet = read_sample_sheet(path, tubes=None, check_files=check_files)
    cols = {c.strip().lower() for c in sheet.extra_columns}
    issues: list[SheetIssue] = []
    wells: list[BeadWell] = []
    shown = ", ".join(panel.standards.labels) if panel.standards.labels else ""
    for row in sheet.rows:
        role = _column(row.extra, "role").lower() if "role" in cols else "sample"
        if role not in ROLES:
            issues.append(
                SheetIssue(row.line, "role", f"unknown role {role!r} (use standard, sample or blank)")
            )
            continue
        lv_cell = _column(row.extra, "standard_level")
        level = None
        if role == "standard":
            level = panel.level_of(lv_cell) if lv_cell else None
            if level is None:
                hint = f" or one of {shown}" if shown else ""
                issues.append(
                    SheetIssue(
                        row.line,
                        "standard_level",
                        f"standard row needs standard_level 1..{panel.standards.n_points}{hint}, "
                        f"got {lv_cell!r}",
                    )
                )
        elif lv_cell:
            issues.append(
                SheetIssue(row.line, "standard_level", f"a {role} row must not have a standard_level")
            )
        dil_cell = _column(row.extra, "dilution")
        dilution = panel.sample_dilution if role == "sample" else 1.0
        if dil_cell:
            try:
                dilution = float(dil_cell)
                if not math.isfinite(dilution) or dilution <= 0:
                    raise ValueError
            except ValueError:
                issues.append(
                    SheetIssue(row.line, "dilution", f"dilution must be a positive number, not {dil_cell!r}")
                )
        wells.append(
            BeadWell(
                row.file, row.sample_id, row.woman_id, row.plate, row.well, role, level, dilution, row.line
            )
        )
    if issues:
        raise SampleSheetError(path, issues)
    return wells
