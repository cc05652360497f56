"""The work a plate's worker process does: gate one sample, or give its events to a pooled gate.

Tasks are plain dicts (they travel to local processes and dask workers); the functions never
raise: a failure becomes the outcome's error, so one bad file never stops the plate.
"""

from __future__ import annotations

import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.analysis import populations
from flowtools.analysis.absolute import vol_nl
from flowtools.errors import FlowtoolsError, GatingError
from flowtools.gating.formats.gatingml import to_gatingml_string
from flowtools.gating.templates import Template, load_template, pool_values, resolve
from flowtools.io.fcs import read_fcs
from flowtools.pipeline.outcome import SampleOutcome, outcome_base
from flowtools.provenance import file_sha256

__all__ = ["gate_task", "geometry_from_json", "geometry_to_json", "pool_task"]


def _load_task(task: dict[str, Any]) -> tuple[Template, Any, dict[str, Any]]:
    """The template, the FCS sample and the pinned (pooled) geometries a worker task needs.

    With a normalisation model (``task["normalize"]``), the sample is the normalised one.
    """
    template = _template(task["template"], task["template_sha"])
    norm = task.get("normalize")
    if norm is not None:
        from flowtools.analysis.normalize import normalize_sample

        model = _model(norm["path"], norm["sha256"])
        sample = normalize_sample(task["row"]["file"], model, task["row"]["batch"], template=template,
                                  checked=True).to_sample()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # repairs are recorded on the sample
            sample = read_fcs(task["row"]["file"])
    return template, sample, {k: geometry_from_json(v) for k, v in task["pinned"].items()}


_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def _model(path: str, sha256: str) -> Any:
    """The normalisation model, cached per process by path and content hash."""
    from flowtools.analysis.normalize import CytoNorm

    key = (path, sha256)
    if key not in _MODEL_CACHE:
        if file_sha256(path) != sha256:
            msg = f"{path}: normalisation model changed while the run was going on; run again"
            raise GatingError(msg)
        _MODEL_CACHE[key] = CytoNorm.load(path)
    return _MODEL_CACHE[key]


def _normalize_note(norm: dict[str, Any], batch: str) -> str:
    return (f"normalised for batch {batch} with model {Path(norm['path']).name} "
            f"(sha256 {norm['sha256'][:12]}, CytoNorm {norm['mode']}, goal {norm['goal']})")


def gate_task(task: dict[str, Any]) -> SampleOutcome:
    """Gate one sample (runs in a worker process). Never raises: failures become outcomes."""
    row = task["row"]
    out = outcome_base(row)
    t0 = time.perf_counter()
    try:
        template, sample, pinned = _load_task(task)
        (resolved,) = resolve(template, [sample], sample_ids=[row["sample_id"]], pinned=pinned,
                              seed=task["seed"])
        if resolved.error is not None:
            out.error = f"{row['file']}: {resolved.error}"
        else:
            out.rows = populations.sample_rows(resolved, sample, template)
            out.decisions = resolved.decisions
            out.notes = dict(resolved.notes)
            if task.get("normalize") is not None:
                out.notes["normalize"] = _normalize_note(task["normalize"], row["batch"])
            out.gatingml = to_gatingml_string(resolved.strategy, resolved.gate_decisions()).decode("utf-8")
            out.n_events = sample.n_events
            out.vol_nl = vol_nl(sample.keywords)
            out.ok = True
            if task.get("after_gate") is not None:  # e.g. the report's plots, from the values in memory
                task["after_gate"](resolved, sample, out, task["out_dir"], task["sha256"])
    except (FlowtoolsError, OSError) as exc:
        out.error = f"{row['file']}: {exc}" if row["file"] not in str(exc) else str(exc)
    except Exception as exc:  # noqa: BLE001 - a bug on one file must not stop the plate; reported in full
        out.error = (f"{row['file']}: internal error {type(exc).__name__}: {exc}\n"
                     f"{traceback.format_exc(limit=5)}")
    out.seconds = time.perf_counter() - t0
    return out


def pool_task(task: dict[str, Any]) -> tuple[str, np.ndarray | None, str | None]:
    """A sample's contribution to a pooled gate (runs in a worker). Never raises."""
    row = task["row"]
    try:
        template, sample, pinned = _load_task(task)
        v = pool_values(template, sample, task["population"], pinned=pinned, sample_id=row["sample_id"],
                        seed=task["seed"], position=task["position"])
        return row["sample_id"], v, None
    except (FlowtoolsError, OSError) as exc:
        return row["sample_id"], None, str(exc)
    except Exception as exc:  # noqa: BLE001 - one sample's bug must not stop the plate; its gating reports it
        return row["sample_id"], None, f"internal error {type(exc).__name__}: {exc}"


_TEMPLATE_CACHE: dict[tuple[str, str], Template] = {}


def _template(path: str, sha256: str) -> Template:
    """The parsed template, cached per process by path and content hash (an edited file is re-read)."""
    key = (path, sha256)
    if key not in _TEMPLATE_CACHE:
        t = load_template(path)
        if t.sha256 != sha256:
            msg = f"{path}: template changed while the run was going on; run again"
            raise GatingError(msg)
        _TEMPLATE_CACHE[key] = t
    return _TEMPLATE_CACHE[key]


def geometry_to_json(g: Any) -> dict[str, Any]:
    """A pooled gate's geometry as plain JSON data (it travels to the workers and into cache keys)."""
    return {"type": type(g).__name__, **{k: _plain(v) for k, v in g.__dict__.items()}}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def geometry_from_json(d: dict[str, Any]) -> Any:
    """The geometry :func:`geometry_to_json` wrote."""
    from flowtools.gating import methods as m

    cls = getattr(m, d["type"])
    kwargs = {k: _tupled(v) for k, v in d.items() if k != "type"}
    return cls(**kwargs)


def _tupled(v: Any) -> Any:
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v
