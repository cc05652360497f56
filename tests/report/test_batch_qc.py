"""The batch QC page: Levey-Jennings flags, outliers, escaping, and the demo stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flowtools.report.batch_qc import file_outliers, levey_jennings, run_normalize_demo, write_batch_qc


def test_levey_jennings_flags() -> None:
    vals = {f"P{i}": 1.0 + 0.01 * (i % 2) for i in range(20)}
    vals["P20"] = 1.5
    lj = levey_jennings(vals)
    assert lj["flags"]["P20"] == "fail" and lj["flags"]["P0"] == "ok"
    assert levey_jennings({"A": 1.0})["flags"] == {"A": "ok"}


def test_file_outliers() -> None:
    rows = [{"sample_id": f"S{i}", "plate": "P1", "marker": "CD3", "median_after": 0.3 + 0.001 * i}
            for i in range(6)]
    rows.append({"sample_id": "BAD", "plate": "P1", "marker": "CD3", "median_after": 0.9})
    out = file_outliers(rows)
    assert [r["sample_id"] for r in out] == ["BAD"] and out[0]["z"] > 3.5


def test_write_batch_qc_escapes_and_embeds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    markers = ["CD3", "<script>x</script>"]
    before = {b: rng.normal(i * 0.1, 1, (300, 2)) for i, b in enumerate(["P1", "P2", "P3"])}
    after = {b: rng.normal(0, 1, (300, 2)) for b in before}
    medians = [{"sample_id": f"A-{b}", "batch": b, "plate": b, "anchor": True, "marker": m,
                "median_before": float(np.median(before[b][:, j])),
                "median_after": float(np.median(after[b][:, j]))}
               for b in before for j, m in enumerate(markers)]
    drift = [{"marker": m, "emd_before": 0.2, "emd_after": 0.02, "emd_reduction": 0.9, "mad_change": 0.3,
              "mad_batch": "P2", "flagged": True} for m in markers]
    pops = [{"sample_id": f"A-{b}", "population": "Lymphocytes/<b>T</b>", "pct_parent": 60 + i}
            for i, b in enumerate(before)]
    path = write_batch_qc(tmp_path / "qc.html", medians=medians, drift=drift, before=before, after=after,
                          markers=markers, populations=pops, title="QC & <test>")
    page = path.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "QC &amp; &lt;test&gt;" in page and "&lt;b&gt;T&lt;/b&gt;" in page
    assert page.count("data:image/png;base64,") == 3  # marker LJ, population LJ, densities
    assert "FLAG" in page


def test_run_normalize_demo(tmp_path: Path) -> None:
    s = run_normalize_demo(tmp_path, n_plates=2, n_women=2, events=2500)
    assert Path(s["batch_qc"]).is_file() and Path(s["samples_csv"]).is_file()
    assert set(s["emd_before"]) == set(s["emd_after"])
    # two women a plate: the per-marker EMD of all files is noisy; overall it must fall clearly
    assert sum(s["emd_after"].values()) < 0.7 * sum(s["emd_before"].values()), s
