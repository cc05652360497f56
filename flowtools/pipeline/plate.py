"""Batch gating of a plate (or a study): one template per tube, every sample isolated, resumable.

Work unit: one sample (one FCS file) per task; a worker holds one file at a
time, so memory stays bounded whatever the plate size. Populations with
``group_by`` are computed on pooled events first: each member contributes a
seeded subsample of its parent events (:func:`~flowtools.gating.templates.pool_values`),
the pooled gate is computed once per group, then pinned for every member.

Every finished sample is cached under ``OUT/.cache`` by a key made of the FCS
file's SHA-256, the template's SHA-256, the pinned geometries, the seed and the
flowtools version: a re-run on unchanged inputs recomputes nothing, and a run
killed mid-way resumes where it stopped. Final tables are written only at the
end, atomically, so no partial table ever exists.

``normalize=MODEL.json`` (a model of :func:`flowtools.analysis.normalize.fit_sheet`): each worker
normalises its sample for the sample's batch (the sheet's ``batch``, by default its plate) with
:func:`~flowtools.analysis.normalize.normalize_sample`, the function ``flowtools normalize apply``
writes its files with, and gates the normalised sample. The model's hash is part of the cache
key and of the provenance; ``decisions.csv`` says, per sample, which model normalised it.

A sample's rows are the population table's (:mod:`flowtools.analysis.populations`:
identity, counts, MFIs); ``populations.csv`` and ``per_woman.csv`` (with their Parquet twins)
are written by :func:`flowtools.io.tables.write_table`, each documented column by column in
``populations.columns.md`` and ``per_woman.columns.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowtools._config import COMPILE_JOBS
from flowtools._version import __version__
from flowtools.analysis import populations
from flowtools.analysis.absolute import vol_nl
from flowtools.errors import FlowtoolsError, GatingError
from flowtools.gating.formats.gatingml import to_gatingml_string
from flowtools.gating.templates import Template, compute_pooled, load_template, pool_values, resolve
from flowtools.io.fcs import read_fcs
from flowtools.io.sample_sheet import STUDY_TUBES, SampleSheetRow, read_sample_sheet
from flowtools.io.tables import Table, write_table
from flowtools.pipeline import _kernel_cache
from flowtools.provenance import atomic_write_text, file_sha256, provenance_record, safe_name

__all__ = ["PlateResult", "SampleOutcome", "run_plate"]

ProgressCallback = Callable[[int, int, "SampleOutcome"], None]


@dataclass
class SampleOutcome:
    """What gating one sample produced (plain data: it crosses process boundaries and is cached)."""

    sample_id: str
    woman_id: str
    tube: str
    plate: str
    well: str
    file: str
    ok: bool
    error: str | None = None
    n_events: int = 0
    seconds: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    gatingml: str | None = None
    cached: bool = False
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    vol_nl: float | None = None  # $VOL (nL), where the instrument measured the volume acquired

    @property
    def failed_populations(self) -> list[dict[str, str]]:
        """The populations of a gated sample that have no numbers, and why."""
        return [{"population": r["population"], "reason": r.get("reason", "")}
                for r in self.rows if r.get("status") == "failed"]

    @property
    def flagged_populations(self) -> list[dict[str, str]]:
        """The populations whose numbers are kept but need a look, and why."""
        return [{"population": r["population"], "reason": r.get("reason", "")}
                for r in self.rows if r.get("status") == "flagged"]

    def to_json(self) -> str:
        """Serialise (cache format)."""
        return json.dumps(self.__dict__, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> SampleOutcome:
        """Deserialise (cache format)."""
        return cls(**json.loads(text))


@dataclass
class PlateResult:
    """Outputs of :func:`run_plate`."""

    out_dir: Path
    outcomes: list[SampleOutcome]
    populations_csv: Path | None
    per_woman_csv: Path | None
    errors_json: Path
    provenance_json: Path
    report_html: Path | None = None
    skipped: list[str] = field(default_factory=list)

    @property
    def n_ok(self) -> int:
        """Samples gated."""
        return sum(o.ok for o in self.outcomes)

    @property
    def n_failed(self) -> int:
        """Samples that failed (reported in errors.json)."""
        return sum(not o.ok for o in self.outcomes)

    @property
    def n_partial(self) -> int:
        """Samples gated with some populations failed (listed in errors.json)."""
        return sum(bool(o.ok and o.failed_populations) for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 all gated, 2 partial (a sample or a population failed), 1 nothing gated."""
        if self.n_failed == 0 and self.n_partial == 0:
            return 0
        return 2 if self.n_ok else 1


# ------------------------------------------------------------------------------------------ worker side


def _outcome_base(row: dict[str, Any]) -> SampleOutcome:
    return SampleOutcome(row["sample_id"], row["woman_id"], row["tube"], row["plate"], row["well"],
                         row["file"],
                         ok=False)


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
    return template, sample, {k: _geometry_from_json(v) for k, v in task["pinned"].items()}


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


def _gate_task(task: dict[str, Any]) -> SampleOutcome:
    """Gate one sample (runs in a worker process). Never raises: failures become outcomes."""
    row = task["row"]
    out = _outcome_base(row)
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


