"""The plate report: gate plots, static HTML pages, their links and images, and a headless-browser load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

TEMPLATE = """\
name: report-test
tube: TBNK-NK
compensation: FCS
transforms:
  fluorescence: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}
  scatter: none
  time: none
  channels: {CD3: {logicle: {T: 262144, W: 0.5, M: 4.5, A: 0}}}
populations:
  - name: cells
    dims: [FSC-A, SSC-A]
    gate: {rectangle: [[20000, 250000], [5000, 250000]]}
  - name: lymphocytes
    parent: cells
    dims: [FSC-A, SSC-A]
    gate: {polygon: [[30000, 5000], [150000, 5000], [150000, 120000], [30000, 120000]]}
  - name: T
    parent: lymphocytes
    dims: [CD3]
    gate: {range: [0.55, null]}
  - name: CD4 CD8
    parent: T
    dims: [CD4, CD8]
    gate: {quad: [0.55, 0.55]}
    quadrants: {CD4: "+-", CD8: "-+", DP: "++", DN: "--"}
  - name: not-CD4
    parent: T
    method: bool
    args: {op: and, of: ["!CD4", T]}
  - name: NK
    parent: lymphocytes
    dims: [CD16, CD56]
    gate: {ellipse: {mean: [0.7, 0.6], covariance: [[0.01, 0], [0, 0.01]], distance_square: 4}}
