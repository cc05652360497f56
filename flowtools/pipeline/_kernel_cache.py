"""The numba kernels of plate gating: warmed once per process, compiled in parallel on a cold cache.

A plate's workers gate with ~30 compiled numba kernels. Loaded from numba's on-disk cache they
take ~0.2 s; compiled, ~25-35 s of one core (most of a new user's first plate). On a cold cache
(a new install, a new machine, edited kernels) :func:`prime` compiles them in parallel: helper
processes take the warm-up :data:`STEPS` from a queue, each step compiling and saving its own
kernels, and the caller then loads all of them from the cache. The batch runner primes in its
fork server before any worker is forked (:func:`flowtools.pipeline.executor._warm_worker`), or, with
spawned workers, in the coordinator before it starts them.

Whether the cache is warm is recorded by a stamp next to numba's cache files (in the folder
numba uses for this module's own kernels, so deleting ``NUMBA_CACHE_DIR`` or the
``__pycache__`` folders deletes it too). Its content names what the cached code depends on:
flowtools' version and sources, numba, Python, the CPU. A stale stamp only costs one priming
(helpers that find the kernels cached load them in ~0.5 s); a stamp that lies (kernel files
deleted by hand) only costs the old serial compile in the fork server.

numba's cache index is not safe for concurrent writers (two processes adding overloads of one
function at once can leave the index pointing at the other's data file), so the helpers hold an
exclusive lock on the cache folder while they read or write an index entry (POSIX only:
elsewhere nothing is primed).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["ONE_THREAD_ENV", "STEPS", "can_prime", "is_warm", "mark_warm", "prime", "warm_all"]

ONE_THREAD_ENV = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Thread-count variables that numba, OpenMP, OpenBLAS and MKL read as they load."""

_log = logging.getLogger(__name__)

_STAMP_NAME = "flowtools-kernels.stamp"
_LOCK_NAME = "flowtools-kernels.lock"
_HELPER_TIMEOUT_S = 900.0  # a helper stuck longer than this is ended; the caller compiles what is left


# ------------------------------------------------------------------------------------------ warm-up steps


def warm_engine() -> None:
    """The gate kernels (every signature: compiled on import)."""
    from flowtools.gating import engine

    engine.warm_up()


def warm_methods(module: str | None = None) -> None:
    """The built-in methods' kernels (:func:`flowtools.gating.methods.warm_up`).

    ``module``: only the methods defined there (a helper's share); every method otherwise.
    """
    from flowtools.gating import methods as m

    if module is None:
        m.warm_up()
        return
    # A helper process (thrown away afterwards) warms a part of the registry: the same calls
    # as the full warm-up, on the methods of one module (their kernels are that module's).
    everything = m.methods
    m.methods = lambda: {k: s for k, s in everything().items() if s.fn.__module__ == module}
    try:
        m.warm_up()
    finally:
        m.methods = everything


def warm_transforms() -> None:
    """The logicle kernels (whole arrays and masked)."""
    import numpy as np

    from flowtools.transforms.scales import LogicleTransform

    v = np.linspace(-100.0, 1e5, 64)
    lg = LogicleTransform(262144.0, 0.5, 4.5, 0.0)
    lg.apply(v)
    lg.apply_where(v, np.ones(v.size, dtype=np.bool_), np.zeros(v.size, dtype=np.bool_), np.empty(v.size))


def warm_populations() -> None:
    """The population table's MFI kernels."""
    from flowtools.analysis import populations

    populations.warm_up()


def warm_all() -> None:
    """Every step, in this process (what a worker's tasks call). Raises what a step raises.

    Not the compensation kernel (:func:`flowtools.compensation.warm_up`): a task compensates
    in the gating engine's column extraction (``engine._kernels.extract_columns``), and never
    calls ``compensate_rows`` (8 signatures compiled on import: ~2 s cold, ~0.7 s to load).
    """
    import threadpoolctl  # noqa: F401 - each worker's _worker_init calls it

    from flowtools.gating import templates  # noqa: F401 - imported for its cost

    warm_engine()
    warm_methods()
    warm_transforms()
    warm_populations()


# Helper steps, the longest first (cold compile on a 2-core x86 box: populations ~11 s, the
# mixture methods ~5 s, transforms ~4 s, engine ~3.5 s, density methods ~1.5 s, the others
# < 1 s). Steps share no kernel module, except the density kernels, which every methods step
# warms (numba compiles them once per process; the lock keeps the index whole).
_M = "flowtools.gating.methods."
STEPS: tuple[tuple[str, Callable[..., None], tuple[Any, ...]], ...] = (
    ("populations", warm_populations, ()),
    ("methods:mixture", warm_methods, (_M + "mixture",)),
    ("transforms", warm_transforms, ()),
    ("engine", warm_engine, ()),
    ("methods:density", warm_methods, (_M + "density",)),
    ("methods:singlet", warm_methods, (_M + "singlet",)),
    ("methods:qc", warm_methods, (_M + "qc",)),
    ("methods:boundary", warm_methods, (_M + "boundary",)),
)
"""(name, function, arguments) of every helper step; together they warm what :func:`warm_all` does."""


def _other_method_modules() -> list[str]:
    """Modules of built-in methods that no step names (a method added since): one more step each."""
    from flowtools.gating import methods as m

    mods = {s.fn.__module__ for s in m.methods().values() if s.fn.__module__.startswith("flowtools.")}
    return sorted(mods - {args[0] for _, fn, args in STEPS if fn is warm_methods})