def _pool_task(task: dict[str, Any]) -> tuple[str, np.ndarray | None, str | None]:
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


def _geometry_to_json(g: Any) -> dict[str, Any]:
    return {"type": type(g).__name__, **{k: _plain(v) for k, v in g.__dict__.items()}}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _geometry_from_json(d: dict[str, Any]) -> Any:
    from flowtools.gating import methods as m

    cls = getattr(m, d["type"])
    kwargs = {k: _tupled(v) for k, v in d.items() if k != "type"}
    return cls(**kwargs)


def _tupled(v: Any) -> Any:
    return tuple(_tupled(x) for x in v) if isinstance(v, list) else v


# ------------------------------------------------------------------------------------------ executors


# Thread-count variables that a worker's libraries read as they load (numba, OpenMP, OpenBLAS,
# MKL): one thread each, as the worker processes already use every core.
_ONE_THREAD_ENV = _kernel_cache.ONE_THREAD_ENV
# Set in the fork server's environment only: how many processes may compile the kernels there
# on a cold numba cache (see _warm_worker).
_PRIME_ENV = "FLOWTOOLS_PRIME_PROCS"


def _worker_init() -> None:
    # One thread per worker: the processes already use every core. A threaded BLAS on the
    # small matrices of gate fitting is several times slower than one thread, more so when
    # workers oversubscribe the cores. A worker forked from the fork server inherits that
    # server's settings and loaded kernels (see _mp_context), and this only confirms them; a
    # spawned worker sets the variables before numba is first imported (in _warm_worker),
    # then loads what gating needs, so that every BLAS/OpenMP library those modules bring
    # (scipy's, with numba) is loaded before the run-time cap below.
    os.environ.update(dict.fromkeys(_ONE_THREAD_ENV, "1"))
    _warm_worker()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from flowtools._workers import exit_with_parent

    exit_with_parent()


_START_METHODS = ("forkserver", "spawn")


def _mp_context_method() -> str:
    """FLOWTOOLS_START_METHOD, checked, or the platform's default (see :func:`_mp_context`)."""
    import multiprocessing as mp

    default = "forkserver" if sys.platform.startswith("linux") else "spawn"
    method = os.environ.get("FLOWTOOLS_START_METHOD", "").strip() or default
    offered = [m for m in _START_METHODS if m in mp.get_all_start_methods()]
    if method not in offered:
        msg = (f"FLOWTOOLS_START_METHOD={method!r}: flowtools starts its workers by {' or '.join(offered)} "
               f"on this platform")
        raise GatingError(msg)
    return method


_SERVER_START = threading.Lock()  # the fork server's environment is set and restored under it


def _mp_context(compile_procs: int = 1) -> Any:
    """The start method of local workers: a fork server on Linux, spawn elsewhere.

    The fork server is one fresh process that imports and warms the gating code once
    (``flowtools.pipeline._preload``) with one thread per library; every worker is forked
    from it, ready, in milliseconds (a spawned worker spends ~0.5 s of CPU importing and
    loading numba kernels). It is started here, without waiting for it, so that it warms up
    while this process hashes the inputs. It is Python's one fork server of this process:
    it stays up for the life of the process, and a pool that other code in this process
    starts with the fork-server method gets its workers from it too (flowtools preloaded,
    one thread per library); one started by other code first is used as it is (slower
    workers, same results). ``FLOWTOOLS_START_METHOD=spawn`` (or ``forkserver``) overrides
    the default. ``compile_procs``: processes the fork server may use to compile the kernels
    when numba's cache is cold (:mod:`flowtools.pipeline._kernel_cache`).
    """
    import multiprocessing as mp

    method = _mp_context_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        from multiprocessing import forkserver

        with _SERVER_START:
            ctx.set_forkserver_preload(["__main__", "flowtools.pipeline._preload"])
            saved = {k: os.environ.get(k) for k in (*_ONE_THREAD_ENV, _PRIME_ENV)}
            os.environ.update(dict.fromkeys(_ONE_THREAD_ENV, "1"))  # the server inherits this environment
            os.environ[_PRIME_ENV] = str(compile_procs)
            try:
                forkserver.ensure_running()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
    return ctx


def _import_table_writers() -> None:
    try:
        import pyarrow.csv  # noqa: F401 - imported for its cost
        import pyarrow.parquet  # noqa: F401
    except Exception:  # noqa: BLE001, S110 - a preload only saves time; the writers report real errors
        pass


def _started() -> None:
    """A task that does nothing: submitting it starts a worker (which runs ``_worker_init``)."""


_WARM: int | None = None  # pid of the process whose warm-up ran (a forked worker's is its fork server's)