"""
BROKEN = "S0002-TBNK"
GATED = ("S0001-TBNK", "S0003-TBNK")
N_GATE_PLOTS = 5  # rectangle, polygon, range, one quadrant gate, ellipse (the boolean gate has none)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        elif tag == "script":
            self.scripts += 1


def _links(page: Path) -> _Links:
    p = _Links()
    p.feed(page.read_text(encoding="utf-8"))
    return p


def _local(page: Path, url: str) -> Path | None:
    """The file a relative link points at (None for a same-page anchor)."""
    parts = urlsplit(url)
    assert not parts.scheme and not parts.netloc, f"{page.name}: non-relative link {url!r}"
    if not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    from flowtools.pipeline.plate import run_plate
    from flowtools.report.html import write_report
    from flowtools.synth import make_cohort

    tmp = tmp_path_factory.mktemp("report")
    cohort = make_cohort(tmp / "cohort", n_women=3, events=3000, seed=2)
    broken = cohort.fcs_dir / f"{BROKEN}.fcs"
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    template = tmp / "tbnk.yaml"
    template.write_text(TEMPLATE, encoding="utf-8")
    res = run_plate(cohort.samples_csv, [template], tmp / "out", jobs=1)
    index = write_report(res, jobs=1)
    return res, index


def test_index_links_every_sample_page(plate):
    res, index = plate
    assert index == res.out_dir / "report" / "index.html"
    assert index.is_file()
    assert [o.sample_id for o in res.outcomes] == ["S0001-TBNK", BROKEN, "S0003-TBNK"]
    targets = {_local(index, h) for h in _links(index).hrefs} - {None}
    for o in res.outcomes:
        page = index.parent / "samples" / f"{o.sample_id}.html"
        assert page.is_file()
        assert page.resolve() in targets
    text = index.read_text(encoding="utf-8")
    assert "<title>flowtools plate report</title>" in text
    for section in ("Plate overview", "QC flags", "Outliers", "Failures", "All samples"):
        assert section in text


def test_every_link_and_image_exists(plate):
    res, index = plate
    pages = sorted((res.out_dir / "report").rglob("*.html"))
    assert len(pages) == 1 + len(res.outcomes)
    for page in pages:
        links = _links(page)
        assert links.scripts == 0, f"{page.name}: the report needs no JavaScript"
        for url in links.imgs + links.hrefs:
            target = _local(page, url)
            assert target is None or target.is_file(), f"{page.name}: {url} does not exist"
    for sid in GATED:
        imgs = _links(index.parent / "samples" / f"{sid}.html").imgs
        assert len(imgs) == N_GATE_PLOTS
        assert all(u.startswith(f"{sid}/") and u.endswith(".png") for u in imgs)


def test_failure_is_reported(plate):
    res, index = plate
    assert [o.sample_id for o in res.outcomes if not o.ok] == [BROKEN]
    text = index.read_text(encoding="utf-8")
    failures = text.split('id="failures"', 1)[1].split('id="samples"', 1)[0]
    assert f"{BROKEN}.html" in failures and f"{BROKEN}.fcs" in failures
    assert "truncated" in failures
    page = (index.parent / "samples" / f"{BROKEN}.html").read_text(encoding="utf-8")
    assert "Gating failed" in page and "<img" not in page
    assert not (index.parent / "samples" / BROKEN).exists()


def test_plate_grid_and_qc_flags(plate):
    res, index = plate
    text = index.read_text(encoding="utf-8")
    # one 8x12 grid per key population: the first six non-QC populations
    assert text.count('<table class="plate">') == 6
    assert text.count('<th scope="row">H</th>') == 6
    assert 'class="fail"' in text  # the broken well
    # S0003-TBNK is the cohort's low-event well (a few % of the others' events)
    qc = text.split('id="qc"', 1)[1].split('id="outliers"', 1)[0]
    assert "S0003-TBNK" in qc and "low events" in qc
    assert "S0001-TBNK" not in qc
    page = (index.parent / "samples" / "S0001-TBNK.html").read_text(encoding="utf-8")
    for label in ("W001", "TBNK-NK", "P01", "A01", "cells/lymphocytes/T/CD4", "not-CD4"):
        assert label in page


def test_no_personal_keywords_anywhere(plate):
    res, _ = plate
    files = [p for p in (res.out_dir / "report").rglob("*") if p.is_file()]
    assert len(files) > 10
    for p in files:
        assert b"CANARY" not in p.read_bytes(), p


def test_report_is_deterministic_serial_or_parallel(plate):
    from flowtools.report.html import write_report

    res, index = plate
    before = {p: p.read_bytes() for p in sorted((res.out_dir / "report").rglob("*")) if p.is_file()}
    write_report(res, jobs=1)
    assert index.read_bytes() == before[index]
    write_report(res, jobs=2)  # spawned workers draw the same PNGs
    after = {p: p.read_bytes() for p in sorted((res.out_dir / "report").rglob("*")) if p.is_file()}
    assert index.read_bytes() == before[index]
    assert after == before


def test_gate_plots_one_png_per_geometric_gate(plate, tmp_path):
    from flowtools.gating.engine import gate_sample
    from flowtools.gating.formats.gatingml import read_gatingml
    from flowtools.io.fcs import read_fcs
    from flowtools.report.plots import gate_plots

    res, _ = plate
    o = next(o for o in res.outcomes if o.ok)
    strategy = read_gatingml(res.out_dir / "gates" / f"{o.sample_id}.gating-ml.xml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = read_fcs(o.file)
    result = gate_sample(strategy, sample)
    paths = gate_plots(sample, strategy, result, tmp_path / "p", labels={"cells": "all cells"})
    assert [p.name for p in paths] == [
        "01_cells.png",
        "02_cells__lymphocytes.png",
        "03_cells__lymphocytes__T.png",
        "04_cells__lymphocytes__T__CD4_CD8.png",
        "05_cells__lymphocytes__NK.png",
    ]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG")
        assert b"Software" not in data and b"matplotlib" not in data  # no tool/version stamp
        assert len(data) < 60_000
    again = gate_plots(sample, strategy, result, tmp_path / "q", labels={"cells": "all cells"})
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_report_modules_load_no_matplotlib_at_import():
    code = "import sys, flowtools.report.html, flowtools.report.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------ headless browser

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in _BROWSERS:
        if found := shutil.which(name):
            return found
    if os.environ.get("FLOWTOOLS_NO_BROWSER_INSTALL"):
        pytest.skip("no Chromium on PATH and FLOWTOOLS_NO_BROWSER_INSTALL is set")
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            "no Chromium on PATH (chromium, chromium-browser, google-chrome), and cannot apt-get install it"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    try:
        done = subprocess.run(install, capture_output=True, text=True, timeout=300, env=env, check=False)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env, check=False)
            done = subprocess.run(install, capture_output=True, text=True, timeout=300, env=env, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip("no Chromium on PATH, and apt-get install chromium timed out")
    for name in _BROWSERS:
        if found := shutil.which(name):
            return found
    pytest.skip(f"no Chromium on PATH, and apt-get install chromium failed: {done.stderr.strip()[-300:]}")
    raise AssertionError  # unreachable: pytest.skip raises


class _DevTools:
    """Chromium driven over the DevTools protocol (``--remote-debugging-pipe``: fd 3 in, fd 4 out)."""

    def __init__(self, browser: str, profile: Path) -> None:
        import fcntl

        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        # Move the child's ends above 3 and 4 first, so the dup2s below never clobber each other.
        child_in, child_out = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        os.close(to_r)
        os.close(from_w)

        def wire() -> None:  # runs in the child, before exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire,  # noqa: PLW1509 - single-threaded test; wires the pipe fds
        )
        os.close(child_in)
        os.close(child_out)
        self.w, self.r = to_w, from_r
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30
    ) -> dict:
        import json

        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self.receive(timeout)
            if m.get("id") == self.next_id:
                assert "error" not in m, f"{method}: {m['error']}"
                return m.get("result", {})
            self.events.append(m)

    def receive(self, timeout: float) -> dict:
        import json
        import select
        import time

        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.r], [], [], max(0.0, left))
            if not ready:
                msg = "no DevTools message in time"
                raise TimeoutError(msg)
            chunk = os.read(self.r, 1 << 16)
            if not chunk:
                msg = "Chromium closed the DevTools pipe"
                raise EOFError(msg)
            self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> None:
        if any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            return
        while True:
            m = self.receive(timeout)
            self.events.append(m)
            if m.get("method") == method and m.get("sessionId") == session:
                return

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, TimeoutError, EOFError, AssertionError):
            pass
        for fd in (self.w, self.r):
            os.close(fd)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _visit(cdp: _DevTools, page: Path) -> dict:
    """Load a page in a fresh tab; return its title, failed loads, script errors and broken images."""
    import time

    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Network", "Runtime", "Log"):
        cdp.send(f"{domain}.enable", session=session)
    start = len(cdp.events)
    cdp.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    cdp.wait_for("Page.loadEventFired", session)
    end = time.monotonic() + 0.5  # late console messages
    while time.monotonic() < end:
        try:
            cdp.events.append(cdp.receive(max(0.01, end - time.monotonic())))
        except TimeoutError:
            break
    js = (
        "JSON.stringify({title: document.title, broken: Array.from(document.images)"
        ".filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'))})"
    )
    import json

    state = json.loads(
        cdp.send("Runtime.evaluate", {"expression": js, "returnByValue": True}, session=session)["result"][
            "value"
        ]
    )
    ev = [e for e in cdp.events[start:] if e.get("sessionId") == session]
    failed = [
        f"{e['params'].get('errorText')} {e['params'].get('requestId')}"
        for e in ev
        if e.get("method") == "Network.loadingFailed"
    ]
    failed += [
        f"HTTP {e['params']['response']['status']} {e['params']['response']['url']}"
        for e in ev
        if e.get("method") == "Network.responseReceived" and e["params"]["response"].get("status", 0) >= 400
    ]
    errors = []
    for e in ev:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            errors.append(f"script: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            errors.append(f"console: {json.dumps(p.get('args'))[:300]}")
    cdp.send("Target.closeTarget", {"targetId": target})
    return {"title": state["title"], "broken_images": state["broken"], "failed": failed, "errors": errors}


@pytest.fixture(scope="module")
def browser():
    return _browser()


@pytest.fixture(scope="module")
def cdp(browser, tmp_path_factory):
    """One headless Chromium for the module; each page is visited in a fresh tab (``_visit``)."""
    c = _DevTools(browser, tmp_path_factory.mktemp("chromium") / "profile")
    yield c
    c.close()


def test_browser_check_sees_a_broken_page(cdp, tmp_path):
    """Control: the check below does see a missing image and a script error."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><title>bad</title></head><body><img src="missing.png">'
        "<script>undefined_function();</script></body></html>",
        encoding="utf-8",
    )
    seen = _visit(cdp, bad)
    assert seen["title"] == "bad"
    assert seen["broken_images"] == ["missing.png"]
    assert any("ERR_FILE_NOT_FOUND" in f for f in seen["failed"]), seen
    assert any("undefined_function" in e for e in seen["errors"]), seen


