"""The survival models' JSON files keep numpy numbers as numbers (not their ``str``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools.stats.survival_competing import json_value, write_model_json


def test_json_value_turns_numpy_into_python() -> None:
    assert json_value(np.int64(3)) == 3 and isinstance(json_value(np.int64(3)), int)
    assert json_value(np.float64(0.25)) == 0.25 and isinstance(json_value(np.float32(0.5)), float)
    assert json_value(np.bool_(True)) is True
    assert json_value(np.array([[1, 2]])) == [[1, 2]]
    assert json_value(Path("a/b")) == "a/b"


@dataclass
class _Model:
    outcome: str = "first_pregnancy"
    n_train: Any = np.int64(160)
    provenance: dict[str, Any] = field(default_factory=lambda: {
        "parameters": {"penalizers_live_birth_loss": [np.float64(0.3), np.float64(3.0)],
                       "n_bootstrap": np.int64(15), "horizons": np.array([12.0, 24.0])}})
    horizons: tuple[float, ...] = (12.0, 24.0)
    beta: Any = field(default_factory=lambda: np.array([0.1, -0.2]))


def test_model_file_numbers_stay_numbers(tmp_path: Path) -> None:
    p = write_model_json(_Model(), tmp_path / "m.json", "test/1",
                         scalars=("outcome", "n_train", "provenance"), tuples=("horizons",), arrays=("beta",))
    body = json.loads(p.read_text())
    assert body["format"] == "test/1" and body["n_train"] == 160
    par = body["provenance"]["parameters"]
    assert par == {"penalizers_live_birth_loss": [0.3, 3.0], "n_bootstrap": 15, "horizons": [12.0, 24.0]}
    assert body["beta"] == [0.1, -0.2] and body["horizons"] == [12.0, 24.0]


def test_bootstrap_refits_redraws_rejects_and_names_a_total_failure() -> None:
    import pytest

    from flowtools.stats.survival_competing import bootstrap_refits

    rng = np.random.default_rng(0)
    seen = []

    def refit(idx: np.ndarray) -> tuple[int, int] | None:
        seen.append(idx.size)
        return None if len(seen) % 2 else (len(seen), -len(seen))  # every other resample rejected

    coef, base = bootstrap_refits(10, 3, rng, refit, outcome="x", n_events=4)
    assert coef == [2, 4, 6] and base == [-2, -4, -6] and seen == [10] * 6
    with pytest.raises(ValueError, match=r"x: no bootstrap refit converged \(10 women, 4 events\)"):
        bootstrap_refits(10, 2, rng, lambda idx: None, outcome="x", n_events=4)
