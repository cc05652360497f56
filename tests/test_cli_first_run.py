"""The gating bar says when a run compiles the numba kernels first (a new install's first plate)."""

from __future__ import annotations

import pytest

import flowtools.pipeline.executor as E
from flowtools import cli


@pytest.mark.parametrize(("compiled", "jobs", "says_compiling"), [
    (False, 2, True),      # workers on a cold cache: they compile before the first sample
    (False, None, True),   # every core (this machine has at least 2: see the skip below)
    (True, 2, False),      # the stamp says the kernels are cached
    (False, 1, False),     # one process compiles what it uses as it goes: no promise to make
])
def test_label_names_the_first_compile(monkeypatch: pytest.MonkeyPatch, compiled: bool, jobs: int | None,
                                       says_compiling: bool) -> None:
    import os

    if jobs is None and (os.cpu_count() or 1) < 2:
        pytest.skip("one core: the default is one process")
    monkeypatch.setattr(E, "kernels_compiled", lambda: compiled)
    label = cli._gating_label("gating", jobs)
    assert label.startswith("gating")
    assert ("compiling the kernels once" in label) is says_compiling


def test_kernels_compiled_reads_the_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowtools.pipeline import _kernel_cache

    monkeypatch.setattr(_kernel_cache, "is_warm", lambda: True)
    assert E.kernels_compiled() is True
    monkeypatch.setattr(_kernel_cache, "is_warm", lambda: False)
    assert E.kernels_compiled() is False
