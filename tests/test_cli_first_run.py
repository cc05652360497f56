"""The gating bar says what a first sample may wait for (a new install compiles the kernels), until it is."""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from flowtools import cli


class _Bar:
    """A stand-in for rich's Progress that records every description a task shows."""

    def __init__(self) -> None:
        self.shown: dict[int, list[str]] = {}

    def add_task(self, description: str, total: Any = None) -> int:
        self.shown[len(self.shown)] = [description]
        return len(self.shown) - 1

    def update(self, task: int, **kw: Any) -> None:
        if "description" in kw:
            self.shown[task].append(kw["description"])


@pytest.fixture
def bar(monkeypatch: pytest.MonkeyPatch) -> _Bar:
    b = _Bar()
    monkeypatch.setattr(cli, "_progress", lambda: contextlib.nullcontext(b))
    return b


def test_gate_bar_notes_the_first_compile_until_a_sample_is_gated(bar: _Bar, monkeypatch, tmp_path: Path):
    import flowtools.pipeline.plate as plate

    def fake_run_plate(*args: Any, progress: Any, **kw: Any) -> Any:
        assert bar.shown[0] == ["gating" + cli._FIRST_SAMPLE_NOTE]  # before any sample
        progress(1, 2, SimpleNamespace(n_events=1000, ok=True))
        msg = "stop here"
        raise OSError(msg)  # the rest of the command is not under test

    monkeypatch.setattr(plate, "run_plate", fake_run_plate)
    r = CliRunner().invoke(cli.app, ["gate", str(tmp_path / "s.csv"), "-t", str(tmp_path / "t.yaml"),
                                     "--out", str(tmp_path / "o"), "--no-report"])
    assert r.exit_code == 1 and "stop here" in r.output
    first, after = bar.shown[0][0], bar.shown[0][-1]
    assert "compiles the kernels once" in first
    assert after.startswith("gating ") and "events/s" in after and "compiles" not in after


def test_demo_bar_notes_it_between_reading_and_the_first_gated_sample(bar: _Bar, monkeypatch, tmp_path):
    import flowtools.pipeline.demo as demo

    def fake_run_demo(*args: Any, progress: Any, **kw: Any) -> Any:
        progress("read", 2, 2)
        assert any("compiles the kernels once" in d[-1] for d in bar.shown.values())
        progress("gate", 1, 4)
        msg = "stop here"
        raise OSError(msg)  # the rest of the demo is not under test

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    with contextlib.suppress(OSError):
        CliRunner().invoke(cli.app, ["demo", "--out", str(tmp_path / "d")], catch_exceptions=False)
    gate = [d for d in bar.shown.values() if d[0].startswith("gating with the study templates")]
    assert len(gate) == 1  # one bar for the stage, made when reading ended
    assert "compiles the kernels once" in gate[0][0] and gate[0][-1] == "gating with the study templates"
