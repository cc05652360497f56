"""Where the study's gating templates are: in a wheel (package data) or in the source tree."""

from __future__ import annotations

from pathlib import Path

__all__ = ["study_template", "templates_dir"]

STUDY_TEMPLATES = {"TBNK-NK": "rm_tbnk_nk.yaml", "Treg-Th": "rm_treg_th.yaml"}


def templates_dir() -> Path:
    """The folder holding the study templates (``gating_templates/``)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "gating_templates", here.parent / "gating_templates"):
        if candidate.is_dir():
            return candidate
    msg = "the study templates (gating_templates/) are not installed"
    raise FileNotFoundError(msg)


def study_template(tube: str) -> Path:
    """The study template for a tube (``TBNK-NK`` or ``Treg-Th``)."""
    return templates_dir() / STUDY_TEMPLATES[tube]
