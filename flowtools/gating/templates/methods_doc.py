"""The reference of every ``method:`` a template may name, generated from the method registry.

``flowtools template methods`` prints it (``--json``, ``--markdown``: ``docs/methods.md``); the
registered methods come from :func:`flowtools.gating.methods.methods`, plus the resolver's own
``ref`` and ``bool``.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Sequence
from typing import Any


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else repr(float(v))


#: How to regenerate docs/methods.md (quoted by the freshness test's failure message).
METHODS_DOC_COMMAND = "flowtools template methods --markdown > docs/methods.md"

__all__ = ["METHODS_DOC_COMMAND", "allowed_text", "default_text", "md_text", "method_records",
           "methods_markdown"]


#: The methods the template resolver implements itself (not in the registry), as
#: :mod:`flowtools.gating.templates.yaml` reads them. Keys must equal ``model._RESOLVER_METHODS``.
_RESOLVER_DOCS: dict[str, dict[str, Any]] = {
    "ref": {
        "dims": "as its population",
        "summary": "Reuse another population's gate, or the other side of its threshold.",
        "description": (
            "The referenced population's gate, as computed for this sample, is applied again to this "
            "population's parent; with `side: negative` (or `positive`) a 1-D threshold is turned into "
            "its other side, so a marker's positive and negative populations share one cut. The "
            "referenced population must be listed earlier and be a data-driven or static gate."
        ),
        "args": [
            {"name": "population", "type": "population", "default": None, "required": True,
             "choices": None, "lo": None, "hi": None,
             "doc": "path, or name unique in the template, of the population whose gate is reused"},
            {"name": "side", "type": "text", "default": "same", "required": False,
             "choices": ["same", "positive", "negative"], "lo": None, "hi": None,
             "doc": "same: the same gate; positive: keep x >= cut; negative: keep x < cut "
                    "(1-D thresholds only)"},
        ],
    },
    "bool": {
        "dims": "0",
        "summary": "A Boolean combination (and, or, not) of other populations of the template.",
        "description": (
            "Events of the parent that are in all (`and`), any (`or`) or none (`not`) of the listed "
            "populations; a name written `!name` stands for the events not in it. The result is a "
            "Gating-ML Boolean gate."
        ),
        "args": [
            {"name": "op", "type": "text", "default": None, "required": True,
             "choices": ["and", "or", "not"], "lo": None, "hi": None, "doc": "the operation"},
            {"name": "of", "type": "list of populations", "default": None, "required": True,
             "choices": None, "lo": None, "hi": None,
             "doc": "paths or names of populations listed earlier; '!name' = not in it"},
        ],
    },
}

_TYPE_LABELS = {float: "number", int: "integer", str: "text", bool: "true/false", tuple: "pair [a, b]"}


def _dims_text(dims: Sequence[int]) -> str:
    """``(1,)`` -> ``"1"``; ``(1, 2, 3)`` -> ``"1-3"``; runs of consecutive counts joined with commas."""
    ds = sorted(set(dims))
    runs: list[list[int]] = []
    for d in ds:
        if runs and d == runs[-1][-1] + 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _docstring_parts(fn: Any) -> tuple[str, str]:
    """(summary line, extended summary) of a numpydoc docstring; sections (Parameters...) left out."""
    lines = inspect.cleandoc(fn.__doc__ or "").splitlines()
    for i in range(len(lines) - 1):
        under = lines[i + 1].strip()
        if lines[i].strip() and len(under) >= 3 and set(under) == {"-"}:
            lines = lines[:i]
            break
    paras = [p.strip() for p in "\n".join(lines).strip().split("\n\n") if p.strip()]
    if not paras:
        return "", ""
    return " ".join(paras[0].split()), _reflow("\n\n".join(paras[1:]))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def method_records() -> list[dict[str, Any]]:
    """Every ``method:`` a template may name, as plain data (the ``--json`` output).

    Returns
    -------
    list of dict
        One per method: the registered methods in registry order, then ``ref`` and ``bool``.
        Keys: ``name``, ``kind`` (``"data-driven"`` or ``"resolver"``), ``dims`` (list of int, or
        None), ``dims_text``, ``summary``, ``description`` and ``args`` (list of dicts with ``name``,
        ``type``, ``default``, ``required``, ``lo``, ``hi``, ``choices``, ``doc``).
    """
    from flowtools.gating.methods import REQUIRED, methods

    out: list[dict[str, Any]] = []
    for spec in methods().values():
        summary, description = _docstring_parts(spec.fn)
        args = []
        for name, a in spec.args.items():
            required = a.default is REQUIRED
            args.append({
                "name": name, "type": _TYPE_LABELS.get(a.type, getattr(a.type, "__name__", str(a.type))),
                "default": None if required else _plain(a.default), "required": required,
                "lo": a.lo, "hi": a.hi, "choices": None if a.choices is None else list(a.choices),
                "doc": a.doc,
            })
        out.append({"name": spec.name, "kind": "data-driven", "dims": list(spec.dims),
                    "dims_text": _dims_text(spec.dims), "summary": spec.doc or summary,
                    "description": description, "args": args})
    for name, rec in _RESOLVER_DOCS.items():
        out.append({"name": name, "kind": "resolver", "dims": None, "dims_text": rec["dims"],
                    "summary": rec["summary"], "description": rec["description"],
                    "args": [dict(a) for a in rec["args"]]})
    return out


def default_text(arg: dict[str, Any]) -> str:
    """An argument's default in words (``required``, ``not set``, ``true``...)."""
    if arg["required"]:
        return "required"
    v = arg["default"]
    if v is None:
        return "not set"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


