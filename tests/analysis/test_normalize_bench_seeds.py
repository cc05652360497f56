"""The benchmark's seed-robust comparison (``bench_normalize.py --seeds``): means, wins, markers behind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_normalize.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_normalize_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sc(**red: float) -> dict[str, dict[str, float]]:
    return {c: {"reduction": r} for c, r in red.items()}


def test_seed_scores_means_wins_and_behind(bench) -> None:
    ft = [_sc(a=0.5, b=0.1, c=-0.2), _sc(a=0.3, b=0.4, c=-0.4)]
    cn = [_sc(a=0.4, b=0.3, c=-0.1), _sc(a=0.2, b=0.3, c=-0.5)]
    out = bench._seed_scores({"flowtools": ft, "cytonormpy": cn}, ["a", "b", "c"])
    assert out["n"] == 2
    a, b, c = (out["per_marker"][m] for m in "abc")
    assert a["flowtools_mean"] == pytest.approx(0.4) and a["cytonormpy_mean"] == pytest.approx(0.3)
    assert a["flowtools_at_least_as_good"] == 2
    # b: behind on seed 0, ahead on seed 1, behind on the mean (0.25 < 0.3)
    assert b["flowtools_at_least_as_good"] == 1
    assert out["flowtools_behind_on_seed_mean"] == ["b"]
    # c: cytonormpy makes it worse on the mean, so it is not a marker cytonormpy improves
    assert c["cytonormpy_mean"] < 0 and "c" not in out["markers_cytonormpy_improves"]
    assert out["behind_per_seed"] == [1, 0]
    assert out["mean_reduction_flowtools"] == pytest.approx((0.4 + 0.25 - 0.3) / 3)


def test_seed_scores_without_peer(bench) -> None:
    out = bench._seed_scores({"flowtools": [_sc(a=0.5), _sc(a=0.1)]}, ["a"])
    assert out["per_marker"]["a"] == {"flowtools": [0.5, 0.1], "flowtools_mean": pytest.approx(0.3)}
    assert "flowtools_behind_on_seed_mean" not in out


def test_default_is_one_seed(bench, monkeypatch) -> None:
    # the default run keeps today's layout: no "seeds" block unless --seeds > 1
    import argparse

    seen = {}

    def parse(self, *a, **k):
        ns = argparse.ArgumentParser.parse_known_args(self, [])[0]
        seen["seeds"] = ns.seeds
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse)
    with pytest.raises(SystemExit):
        bench.main()
    assert seen["seeds"] == 1
