"""Batch gating of a plate: outputs, partial failures, caching, resume after kill -9, dask, no personal data.

The population table's identity columns are checked in tests/analysis/test_populations.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flowtools.cli import app
from flowtools.pipeline.plate import run_plate

TEMPLATE = """\
name: small
tube: TBNK-NK
compensation: FCS
populations:
  - name: cells
    dims: [FSC-A]
    method: mindensity
    args: {side: positive, range: [2000, 50000]}
  - name: lymphocytes
    parent: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[35000, 80000], [null, 30000]]}
  - name: CD3+
    parent: lymphocytes
    dims: [CD3]
    method: mindensity
    args: {side: positive}
    group_by: plate
  - name: T
    parent: CD3+
    dims: [CD4, CD8]
    method: quad
    quadrants: {CD4: "+-", CD8: "-+"}
"""


@pytest.fixture(scope="module")
def gated(gated_cohort):
    """The cohort (5 women x 3,000 events, seed 9) and one serial run of the template over it (read-only)."""
    return gated_cohort(n_women=5, events=3000, seed=9, templates=(TEMPLATE,))


@pytest.fixture(scope="module")
def cohort(gated):
    return gated.cohort, gated.templates[0]


@pytest.fixture(scope="module")
def serial(gated):
    """``run_plate(samples.csv, [template], out, jobs=1)`` on the cohort: the reference tables."""
    return gated.plate


def _tables(out: Path) -> tuple[str, str]:
    return (out / "populations.csv").read_text(), (out / "per_woman.csv").read_text()


def test_outputs_and_tables(serial):
    res = serial
    out = res.out_dir
    assert res.exit_code == 0 and res.n_ok == 5
    assert len(res.skipped) == 5  # the Treg-Th samples: no template for that tube
    pops = pd.read_parquet(out / "populations.parquet")
    assert set(pops["population"]) == {"cells", "cells/lymphocytes", "cells/lymphocytes/CD3+",
                                       "cells/lymphocytes/CD3+/CD4", "cells/lymphocytes/CD3+/CD8"}
    assert {"sample_id", "woman_id", "tube", "plate", "well", "count", "pct_parent", "pct_total",
            "mfi_CD3", "mfi_CD3_transformed"} <= set(pops.columns)
    assert pd.read_csv(out / "populations.csv").shape == pops.shape
    wide = pd.read_csv(out / "per_woman.csv")
    assert wide.shape[0] == 5 and "TBNK-NK|cells/lymphocytes/CD3+" in wide.columns
    assert (out / "per_woman.columns.md").is_file()
    gates = sorted(p.name for p in (out / "gates").iterdir())
    assert len(gates) == 5 and gates[0].endswith(".gating-ml.xml")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["templates"]["small"]["sha256"] and len(prov["fcs_sha256"]) == 5
    # group_by: plate -> one CD3 threshold per plate, shared by its samples
    cuts = set()
    for p in (out / "gates").iterdir():
        text = p.read_text()
        i = text.index('gating:id="cells__lymphocytes__CD3pos"')
        cuts.add(text[i:].split('gating:min="')[1].split('"')[0])
    assert len(cuts) == 1


def test_no_personal_keyword_in_any_output(serial):
    for p in serial.out_dir.rglob("*"):
        if p.is_file():
            assert b"CANARY" not in p.read_bytes(), p


def test_partial_plate_reports_and_completes(cohort, tmp_path):
    c, tpl = cohort
    bad = tmp_path / "c"
    shutil.copytree(c.out_dir, bad)
    victim = next((bad / "fcs").glob("*TBNK*.fcs"))
    victim.write_bytes(victim.read_bytes()[:5000])
    res = run_plate(bad / "samples.csv", [tpl], tmp_path / "out", jobs=1)
    assert res.exit_code == 2 and res.n_ok == 4 and res.n_failed == 1
    errors = json.loads(res.errors_json.read_text())["errors"]
    assert len(errors) == 1 and victim.name in errors[0]["error"] and "truncated" in errors[0]["error"]
    r = CliRunner().invoke(app, ["gate", str(bad / "samples.csv"), "-t", str(tpl), "--out",
                                 str(tmp_path / "o2"), "--jobs", "1", "--no-report", "--json"])
    assert r.exit_code == 2
    assert json.loads(r.stdout)["failed"] == 1


def test_rerun_recomputes_nothing_and_gives_identical_tables(cohort, tmp_path):
    c, tpl = cohort
    out = tmp_path / "out"
    first = run_plate(c.samples_csv, [tpl], out, jobs=1)
    before = _tables(out)
    again = run_plate(c.samples_csv, [tpl], out, jobs=1)
    assert all(o.cached for o in again.outcomes) and not any(o.cached for o in first.outcomes)
    assert _tables(out) == before


def test_killed_run_resumes_to_identical_tables(cohort, serial, tmp_path):
    c, tpl = cohort
    ref = serial.out_dir
    out = tmp_path / "out"
    code = (
        "import sys, time\n"
        "from flowtools.pipeline import plate\n"
        "orig = plate.gate_task\n"
        "def slow(task):\n"
        "    time.sleep(0.4)\n"
        "    return orig(task)\n"
        "plate.gate_task = slow\n"
        f"plate.run_plate({str(c.samples_csv)!r}, [{str(tpl)!r}], {str(out)!r}, jobs=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 60
    while time.time() < deadline and (not (out / ".cache").exists()
                                      or len(list((out / ".cache").glob("*.json"))) < 2):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "populations.csv").exists()  # no final table from a killed run
    done_before = len(list((out / ".cache").glob("*.json")))
    assert 1 <= done_before < 5
    res = run_plate(c.samples_csv, [tpl], out, jobs=1)
    assert sum(o.cached for o in res.outcomes) == done_before
    assert _tables(out) == _tables(ref)
    assert not list(out.rglob(".*.tmp"))


def test_killed_pool_run_leaves_no_process_and_resumes(cohort, serial, tmp_path):
    """kill -9 of a run with local workers (fork server): its server and workers exit too, and it resumes."""
    psutil = pytest.importorskip("psutil")
    c, tpl = cohort
    ref = serial.out_dir
    out = tmp_path / "out"
    script = tmp_path / "slow_run.py"
    # Module level (outside the main guard): the fork server imports this script as its __main__,
    # so the workers forked from it gate slowly too.
    script.write_text(
        "import time\n"
        "from flowtools.pipeline import plate\n"
        "orig = plate.gate_task\n"
        "def slow(task):\n"
        "    time.sleep(0.4)\n"
        "    return orig(task)\n"
        "plate.gate_task = slow\n"
        "if __name__ == '__main__':\n"
        f"    plate.run_plate({str(c.samples_csv)!r}, [{str(tpl)!r}], {str(out)!r}, jobs=2)\n"
    )
    proc = subprocess.Popen([sys.executable, str(script)], env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.time() + 60
    while time.time() < deadline and (not (out / ".cache").exists()
                                      or len(list((out / ".cache").glob("*.json"))) < 2):
        time.sleep(0.05)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert family  # the fork server and its workers
    os.kill(proc.pid, signal.SIGKILL)
    # Not reaped yet: the killed coordinator stays a zombie while its processes must still end.
    gone, alive = psutil.wait_procs(family, timeout=15)
    assert not alive, f"left running after the coordinator was killed: {[p.pid for p in alive]}"
    proc.wait()
    assert not (out / "populations.csv").exists()
    done_before = len(list((out / ".cache").glob("*.json")))
    assert 1 <= done_before < 5
    res = run_plate(c.samples_csv, [tpl], out, jobs=2)
    assert sum(o.cached for o in res.outcomes) == done_before
    assert _tables(out) == _tables(ref)
    assert not list(out.rglob(".*.tmp"))


def test_process_pool_and_dask_give_identical_tables(cohort, serial, tmp_path):
    c, tpl = cohort
    run_plate(c.samples_csv, [tpl], tmp_path / "pool", jobs=2)
    assert _tables(tmp_path / "pool") == _tables(serial.out_dir)
    distributed = pytest.importorskip("distributed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dask's own deprecation and resource warnings
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            run_plate(c.samples_csv, [tpl], tmp_path / "dask", scheduler=cluster.scheduler_address)
    assert _tables(tmp_path / "dask") == _tables(serial.out_dir)


def _copy(c, tmp_path):
    dst = tmp_path / "c"
    shutil.copytree(c.out_dir, dst)
    return dst


def test_first_sample_of_a_pooled_group_broken(cohort, tmp_path):
    """A bad file first in its plate group is reported; the rest still get the pooled gate."""
    c, tpl = cohort
    dst = _copy(c, tmp_path)
    first = sorted((dst / "fcs").glob("*TBNK*.fcs"))[0]
    first.write_bytes(first.read_bytes()[:5000])
    res = run_plate(dst / "samples.csv", [tpl], tmp_path / "out", jobs=1)
    assert res.exit_code == 2 and res.n_ok == 4
    assert first.name in json.loads(res.errors_json.read_text())["errors"][0]["error"]


def test_nested_pooled_gates_use_their_parents_pooled_gate(cohort, tmp_path):
    c, tpl = cohort
    nested = tmp_path / "nested.yaml"
    cut = "    args: {side: positive, range: [2000, 50000]}\n"
    nested.write_text(TEMPLATE.replace(cut, cut + "    group_by: plate\n", 1))
    res = run_plate(c.samples_csv, [nested], tmp_path / "out", jobs=1)
    assert res.exit_code == 0
    # every sample carries the same pooled 'cells' cut
    cuts = {p.read_text().split('gating:id="cells"')[1].split('gating:min="')[1].split('"')[0]
            for p in (tmp_path / "out" / "gates").iterdir()}
    assert len(cuts) == 1


def test_sheet_corrections_reach_cached_outputs(cohort, tmp_path):
    c, tpl = cohort
    dst = _copy(c, tmp_path)
    out = tmp_path / "out"
    run_plate(dst / "samples.csv", [tpl], out, jobs=1)
    sheet = (dst / "samples.csv").read_text()
    (dst / "samples.csv").write_text(sheet.replace(",W001,", ",W901,"))
    again = run_plate(dst / "samples.csv", [tpl], out, jobs=1)
    assert all(o.cached for o in again.outcomes)
    assert "W901" in (out / "per_woman.csv").read_text() and "W001" not in (out / "per_woman.csv").read_text()


def test_edited_template_is_used_in_the_same_process(cohort, tmp_path):
    c, tpl = cohort
    t2 = tmp_path / "t.yaml"
    t2.write_text(TEMPLATE)
    first = run_plate(c.samples_csv, [t2], tmp_path / "out", jobs=1)
    t2.write_text(TEMPLATE.replace("[[35000, 80000], [null, 30000]]", "[[35000, 65000], [null, 30000]]"))
    second = run_plate(c.samples_csv, [t2], tmp_path / "out", jobs=1)

    def lymph(res):
        return [next(r["count"] for r in o.rows if r["population"] == "cells/lymphocytes")
                for o in res.outcomes]

    assert not any(o.cached for o in second.outcomes)
    assert all(b < a for a, b in zip(lymph(first), lymph(second), strict=True))


def test_no_stale_table_when_nothing_is_gated(cohort, tmp_path):
    c, tpl = cohort
    dst = _copy(c, tmp_path)
    out = tmp_path / "out"
    run_plate(dst / "samples.csv", [tpl], out, jobs=1)
    assert (out / "populations.csv").is_file()
    for f in (dst / "fcs").glob("*TBNK*.fcs"):
        f.write_bytes(b"broken")
    res = run_plate(dst / "samples.csv", [tpl], out, jobs=1)
    assert res.exit_code == 1
    assert not (out / "populations.csv").exists() and not (out / "per_woman.parquet").exists()
    assert not list((out / "gates").glob("*.xml"))


def test_one_run_per_output_folder(cohort, tmp_path):
    from flowtools.errors import GatingError

    c, tpl = cohort
    out = tmp_path / "out"
    out.mkdir()
    (out / ".flowtools.lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(GatingError, match="another flowtools run"):
        run_plate(c.samples_csv, [tpl], out, jobs=1)
    (out / ".flowtools.lock").write_text("999999999")  # a dead one: taken over
    assert run_plate(c.samples_csv, [tpl], out, jobs=1).exit_code == 0


def test_mfis_are_medians_of_the_gated_compensated_events(cohort, serial):
    """MFIs equal np.median of each population's compensated events.

    Masks come from re-gating each sample with its exported Gating-ML (the resolved gates,
    pooled ones included); compensation and medians are computed here independently.
    """
    import warnings

    import numpy as np

    from flowtools.compensation import SpilloverMatrix
    from flowtools.gating import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io import read_fcs

    c, _ = cohort
    out = serial.out_dir
    pops = pd.read_parquet(out / "populations.parquet")
    checked = empty = 0
    for sid, rows in pops.groupby("sample_id"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = read_fcs(c.fcs_dir / f"{sid}.fcs")
        comp = SpilloverMatrix.from_fcs(s).apply(s.as_array(preprocess=True), s.pnn)
        gated = gate_sample(read_gatingml(out / "gates" / f"{sid}.gating-ml.xml"), s)
        for _, r in rows.iterrows():
            mask = gated.mask(r["population"].replace("+", "pos").replace("/", "__"))
            assert int(mask.sum()) == r["count"]
            for j, ch in enumerate(s.channels):
                if ch.pnn.lower().startswith(("fsc", "ssc", "time")):
                    continue
                value = r[f"mfi_{ch.pns or ch.pnn}"]
                if mask.any():
                    assert value == np.median(comp[mask, j]), (sid, r["population"], ch.pnn)
                    checked += 1
                else:
                    assert np.isnan(value)
                    empty += 1
    assert checked > 100


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [d["num_threads"] for d in threadpool_info()]


def test_workers_run_one_blas_thread():
    """Regression: the worker cap came after numpy had loaded OpenBLAS: each worker ran a thread per core."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from flowtools.pipeline.executor import _worker_init

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        threads = pool.submit(_blas_threads).result()
    assert threads and set(threads) == {1}


def test_gate_command_writes_miflowcyt_and_the_report_draws_in_the_workers(cohort, tmp_path):
    c, tpl = cohort
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["gate", str(c.samples_csv), "-t", str(tpl), "--out", str(out),
                                 "--jobs", "1", "--json"])
    assert r.exit_code == 0, r.output
    record = json.loads((out / "miflowcyt.json").read_text(encoding="utf-8"))
    assert record["missing"] and "CANARY" not in json.dumps(record)
    index = (out / "report" / "index.html").read_text(encoding="utf-8")
    assert 'href="../miflowcyt.json"' in index and "MIFlowCyt record" in index
    manifests = sorted((out / "report" / "samples").glob("*/plots.json"))
    assert len(manifests) == json.loads(r.stdout)["gated"]  # every gated sample drawn by its worker