# ------------------------------------------------------------------------------------------ the stamp


def _probe() -> None:
    """A function of this file: numba's cache locators are asked where its cache would be."""


def _cache_dir() -> Path | None:
    """The folder numba caches this module's kernels in (created), or None (no usable cache)."""
    from flowtools._config import NUMBA_CACHE

    if not NUMBA_CACHE:
        return None
    try:
        from numba.core import caching, config

        if getattr(config, "CACHE_LOCATOR_CLASSES", None):
            return None  # the user's own locators: no guess at where they put things
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in recent numba
        for cls in impl._locator_classes:
            locator = cls.from_function(_probe, __file__)
            if locator is not None:
                locator.ensure_cache_path()
                return Path(locator.get_cache_path())
    except Exception:  # noqa: BLE001 - another numba: nothing primed, nothing lost
        return None
    return None


def _stamp_text() -> str:
    """What the cached machine code depends on (flowtools' sources, numba, Python, the CPU)."""
    import numba
    from llvmlite import binding as llvm

    from flowtools._version import __version__

    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    cpu = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    features = os.environ.get("NUMBA_CPU_FEATURES") or llvm.get_host_cpu_features().flatten()
    features_hash = hashlib.sha256(features.encode()).hexdigest()[:16]
    return (f"flowtools {__version__}\nnumba {numba.__version__}\npython {sys.version.split()[0]} "
            f"{sys.implementation.cache_tag}\ncpu {cpu} {features_hash}\nsources {h.hexdigest()}\n")


def is_warm() -> bool:
    """Whether the stamp says the kernels are cached (False also when there is no cache to share)."""
    d = _cache_dir()
    if d is None:
        return False
    try:
        return (d / _STAMP_NAME).read_text(encoding="utf-8") == _stamp_text()
    except (OSError, UnicodeDecodeError):
        return False


def mark_warm() -> None:
    """Record that the kernels are cached (after a warm-up that compiled or loaded them). Never raises."""
    d = _cache_dir()
    if d is None:
        return
    try:
        tmp = d / f"{_STAMP_NAME}.{os.getpid()}.tmp"
        tmp.write_text(_stamp_text(), encoding="utf-8")
        tmp.replace(d / _STAMP_NAME)
    except OSError:
        pass


# ------------------------------------------------------------------------------------------ priming


def can_prime() -> bool:
    """Whether :func:`prime` can run here: a shared cache and a lock for its index files."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return False
    return _cache_dir() is not None


def prime(ctx: Any, procs: int) -> bool:
    """Compile every step's kernels into the cache with ``procs`` helper processes of ``ctx``; wait.

    Parameters
    ----------
    ctx : multiprocessing context
        ``fork`` (from a fork server, before anything started a thread) or ``spawn``.
    procs : int
        Helper processes (at most one per step).

    Returns
    -------
    bool
        Whether every helper finished (then :func:`mark_warm` has been called). Never raises.
    """
    try:
        steps = [name for name, _, _ in STEPS] + [f"methods:{m}" for m in _other_method_modules()]
        procs = max(1, min(procs, len(steps)))
        t0 = time.perf_counter()
        _log.info("numba's cache is cold: compiling the gating kernels in %d processes", procs)
        todo = ctx.SimpleQueue()
        for name in steps:
            todo.put(name)
        for _ in range(procs):
            todo.put(None)
        helpers = [ctx.Process(target=_helper, args=(todo,), name=f"flowtools-compile-{i}", daemon=True)
                   for i in range(procs)]
        for p in helpers:
            p.start()
        deadline = time.monotonic() + _HELPER_TIMEOUT_S
        for p in helpers:
            p.join(max(0.0, deadline - time.monotonic()))
        ok = True
        for p in helpers:
            if p.is_alive():
                p.kill()
                p.join()
            ok = ok and p.exitcode == 0
        todo.close()
        if ok:
            mark_warm()
        _log.info("gating kernels compiled in %.1f s (%s)", time.perf_counter() - t0,
                  "all cached" if ok else "some left to the warm-up")
        return ok
    except Exception:  # noqa: BLE001 - priming only saves time: the warm-up compiles what is missing
        return False


def _helper(todo: Any) -> None:
    """A helper process: run steps from the queue until its end marker; exit 1 if a step failed."""
    os.environ.update(dict.fromkeys(ONE_THREAD_ENV, "1"))  # before numba loads: compiling needs no threads
    failed = False
    with _locked_cache_index():
        table = {name: (fn, args) for name, fn, args in STEPS}
        while (name := todo.get()) is not None:
            other = (warm_methods, (name.partition(":")[2],))  # a methods module added since
            fn, args = table.get(name, other)
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - the fork server's warm-up compiles (and the tasks report) it
                failed = True
    if failed:
        sys.exit(1)


@contextlib.contextmanager
def _locked_cache_index() -> Iterator[None]:
    """Within: this process reads and writes numba's cache index files under an exclusive lock."""
    import fcntl

    from numba.core import caching

    cls = caching.IndexDataCacheFile
    saved = cls.save, cls.load

    def guarded(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(self: Any, *args: Any) -> Any:
            folder = self._cache_path
            if not os.path.isdir(folder):
                return method(self, *args)  # nothing there to read (save creates the folder first)
            with open(os.path.join(folder, _LOCK_NAME), "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    return method(self, *args)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

        return run

    cls.save, cls.load = guarded(cls.save), guarded(cls.load)
    try:
        yield
    finally:
        cls.save, cls.load = saved