def _warm_worker() -> None:
    """Load what gating a sample needs (modules, compiled kernels) in a fresh process, once. Never raises.

    Every built-in method runs once on a small two-cluster sample, and a logicle transform
    on a few values, so that the numba kernels a sample's gating calls are loaded here (in
    the fork server: once for all workers) rather than in each worker's first task
    (:func:`flowtools.pipeline._kernel_cache.warm_all`). In the fork server, on a cold numba
    cache, helper processes first compile the kernels in parallel into the cache
    (:func:`~flowtools.pipeline._kernel_cache.prime`): the warm-up then loads them.
    """
    global _WARM  # noqa: PLW0603 - once per process
    if _WARM:
        return
    raw = os.environ.pop(_PRIME_ENV, "").strip()  # the fork server's (its workers must not see it)
    procs = int(raw) if raw.isdigit() else 0
    try:
        warm = _kernel_cache.is_warm() if raw else True
        if not warm and procs > 1 and _kernel_cache.can_prime():
            import multiprocessing as mp

            # No thread has started in this process yet: forking helpers is safe.
            warm = _kernel_cache.prime(mp.get_context("fork"), procs)
        _kernel_cache.warm_all()
        _WARM = os.getpid()
        if not warm:
            _kernel_cache.mark_warm()  # compiled here, serially: the next run need not prime
    except Exception:  # noqa: BLE001, S110 - a warm-up only saves time; the tasks report real errors
        pass


def _compile_procs(jobs: int) -> int:
    """Processes that may compile the kernels on a cold cache: FLOWTOOLS_COMPILE_JOBS, else jobs (<= CPUs)."""
    if COMPILE_JOBS is not None:
        return COMPILE_JOBS
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(jobs, cpus))