def test_pages_load_cleanly_in_chromium(cdp, browser, plate):
    res, index = plate
    sample = index.parent / "samples" / f"{GATED[0]}.html"
    failed = index.parent / "samples" / f"{BROKEN}.html"
    for page, title in (
        (index, "flowtools plate report"),
        (sample, f"{GATED[0]} \u2014 flowtools report"),
        (failed, f"{BROKEN} \u2014 flowtools report"),
    ):
        seen = _visit(cdp, page)
        assert seen == {"title": title, "broken_images": [], "failed": [], "errors": []}
    shot = res.out_dir.parent / "index.png"
    cmd = [
        browser,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={res.out_dir.parent / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,1800",
        "--hide-scrollbars",
        index.resolve().as_uri(),
    ]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    if keep := os.environ.get("FLOWTOOLS_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, keep)


def test_plots_drawn_at_gating_time_are_reused_without_the_fcs_files(plate, tmp_path):
    """gate --report: each worker draws its plots from the gated values; the report reads no FCS file."""
    from flowtools.pipeline.plate import run_plate
    from flowtools.report.html import draw_after_gating, write_report

    res, _ = plate
    template = res.out_dir.parent / "tbnk.yaml"
    early = run_plate(res.out_dir.parent / "cohort" / "samples.csv", [template], tmp_path / "early", jobs=1,
                      after_gate=draw_after_gating)
    drawn = {p.relative_to(tmp_path / "early" / "report"): p.read_bytes()
             for p in sorted((tmp_path / "early" / "report").rglob("*.png"))}
    assert len(drawn) == N_GATE_PLOTS * len(GATED)
    late = {p.relative_to(res.out_dir / "report"): p.read_bytes()
            for p in sorted((res.out_dir / "report").rglob("*.png"))}
    assert drawn == late  # the same PNGs, bit for bit, as drawn by re-reading and re-gating
    # the report now needs no FCS file: hide them, and every plot is still there
    moved = [Path(o.file) for o in early.outcomes if o.ok]
    saved = {p: p.read_bytes() for p in moved}
    try:
        for p in moved:
            p.unlink()
        write_report(early, jobs=1)
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
    pages = tmp_path / "early" / "report" / "samples"
    for sid in GATED:
        text = (pages / f"{sid}.html").read_text(encoding="utf-8")
        assert "cannot be drawn" not in text and "Error" not in text
        assert len(list((pages / sid).glob("*.png"))) == N_GATE_PLOTS
    after = {p.relative_to(tmp_path / "early" / "report"): p.read_bytes()
             for p in sorted((tmp_path / "early" / "report").rglob("*.png"))}
    assert after == drawn
    # a changed label or status (another template run) is redrawn, not reused
    manifest = pages / GATED[0] / "plots.json"
    doc = manifest.read_text(encoding="utf-8")
    manifest.write_text(doc.replace('"ok"', '"flagged"', 1), encoding="utf-8")
    for p in moved:
        p.unlink()
    try:
        write_report(early, jobs=1)
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
    assert "FileNotFoundError" in (pages / f"{GATED[0]}.html").read_text(encoding="utf-8") or \
        "No such file" in (pages / f"{GATED[0]}.html").read_text(encoding="utf-8")



def test_section_links_point_at_the_stage_pages(plate, tmp_path):
    from flowtools.report.html import ReportSection, write_report

    res, index = plate
    other = res.out_dir / "stage" / "page one.html"
    other.parent.mkdir(exist_ok=True)
    other.write_text("<html></html>", encoding="utf-8")
    try:
        write_report(res, jobs=1, sections=[ReportSection("A stage", "text", links=(("its page", other),))])
        hrefs = [h for h in _links(index).hrefs if "stage" in h]
        assert hrefs == ["../stage/page%20one.html"]
        assert _local(index, hrefs[0]) == other.resolve()
    finally:
        write_report(res, jobs=1)  # the module's other tests see the plain index
