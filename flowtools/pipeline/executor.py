"""Where a plate's tasks run: local worker processes (a warmed fork server on Linux), dask, or here.

Workers start with one thread per library and with the gating kernels loaded (once, in the
fork server); on a cold numba cache the kernels are compiled in parallel first
(:mod:`flowtools.pipeline._kernel_cache`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from flowtools._config import COMPILE_JOBS
from flowtools.errors import GatingError
from flowtools.pipeline import _kernel_cache

__all__ = ["Executor", "import_table_writers"]


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


def import_table_writers() -> None:
    """Import pyarrow's writers now (their ~0.05 s) while the workers gate; never raises."""
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


class Executor:
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

    def __enter__(self) -> Executor:
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
        """Results of ``fn`` over ``tasks`` in completion order (in task order when run here)."""
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