class _Executor:
    """Map a picklable function over tasks, yielding results as they complete."""

    def __init__(self, jobs: int | None, scheduler: str | None) -> None:
        self.jobs = jobs if jobs is not None else max(1, (os.cpu_count() or 1))
        self.scheduler = scheduler
        self._client: Any = None
        self._local = False  # local worker processes, started on first need (a fully cached run needs none)
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._starting: threading.Thread | None = None  # spawned workers being started (warm_up)
        self.start_method: str | None = None  # of the local workers

    def __enter__(self) -> _Executor:
        if self.scheduler:
            from distributed import Client

            self._client = Client(self.scheduler)
        elif self.jobs > 1:
            self._local = True
        return self

    def _local_pool(self) -> ProcessPoolExecutor | None:
        with self._pool_lock:
            if self._local and self._pool is None:
                procs = _compile_procs(self.jobs)
                ctx = _mp_context(procs)
                self.start_method = ctx.get_start_method()
                if (self.start_method == "spawn" and procs > 1 and _kernel_cache.can_prime()
                        and not _kernel_cache.is_warm()):
                    # Spawned workers would each compile every kernel (the fork server's priming,
                    # here): compile them once, in parallel, into the cache the workers then load.
                    _kernel_cache.prime(ctx, procs)
                self._pool = ProcessPoolExecutor(self.jobs, mp_context=ctx, initializer=_worker_init)
        return self._pool

    def _start_spawned(self) -> None:
        pool = self._local_pool()
        if pool is not None:
            for _ in range(self.jobs):
                pool.submit(_started)

    @property
    def remote(self) -> bool:
        """Whether tasks run in other processes (this one only waits for them)."""
        return self._local or self._client is not None

    def warm_up(self) -> None:
        """Start the local workers now (imports, numba caches) so that they load while the caller works.

        Spawned workers otherwise start at the first task and spend their first ~0.5 s
        importing (``_worker_init``); started here, in a thread, that overlaps the coordinator's
        input hashing (as does compiling the kernels first on a cold cache). Forked workers need
        nothing: the fork server is warming up already, and starting a worker now would only
        wait for it.
        """
        if not self._local or self._pool is not None or self._starting is not None:
            return
        if _mp_context_method() == "forkserver":
            self._local_pool()  # starts the fork server, which warms up meanwhile
            return
        self._starting = threading.Thread(target=self._start_spawned, name="flowtools-workers", daemon=True)
        self._starting.start()

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        if self._starting is not None:
            self._starting.join()
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def map(self, fn: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterator[Any]:
        if not tasks:
            return
        if self._client is not None:
            from distributed import as_completed as dask_completed

            futures = self._client.map(fn, list(tasks), pure=False)
            for fut in dask_completed(futures):
                yield fut.result()
        elif (pool := self._local_pool()) is not None:
            futures = [pool.submit(fn, t) for t in tasks]
            for fut in as_completed(futures):
                yield fut.result()
        else:
            from threadpoolctl import threadpool_limits

            for t in tasks:
                with threadpool_limits(1):  # as in the workers: small matrices, one thread is fastest
                    r = fn(t)
                yield r


# ------------------------------------------------------------------------------------------ coordinator


def _row_dict(r: SampleSheetRow) -> dict[str, Any]:
    return {"sample_id": r.sample_id, "woman_id": r.woman_id, "tube": r.tube, "plate": r.plate,
            "well": r.well,
            "file": str(r.file), "batch": r.batch}


def _group_value(row: dict[str, Any], column: str, sheet: Any) -> str:
    """The value of a sample-sheet column (standard or extra) for a row; "all" when absent."""
    if column in row:
        return str(row[column])
    return str(sheet.by_sample_id(row["sample_id"]).extra.get(column, "all"))


def _pins_for(
    t: Template, pinned: dict[str, dict[str, Any]], row: dict[str, Any], sheet: Any
) -> dict[str, Any]:
    """Pooled geometries that apply to one sample: its own group's, keyed by population path."""
    pins = {}
    for spec in t.populations:
        if spec.group_by is None:
            continue
        key = f"{spec.path}@{_group_value(row, spec.group_by, sheet)}"
        if key in pinned:
            pins[spec.path] = pinned[key]
    return pins


def _with_row(o: SampleOutcome, row: dict[str, Any]) -> SampleOutcome:
    o.woman_id, o.tube, o.plate, o.well = row["woman_id"], row["tube"], row["plate"], row["well"]
    o.file = row["file"]
    return o


#: Version of the rows a gated sample's outcome holds (the population table's columns): a
#: cached outcome of another version is recomputed. 2: gate_id, parent, parent_count, role.
_ROWS_FORMAT = "4"


def _cache_key(file_hash: str, template: Template, pinned: dict[str, Any], seed: int,
               model_sha: str = "") -> str:
    h = hashlib.sha256()
    # The normalisation model's hash only where there is one: the keys of plain runs stay as they were.
    extra = (f"normalize:{model_sha}",) if model_sha else ()
    for part in (file_hash, template.sha256, json.dumps(pinned, sort_keys=True), str(seed), __version__,
                 _ROWS_FORMAT, *extra):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def run_plate(
    samples_csv: str | os.PathLike[str],
    templates: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    scheduler: str | None = None,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    after_gate: Callable[..., None] | None = None,
    normalize: str | os.PathLike[str] | None = None,
) -> PlateResult:
    """Gate every sample of a sample sheet with the template of its tube and write the tables.

    Parameters
    ----------
    samples_csv : path
        The sample sheet.
    templates : sequence of path
        Templates; each names the tube it applies to.
    out_dir : path
    jobs : int, optional
        Local worker processes (default: all cores; 1 runs in this process).
    scheduler : str, optional
        Address of a dask.distributed scheduler (``tcp://host:port``); the same
        work runs there instead of on local processes.
    seed : int, default 0
    progress : callable(done, total, outcome), optional
    after_gate : callable(resolved, sample, outcome, out_dir, fcs_sha256), optional
        Called in the worker right after a sample is gated, with the resolved sample (its
        masks and values still in memory) and the FCS sample: a module-level function
        (it travels to local worker processes by name). The command line passes the
        report's :func:`~flowtools.report.html.draw_after_gating`, so the report draws
        nothing again. Not called for cached samples, nor on a dask scheduler (workers
        there may not share this output folder).
    normalize : path, optional
        A normalisation model (``flowtools normalize fit``): every sample is normalised for
        its batch (the sheet's ``batch``, default its plate) before it is gated, exactly as
        ``flowtools normalize apply`` would write it. A sample whose batch is not in the
        model, whose tube's template is not the model's, or whose file lacks a marker of the
        model fails (batch, file and marker named); the others are gated.

    Returns
    -------
    PlateResult

    Raises
    ------
    SampleSheetError, TemplateError
        Before any file is processed, when the sheet or a template is invalid.
    NormalizationError
        Before any file is processed, when the model cannot be read, or no sample of the
        sheet can be normalised with it (no template or no batch of the model's).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _OutputLock(out):
        _remove_stale_temp_files(out)  # safe: the lock keeps other runs out of this folder
        return _run_plate_locked(samples_csv, templates, out, jobs=jobs, scheduler=scheduler, seed=seed,
                                 progress=progress, after_gate=after_gate, normalize=normalize)


def _run_plate_locked(
    samples_csv: str | os.PathLike[str],
    templates: Sequence[str | os.PathLike[str]],
    out: Path,
    *,
    jobs: int | None,
    scheduler: str | None,
    seed: int,
    progress: ProgressCallback | None,
    after_gate: Callable[..., None] | None,
    normalize: str | os.PathLike[str] | None = None,
) -> PlateResult:
    tmpl = [load_template(t) for t in templates]
    by_tube: dict[str | None, Template] = {}
    for t, p in zip(tmpl, templates, strict=True):
        if t.tube in by_tube:
            msg = f"templates {by_tube[t.tube].source} and {p} both apply to tube {t.tube!r}"
            raise GatingError(msg)
        by_tube[t.tube] = t
    # Tubes are checked against the study's tubes plus the templates' (typos are caught); samples of a
    # tube that no template covers are skipped and listed, not failed.
    tubes = sorted({*STUDY_TUBES, *(t for t in by_tube if t is not None)})
    sheet = read_sample_sheet(samples_csv, tubes=tubes)
    cache_dir = out / ".cache"
    cache_dir.mkdir(exist_ok=True)

    all_rows = [_row_dict(r) for r in sheet]
    rows = [r for r in all_rows if None in by_tube or r["tube"] in by_tube]
    skipped = [r["sample_id"] for r in all_rows if r not in rows]
    outcomes: dict[str, SampleOutcome] = {}
    norm = _normalize_info(normalize, rows, by_tube, sheet.path) if normalize is not None else None
    todo: list[dict[str, Any]] = []
    total = len(rows)
    done = 0

    def report(o: SampleOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total, o)

    with _Executor(jobs, scheduler) as ex:
        if norm is not None:  # samples that cannot be normalised fail now, before any work
            for r in rows:
                err = _normalize_refusal(norm, r, by_tube)
                if err is not None:
                    o = _outcome_base(r)
                    o.error = err
                    outcomes[r["sample_id"]] = o
                    report(o)
        if len(rows) > sum(1 for _ in cache_dir.glob("*.json")):
            ex.warm_up()  # some samples are not cached yet: workers load while the inputs are hashed
        # Hash inputs once (also the provenance record).
        hashes: dict[str, str] = {}
        for r in rows:
            try:
                hashes[r["sample_id"]] = file_sha256(r["file"])
            except OSError as exc:
                o = _outcome_base(r)
                o.error = f"{r['file']}: {exc.strerror or exc}"
                outcomes[r["sample_id"]] = o
                report(o)

        pinned_by_tube: dict[str | None, dict[str, dict[str, Any]]] = {}
        for tube, t in by_tube.items():
            members = [r for r in rows if (tube is None or r["tube"] == tube) and r["sample_id"] in hashes]
            pinned: dict[str, dict[str, Any]] = {}  # "<path>@<group value>" -> geometry
            for spec in t.populations:
                if spec.group_by is None:
                    continue
                groups: dict[str, list[dict[str, Any]]] = {}
                for r in members:
                    groups.setdefault(_group_value(r, spec.group_by, sheet), []).append(r)
                for gval, grp in groups.items():
                    live = [r for r in grp if r["sample_id"] not in outcomes]
                    tasks = [{"row": r, "template": t.source, "template_sha": t.sha256,
                              "pinned": _pins_for(t, pinned, r, sheet), "population": spec.path,
                              "seed": seed, "position": k, "normalize": norm} for k, r in enumerate(live)]
                    got = {sid: (values, err) for sid, values, err in ex.map(_pool_task, tasks)}
                    # Concatenate in sheet order, not completion order: the pooled gate is the same on
                    # every executor.
                    ok_rows = [r for r in live if got.get(r["sample_id"], (None, None))[0] is not None]
                    if not ok_rows:
                        continue  # every member fails on its own; its gating task reports why
                    try:
                        ref = read_fcs(ok_rows[0]["file"], lazy=True)
                        pooled = np.concatenate([got[r["sample_id"]][0] for r in ok_rows])
                        g = compute_pooled(t, spec.path, pooled, ref, seed=seed)
                        pinned[f"{spec.path}@{gval}"] = _geometry_to_json(g)
                    except (FlowtoolsError, OSError) as exc:
                        for r in live:
                            o = _outcome_base(r)
                            o.error = (f"{r['file']}: pooled gate {spec.path!r} for {spec.group_by} "
                                       f"{gval}: {exc}")
                            outcomes.setdefault(r["sample_id"], o)
                            report(o)
            pinned_by_tube[tube] = pinned

        for r in rows:
            if r["sample_id"] in outcomes:
                continue
            t = by_tube.get(r["tube"]) or by_tube.get(None)
            assert t is not None  # noqa: S101 - the sheet was validated against the templates' tubes
            pins = _pins_for(t, pinned_by_tube.get(t.tube, {}), r, sheet)
            key = _cache_key(hashes[r["sample_id"]], t, pins, seed, norm["sha256"] if norm else "")
            cached = cache_dir / f"{safe_name(r['sample_id'])}.{key}.json"
            if cached.is_file():
                # The cache holds what was computed; the IDs come from today's sample sheet.
                o = _with_row(SampleOutcome.from_json(cached.read_text(encoding="utf-8")), r)
                o.cached = True
                outcomes[r["sample_id"]] = o
                report(o)
                continue
            todo.append({"row": r, "template": t.source, "template_sha": t.sha256, "pinned": pins,
                         "seed": seed, "normalize": norm,
                         "cache": str(cached),
                         "after_gate": None if ex._client is not None else after_gate, "out_dir": str(out),
                         "sha256": hashes[r["sample_id"]]})

        if todo and ex.remote:
            # This process only waits while the workers gate: load the table writers meanwhile
            # (pyarrow.parquet takes ~0.05 s to import) instead of after the last sample.
            threading.Thread(target=_import_table_writers, name="flowtools-preload", daemon=True).start()
        gates_written: set[str] = set()
        for o in ex.map(_gate_task, todo):
            outcomes[o.sample_id] = o
            if o.ok:
                task = next(tk for tk in todo if tk["row"]["sample_id"] == o.sample_id)
                atomic_write_text(task["cache"], o.to_json())
                # Each sample's own file, now, while the workers gate (not after the last sample).
                gates_written.add(_write_gates(out, o))
            report(o)

    ordered = [outcomes[r["sample_id"]] for r in rows]
    result = _write_outputs(out, ordered, sheet_path=Path(samples_csv), templates=tmpl, hashes=hashes,
                            seed=seed, jobs=jobs, scheduler=scheduler, skipped=skipped,
                            gates_written=gates_written, extras={r.sample_id: dict(r.extra) for r in sheet},
                            normalize=norm)
    return result


def _normalize_info(normalize: str | os.PathLike[str], rows: list[dict[str, Any]],
                    by_tube: Mapping[str | None, Template], sheet_path: Any) -> dict[str, Any]:
    """The model a run normalises with (plain data for the workers); refuses a model no sample can use."""
    from flowtools.analysis.normalize import CytoNorm, model_template
    from flowtools.errors import NormalizationError

    path = str(Path(normalize).resolve())
    model = CytoNorm.load(path)  # NormalizationError naming the file when missing or not a model
    info = (getattr(model, "provenance_", {}) or {}).get("template_info") or {}
    norm = {"path": path, "sha256": file_sha256(path), "mode": model.mode, "goal": model.goal,
            "batches": list(model.batches_), "markers": list(model.markers_),
            "template_sha256": info.get("sha256") or "", "template": info.get("name") or "",
            "template_tube": info.get("tube")}
    ok_templates = [t for t in by_tube.values() if not norm["template_sha256"]
                    or t.sha256 == norm["template_sha256"]]
    if not ok_templates:
        msg = (f"normalisation model {path} was fitted with template {norm['template']!r} "
               f"(sha256 {norm['template_sha256'][:12]}...), which is none of this run's templates "
               f"{[str(t.source) for t in by_tube.values()]}: the transformed scale would differ")
        raise NormalizationError(msg)
    if rows and all(_normalize_refusal(norm, r, by_tube) is not None for r in rows):
        batches = sorted({r["batch"] for r in rows})
        msg = (f"{sheet_path}: no sample can be normalised with model {path}: its batches are {batches}, "
               f"the model's {norm['batches']}")
        raise NormalizationError(msg)
    for t in ok_templates:
        model_template(model, t)  # refuses a template that estimates its transforms per file
    return norm


def _normalize_refusal(norm: dict[str, Any], row: dict[str, Any],
                       by_tube: Mapping[str | None, Template]) -> str | None:
    """Why a sample cannot be normalised with the run's model (None: it can)."""
    t = by_tube.get(row["tube"]) or by_tube.get(None)
    where = f"batch {row['batch']!r}, file {row['file']}"
    if t is not None and norm["template_sha256"] and t.sha256 != norm["template_sha256"]:
        return (f"{where}: tube {row['tube']!r} is gated with template {t.name!r}, not {norm['template']!r} "
                f"that the normalisation model {Path(norm['path']).name} was fitted with")
    if row["batch"] not in norm["batches"]:
        return (f"{where}: batch {row['batch']!r} is not in the normalisation model "
                f"{Path(norm['path']).name} (fitted on batches {norm['batches']}); fit a model with an "
                "anchor of this batch")
    return None


# ------------------------------------------------------------------------------------------ outputs


class _OutputLock:
    """One batch run per output folder: ``OUT/.flowtools.lock`` holds the PID of the run writing there."""

    def __init__(self, out: Path) -> None:
        self.path = out / ".flowtools.lock"

    def __enter__(self) -> _OutputLock:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _alive(pid):
                    msg = f"{self.path.parent}: another flowtools run (pid {pid}) is writing to this folder"
                    raise GatingError(msg) from None
                self.path.unlink(missing_ok=True)  # left by a killed run
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return self
        msg = f"{self.path}: could not take the output folder's lock"
        raise GatingError(msg)

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temp_files(out: Path) -> None:
    """Delete temp files a killed run left behind (atomic writes name them ``.<name>.<random>.tmp``)."""
    for p in out.rglob(".*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)


def _write_outputs(
    out: Path,
    outcomes: list[SampleOutcome],
    *,
    sheet_path: Path,
    templates: Sequence[Template],
    hashes: dict[str, str],
    seed: int,
    jobs: int | None,
    scheduler: str | None,
    skipped: list[str],
    gates_written: Iterable[str] = (),
    extras: Mapping[str, Mapping[str, str]] | None = None,
    normalize: Mapping[str, Any] | None = None,
) -> PlateResult:
    prov = provenance_record(
        inputs={"samples.csv": sheet_path},
        parameters={"jobs": jobs, "scheduler": scheduler is not None,
                    "templates": [t.name for t in templates]},
        seed=seed,
        command="flowtools gate",
    )
    prov["fcs_sha256"] = {sid: h for sid, h in sorted(hashes.items())}
    prov["templates"] = {t.name: {"tube": t.tube, "sha256": t.sha256, "file": Path(t.source).name,
                                  "path": str(Path(t.source).resolve())} for t in templates}
    prov["input_paths"] = {"samples.csv": str(Path(sheet_path).resolve())}
    if normalize is not None:
        prov["normalize"] = {"model": Path(normalize["path"]).name, "path": normalize["path"],
                             "sha256": normalize["sha256"], "mode": normalize["mode"],
                             "goal": normalize["goal"], "batches": normalize["batches"],
                             "markers": normalize["markers"], "template": normalize["template"],
                             "template_sha256": normalize["template_sha256"]}

    records = []
    for o in outcomes:
        if not o.ok:
            continue
        for r in o.rows:
            records.append({"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube,
                            "plate": o.plate, "well": o.well, **r})
    empty = not records
    pop_csv = per_csv = None
    absolute = _absolute_counts(records, outcomes, templates, extras or {})
    if not empty:
        pops = populations.population_table(records)
        pop_csv = write_table(pops, out / "populations", prov)[0]
        atomic_write_text(out / "populations.columns.md", populations.columns_doc(pops.columns))
        wide = _per_woman(records, absolute=absolute)
        per_csv = write_table(wide, out / "per_woman", prov)[0]
        atomic_write_text(out / "per_woman.columns.md", _per_woman_doc(list(wide.columns)))

    if empty:  # nothing gated this time: no table from an earlier run may stay beside errors.json
        for stem in ("populations", "per_woman"):
            for suffix in (".csv", ".parquet"):
                (out / stem).with_suffix(suffix).unlink(missing_ok=True)
            (out / f"{stem}.columns.md").unlink(missing_ok=True)
    gates_dir = out / "gates"
    done = set(gates_written)
    current = set()
    for o in outcomes:
        if o.ok and o.gatingml:
            name = f"{safe_name(o.sample_id)}.gating-ml.xml"
            current.add(name)
            if name not in done:  # samples from the cache (the others were written as they came)
                _write_gates(out, o)
    if gates_dir.is_dir():
        for p in gates_dir.glob("*.gating-ml.xml"):
            if p.name not in current:  # a sample that failed or left the sheet since the last run
                p.unlink()
    errors = [{"sample_id": o.sample_id, "file": o.file, "error": o.error} for o in outcomes if not o.ok]
    failed_pops = [{"sample_id": o.sample_id, "file": o.file, **f} for o in outcomes if o.ok
                   for f in o.failed_populations]
    flagged = [{"sample_id": o.sample_id, "file": o.file, **f} for o in outcomes if o.ok
               for f in o.flagged_populations]
    decisions = decision_table(outcomes)
    if decisions.data["sample_id"]:
        write_table(decisions, out / "decisions", prov)
        atomic_write_text(out / "decisions.columns.md", _DECISIONS_DOC)
    else:
        for suffix in (".csv", ".parquet"):
            (out / "decisions").with_suffix(suffix).unlink(missing_ok=True)
    errors_json = out / "errors.json"
    atomic_write_text(errors_json, json.dumps(
        {"provenance": prov, "errors": errors, "failed_populations": failed_pops,
         "flagged_populations": flagged, "skipped_no_template": skipped}, indent=2, allow_nan=False) + "\n")
    prov_json = out / "provenance.json"
    atomic_write_text(prov_json, json.dumps(prov, indent=2) + "\n")
    return PlateResult(out, outcomes, pop_csv, per_csv, errors_json, prov_json, skipped=skipped)


_NAN = float("nan")

_DECISION_COLUMNS = ("sample_id", "woman_id", "tube", "plate", "well", "population", "method", "status",
                     "fallback", "rule", "cut", "events_in", "events_kept", "pct_kept", "reasons", "details",
                     "params")
_DECISIONS_DOC = """# decisions table

One row per gated sample and data-driven population (a template entry with a `method`): how its
gate was decided. Every automatic decision of a run is here, so that it can be checked.

| column | meaning |
|---|---|
| sample_id, woman_id, tube, plate, well | from the sample sheet |
| population | the template entry's path (a quad entry: its parent + the entry name); empty on a sample row |
| method | the gating method; on a sample row `sample:time` (which parameter is time, and why), |
| | `sample:processing` (the file looks already compensated or transformed: done again) or |
| | `sample:normalize` (a `--normalize` run: the model, its hash and the batch it normalised for) |
| status | `ok`, `flagged` (numbers kept; see `reasons`) or `failed` (no numbers) |
| fallback | the fallback that produced the gate and why (empty: the method's main rule did) |
| rule | the rule that set the gate, in words (e.g. the valley between two peaks) |
| cut | the threshold, for 1-D cuts (empty otherwise) |
| events_in | events the method was given (the parent's, or a pooled group's) |
| events_kept | events of the sample in the resulting population(s) |
| pct_kept | events_kept as % of events_in (for a pooled gate, of the pool) |
| reasons | why flagged or failed, `; `-separated |
| details | all the method recorded (peaks: [position, height, prominence] relative to the top), JSON |
| params | the method's arguments, defaults filled, JSON |
"""


def decision_table(outcomes: Sequence[SampleOutcome]) -> Table:
    """The decisions of every gated sample's data-driven populations, one row each (``decisions.csv``)."""
    cols: dict[str, list[Any]] = {c: [] for c in _DECISION_COLUMNS}
    for o in outcomes:
        if not o.ok:
            continue
        for key, note in o.notes.items():  # the sample's own decisions (time parameter, processing)
            row = {c: "" for c in _DECISION_COLUMNS}
            row.update({"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube, "plate": o.plate,
                        "well": o.well, "method": f"sample:{key}", "status": "flagged" if key == "processing"
                        else "ok", "rule": note, "cut": _NAN, "events_in": _NAN, "events_kept": _NAN,
                        "pct_kept": _NAN, "details": "{}", "params": "{}"})
            for c in _DECISION_COLUMNS:
                cols[c].append(row[c])
        for path, d in o.decisions.items():
            details = d.get("details") or {}
            ein, ekept = d.get("events_in"), d.get("events_kept")
            cut = details.get("cut")
            row = {"sample_id": o.sample_id, "woman_id": o.woman_id, "tube": o.tube, "plate": o.plate,
                   "well": o.well, "population": path, "method": d.get("method", ""),
                   "status": d.get("status", "ok"), "fallback": d.get("fallback") or "",
                   "rule": str(details.get("rule", "")),
                   "cut": float(cut) if isinstance(cut, int | float) else _NAN,
                   "events_in": ein if ein is not None else _NAN,
                   "events_kept": ekept if ekept is not None else _NAN,
                   "pct_kept": 100.0 * ekept / ein if ein and ekept is not None else _NAN,
                   "reasons": "; ".join(d.get("reasons") or ()),
                   "details": json.dumps(details, sort_keys=True),
                   "params": json.dumps(d.get("params") or {}, sort_keys=True)}
            for c in _DECISION_COLUMNS:
                cols[c].append(row[c])
    return Table(cols)


def _absolute_counts(records: list[dict[str, Any]], outcomes: Sequence[SampleOutcome],
                     templates: Sequence[Template], extras: Mapping[str, Mapping[str, str]]) -> bool:
    """Add cells/µL to the records where a template counts beads or a file has ``$VOL``; whether any did.

    Bead method where the sample's template has a ``role: counting_beads`` population (with the
    sheet's ``beads_per_test`` and ``sample_volume_ul``), else volumetric from ``$VOL``.
    """
    from flowtools.analysis.absolute import add_absolute_counts

    bead_of = {t.tube: next((p for p, role in t.roles.items() if role == populations.ROLE_BEADS), None)
               for t in templates}
    ok = [o for o in outcomes if o.ok]
    beads = {o.sample_id: bead_of.get(o.tube, bead_of.get(None)) for o in ok}
    vols = {o.sample_id: o.vol_nl for o in ok if o.vol_nl is not None}
    if not records or not (any(beads.values()) or vols):
        return False

    def column(name: str) -> dict[str, str]:
        return {s: e[name] for s, e in extras.items() if str(e.get(name, "")).strip()}

    add_absolute_counts(records, bead_population=beads, beads_per_test=column("beads_per_test"),
                        volume_ul=column("sample_volume_ul"), vol_nl=vols)
    return True


def _per_woman(records: list[dict[str, Any]], *, absolute: bool = False) -> Table:
    """One row per woman, one ``tube|population`` column of % of parent each.

    As ``pivot_table(index="woman_id", columns=..., values="pct_parent", aggfunc="first")``
    gives it: the first non-NaN value in row order, rows and columns sorted, women and
    columns with no value at all left out. With absolute counts, ``tube|population|cells_per_ul``
    columns too.
    """
    cells: dict[str, dict[str, float]] = {}
    for r in records:
        v = r["pct_parent"]
        if v == v:  # noqa: PLR0124 - NaN is no value
            cells.setdefault(r["woman_id"], {}).setdefault(f"{r['tube']}|{r['population']}", v)
        a = r.get("cells_per_ul", _NAN) if absolute else _NAN
        if a == a:  # noqa: PLR0124
            cells.setdefault(r["woman_id"], {}).setdefault(f"{r['tube']}|{r['population']}|cells_per_ul", a)
    women = sorted(cells)
    columns = sorted({c for row in cells.values() for c in row})
    data: dict[str, list[Any]] = {"woman_id": women}
    for c in columns:
        data[c] = [float(cells[w].get(c, _NAN)) for w in women]
    return Table(data)


def _write_gates(out: Path, o: SampleOutcome) -> str:
    """Write a sample's resolved gates to ``gates/<sample>.gating-ml.xml`` (atomically); the file name."""
    name = f"{safe_name(o.sample_id)}.gating-ml.xml"
    atomic_write_text(out / "gates" / name, o.gatingml or "")
    return name


def _per_woman_doc(columns: Iterable[str]) -> str:
    lines = [
        "# per_woman table",
        "",
        "One row per woman (`woman_id`, from the sample sheet). Every other column is named",
        "`<tube>|<population path>` and holds that population's **% of its parent** (0-100) in that",
        "woman's sample of that tube, as gated by the tube's template. Empty: the sample failed or",
        "the population's parent had no events. Counts, % of total and MFIs are in populations.csv.",
        "A column `<tube>|<population path>|cells_per_ul` (runs with absolute counts) holds cells per",
        "µL of sample instead (see `cells_per_ul` in populations.columns.md).",
        "",
        "| column | meaning |",
        "|---|---|",
        "| woman_id | participant pseudonym from the sample sheet |",
    ]
    for c in columns:
        if c == "woman_id":
            continue
        tube, _, pop = c.partition("|")
        if pop.endswith("|cells_per_ul"):
            pop = pop[: -len("|cells_per_ul")]
            lines.append(f"| {c} | {pop.split('/')[-1]} cells per µL of sample (tube {tube}) |")
            continue
        parent = pop.rpartition("/")[0] or "all events"
        lines.append(f"| {c} | % of {parent} that is {pop.split('/')[-1]} (tube {tube}) |")
    return "\n".join(lines) + "\n"