def allowed_text(arg: dict[str, Any], *, code: bool = False) -> str:
    """An argument's allowed values: its choices or bounds, in words (empty: anything of its type)."""
    if arg["choices"]:
        q = "`" if code else ""
        return ", ".join(f"{q}{c}{q}" for c in arg["choices"])
    lo, hi = arg["lo"], arg["hi"]
    if lo is not None and hi is not None:
        return f"{_num(lo)} to {_num(hi)}"
    if lo is not None:
        return f">= {_num(lo)}"
    if hi is not None:
        return f"<= {_num(hi)}"
    return ""


def md_text(text: str) -> str:
    """Docstring text as Markdown: RST ``literals`` and :role:`targets` to `literals`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"`\1`", text)
    return re.sub(r"``(.+?)``", r"`\1`", text, flags=re.DOTALL)


def _reflow(text: str) -> str:
    """Join the wrapped lines of each paragraph; a paragraph that is a list keeps one item per line."""
    out = []
    for para in text.split("\n\n"):
        lines = [ln.strip() for ln in para.splitlines() if ln.strip()]
        if any(ln.startswith(("- ", "* ")) for ln in lines):
            items: list[str] = []
            for ln in lines:
                if ln.startswith(("- ", "* ")) or not items:
                    items.append(ln)
                else:
                    items[-1] += " " + ln
            out.append("\n".join(items))
        else:
            out.append(" ".join(lines))
    return "\n\n".join(out)


def _md_cell(text: str) -> str:
    return md_text(text).replace("|", "\\|").replace("\n", " ")


def methods_markdown(records: Sequence[dict[str, Any]] | None = None) -> str:
    """The Markdown reference of every method (``template methods --markdown``; ``docs/methods.md``).

    Parameters
    ----------
    records : sequence of dict, optional
        Output of :func:`method_records` (default: all methods).

    Returns
    -------
    str
        Markdown text ending with a newline; the same registry gives the same bytes.
    """
    recs = list(records if records is not None else method_records())
    lines = [
        "# Gating methods",
        "",
        "<!-- Generated from the method registry by `flowtools template methods --markdown`; do not edit.",
        f"     Regenerate with: {METHODS_DOC_COMMAND} -->",
        "",
        "Every `method:` a template population may name. A data-driven method computes the population's "
        "gate from its parent's events on the population's `dims` (compensated and transformed as the "
        "template says); its arguments go under `args:` and are checked when the template is loaded "
        "(types, bounds, choices). `ref` and `bool` are resolved from other populations of the "
        "template. Static gates use `gate:` instead (range, rectangle, polygon, ellipse, quad). "
        "`flowtools template methods NAME` shows one method in the terminal.",
        "",
        "| method | dims | summary |",
        "|---|---|---|",
    ]
    for r in recs:
        link = f"[`{r['name']}`](#{r['name']})"
        lines.append(f"| {link} | {_md_cell(r['dims_text'])} | {_md_cell(r['summary'])} |")
    for r in recs:
        kind = "resolved from other populations" if r["kind"] == "resolver" else "data-driven"
        lines += ["", f"## {r['name']}", "", f"Dimensions: {r['dims_text']} ({kind}).", "",
                  md_text(r["summary"])]
        if r["description"]:
            lines += ["", md_text(r["description"])]
        lines.append("")
        if r["args"]:
            lines += ["| argument | type | default | allowed | meaning |", "|---|---|---|---|---|"]
            for a in r["args"]:
                default = default_text(a)
                default = default if a["required"] or a["default"] is None else f"`{default}`"
                lines.append(f"| `{a['name']}` | {_md_cell(a['type'])} | {_md_cell(default)} | "
                             f"{_md_cell(allowed_text(a, code=True))} | {_md_cell(a['doc'])} |")
        else:
            lines.append("No arguments.")
    return "\n".join(lines) + "\n"
