"""Worker start-up helpers of the batch runner: warm-up and output-module preloading."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowtools.pipeline import executor, plate, tasks


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (this one has imported everything already); its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


_WARM_UP_FACTS = """
import json, sys
from flowtools.pipeline import executor, plate
mixture = 'flowtools.gating.methods._mixture_kernels'
before = mixture in sys.modules
task_modules = ('flowtools.transforms._kernels', 'flowtools.gating.engine._kernels', mixture)
task_before = [m for m in task_modules if m in sys.modules]
executor._warm_worker()
from flowtools.transforms import _kernels as t
from flowtools.gating.engine import _kernels as e
from flowtools.gating.methods import _mixture_kernels as m
from flowtools.analysis import _population_kernels as k
from flowtools.gating.methods import _sort_kernels as srt
print(json.dumps({
    "mixture_before": before, "mixture_after": mixture in sys.modules, "task_modules_before": task_before,
    "task_kernels": [bool(f.overloads) for f in (t.exact_masked, t.exact_serial, t.build_table,
                                                 e.extract_columns, m._m_step)],
    "compensation_loaded": 'flowtools.compensation._kernels' in sys.modules,
    "warm": executor._WARM is not None,
    "table_kernels": [bool(f.overloads) for f in (k.pattern_ids, k.column_middles)],
    "sort_kernel": bool(srt.argsort_f64.overloads),
}))
"""


@pytest.fixture(scope="module")
def warmed_up() -> dict:
    """What one warm-up loads in a fresh interpreter (this one has imported everything already).

    One interpreter for the three tests below: each used to start its own (~2 s each), to check a
    different part of the same warm-up.
    """
    import json

    return json.loads(_fresh(_WARM_UP_FACTS))


def test_warm_worker_loads_the_method_kernels_and_never_raises(warmed_up):
    assert (warmed_up["mixture_before"], warmed_up["mixture_after"]) == (False, True)


def test_a_broken_warm_up_is_silent_and_not_marked_done(monkeypatch):
    def broken() -> None:
        msg = "no methods today"
        raise RuntimeError(msg)

    monkeypatch.setattr(executor, "_WARM", None)
    monkeypatch.setattr("flowtools.gating.methods.methods", broken)
    executor._warm_worker()  # no exception
    assert executor._WARM is None


def test_warm_worker_loads_the_kernels_a_task_calls(warmed_up):
    # In a fresh interpreter: after the warm-up, the kernels of logicle, the gate engine and the
    # methods are loaded (a forked worker's first task loads none of its own). Not the
    # compensation kernel: tasks compensate in the engine's column extraction, never with it
    # (its 8 signatures cost ~2 s to compile, ~0.7 s to load).
    # (plate is imported in that interpreter too: it loads none of these, the warm-up does)
    assert warmed_up["task_modules_before"] == []
    assert warmed_up["task_kernels"] == [True] * 5
    assert warmed_up["sort_kernel"] is True  # qc's and singlet's radix argsort (large parents only)
    assert warmed_up["compensation_loaded"] is False


def test_warm_worker_loads_the_population_table_kernels(warmed_up):
    # The MFI kernel moved to flowtools.analysis._population_kernels: the warm-up compiles it there.
    assert warmed_up["warm"] is True
    assert warmed_up["table_kernels"] == [True, True]


def test_in_process_executor_is_not_remote_and_warm_up_is_a_no_op():
    with executor.Executor(1, None) as ex:
        assert not ex.remote
        ex.warm_up()
        assert list(ex.map(abs, [-1, 2])) == [1, 2]


def _loaded(_: int) -> bool:
    kernels = ("flowtools.gating.methods._mixture_kernels", "flowtools.gating.methods._density_kernels",
               "flowtools.gating.engine._kernels")
    return all(m in sys.modules for m in kernels)


def test_pool_executor_warms_up_and_runs_tasks():
    with executor.Executor(2, None) as ex:
        assert ex.remote
        ex.warm_up()
        assert sorted(ex.map(abs, [-3, 4, -5])) == [3, 4, 5]
        assert all(ex.map(_loaded, [0, 1]))  # _worker_init loaded them


def test_import_table_writers():
    out = _fresh(
        "import sys; from flowtools.pipeline import executor, plate; "
        "before = 'pyarrow.parquet' in sys.modules; "
        "executor.import_table_writers(); print(before, 'pyarrow.parquet' in sys.modules)"
    )
    assert out.split() == ["False", "True"]


def _thread_caps(_: int) -> tuple[int, list[int], str | None, bool]:
    import numba
    from threadpoolctl import threadpool_info

    warmed_elsewhere = executor._WARM is not None and executor._WARM != os.getpid()  # in the fork server
    return numba.get_num_threads(), sorted({d["num_threads"] for d in threadpool_info()}), os.environ.get(
        "NUMBA_NUM_THREADS"), warmed_elsewhere


def test_local_workers_start_from_a_warm_fork_server_with_one_thread_each(monkeypatch):
    import multiprocessing as mp

    monkeypatch.delenv("FLOWTOOLS_START_METHOD", raising=False)
    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("this platform has no fork server")
    before = {k: os.environ.get(k) for k in executor._ONE_THREAD_ENV}
    with executor.Executor(2, None) as ex:
        caps = list(ex.map(_thread_caps, [0, 1, 2]))
        assert ex.start_method == ("forkserver" if sys.platform.startswith("linux") else "spawn")
        assert {k: os.environ.get(k) for k in executor._ONE_THREAD_ENV} == before  # this process: unchanged
        assert all(ex.map(_loaded, [0, 1]))
    assert {c[0] for c in caps} == {1}  # numba
    assert {t for c in caps for t in c[1]} == {1}  # BLAS / OpenMP pools
    assert {c[2] for c in caps} == {"1"}
    if ex.start_method == "forkserver":
        assert all(c[3] for c in caps)  # the kernels were loaded once, in the fork server


def test_start_method_can_be_forced_to_spawn(monkeypatch):
    from flowtools.pipeline import _kernel_cache as k

    monkeypatch.setenv("FLOWTOOLS_START_METHOD", "spawn")
    assert executor._mp_context().get_start_method() == "spawn"
    primed = []
    monkeypatch.setattr(executor, "COMPILE_JOBS", 2)
    monkeypatch.setattr(k, "is_warm", lambda: False)  # as on a new install
    monkeypatch.setattr(k, "can_prime", lambda: True)
    monkeypatch.setattr(k, "prime", lambda ctx, procs: primed.append((ctx.get_start_method(), procs)) or True)
    with executor.Executor(2, None) as ex:
        ex.warm_up()
        caps = list(ex.map(_thread_caps, [0, 1]))
        assert all(ex.map(_loaded, [0, 1]))
    assert primed == [("spawn", 2)]  # once, by this process, before the workers (which then load the cache)
    assert {c[0] for c in caps} == {1}
    assert {t for c in caps for t in c[1]} == {1}
    assert not any(c[3] for c in caps)  # each spawned worker warmed itself


def test_a_worker_ends_itself_when_its_parent_is_gone(tmp_path):
    """exit_with_parent in a multiprocessing child: it ends once its parent is killed (zombie or not)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import multiprocessing as mp, time\n"
        "def child():\n"
        "    from flowtools._workers import exit_with_parent\n"
        "    exit_with_parent()\n"
        "    time.sleep(600)\n"
        "if __name__ == '__main__':\n"
        "    p = mp.get_context('spawn').Process(target=child)\n"
        "    p.start()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    psutil = pytest.importorskip("psutil")
    child = psutil.Process(child_pid)
    parent.kill()  # not reaped until the end: a zombie parent
    gone, alive = psutil.wait_procs([child], timeout=20)
    parent.wait()
    parent.stdout.close()
    assert not alive


def test_exit_with_parent_is_a_no_op_outside_a_pool_child():
    from flowtools._workers import exit_with_parent

    exit_with_parent()  # this process has no multiprocessing parent: nothing starts
    assert not any(t.name == "flowtools-parent-watch" for t in __import__("threading").enumerate())


def test_an_unknown_start_method_is_a_clear_error(monkeypatch):
    from flowtools.errors import GatingError

    for bad in ("teleport", "fork"):  # fork: a process with threads is not forked
        monkeypatch.setenv("FLOWTOOLS_START_METHOD", bad)
        with pytest.raises(GatingError, match=f"FLOWTOOLS_START_METHOD='{bad}'"):
            executor._mp_context()


def test_a_fully_cached_run_starts_no_worker(monkeypatch):
    with executor.Executor(2, None) as ex:
        assert ex.remote
        assert list(ex.map(abs, [])) == []
        assert ex._pool is None  # nothing to gate: no fork server, no worker


def test_the_warm_up_runs_no_user_registered_method(monkeypatch):
    from flowtools.gating import methods as m

    calls = []

    def mine(values, ctx):  # noqa: ANN001, ANN202 - a user's method
        calls.append(1)
        msg = "user code ran in the warm-up"
        raise AssertionError(msg)

    monkeypatch.setitem(m._REGISTRY, "test-user-method", m.MethodSpec("test-user-method", mine, (1,)))
    monkeypatch.setattr(executor, "_WARM", None)
    executor._warm_worker()
    assert not calls and executor._WARM == os.getpid()


# ------------------------------------------------------------------------------------------ cold start


def _compiles_in_a_task(task: dict) -> tuple[bool, int, bool]:
    """Gate one sample in this worker, counting the numba compilations (and cache loads) it makes."""
    from numba.core import event

    class Count(event.Listener):
        n = 0

        def on_start(self, e: object) -> None:
            Count.n += 1

        def on_end(self, e: object) -> None:
            pass

    listener = Count()
    event.register("numba:compile", listener)
    try:
        out = tasks.gate_task(task)
    finally:
        event.unregister("numba:compile", listener)
    return out.ok, Count.n, executor._WARM not in (None, os.getpid())


def _kernels_ready(_: int) -> tuple[bool, bool]:
    """Whether the task kernels' dispatchers hold overloads here, and whether the fork server warmed them."""
    from flowtools.analysis import _population_kernels as pk
    from flowtools.gating.engine import _kernels as ek
    from flowtools.gating.methods import _mixture_kernels as mk
    from flowtools.transforms import _kernels as tk

    kernels = (pk.column_middles, pk.pattern_ids, ek.extract_columns, mk._m_step, tk.exact_serial)
    return all(k.overloads for k in kernels), executor._WARM not in (None, os.getpid())


def test_forked_workers_inherit_the_compiled_kernels_and_compile_nothing(gated_cohort, monkeypatch):
    """A worker forked from the fork server has every kernel before a first task; a task compiles nothing."""
    import multiprocessing as mp

    from flowtools._resources import study_template
    from flowtools.gating.templates import load_template
    from flowtools.io.sample_sheet import read_sample_sheet

    monkeypatch.delenv("FLOWTOOLS_START_METHOD", raising=False)
    if not sys.platform.startswith("linux") or "forkserver" not in mp.get_all_start_methods():
        pytest.skip("workers are spawned on this platform")
    gc = gated_cohort(n_women=1, events=3000, seed=3, templates=())
    t = load_template(study_template("TBNK-NK"))
    row = next(plate._row_dict(r) for r in read_sample_sheet(gc.cohort.samples_csv) if r.tube == t.tube)
    task = {"row": row, "template": t.source, "template_sha": t.sha256, "pinned": {}, "seed": 0}
    with executor.Executor(2, None) as ex:
        ready = list(ex.map(_kernels_ready, [0, 1]))
        (ok, compiles, forked), = ex.map(_compiles_in_a_task, [task])
    assert ready == [(True, True)] * 2  # before any task: the fork server's overloads
    assert ok and forked
    assert compiles == 0  # nothing compiled, nothing even loaded from numba's cache, in the worker


def test_the_helper_steps_warm_what_the_warm_up_does():
    # Priming runs the steps in helper processes and the fork server then loads what warm_all
    # loads: the two must cover the same kernels and signatures.
    code = (
        "import gc, sys; from numba.core.registry import CPUDispatcher; "
        "from flowtools.pipeline import _kernel_cache as k; "
        "[fn(*a) for _, fn, a in k.STEPS] if sys.argv[1] == 'steps' else k.warm_all(); "
        "print(sorted(f'{d.py_func.__module__}.{d.py_func.__qualname__}:{len(d.overloads)}' "
        "for d in gc.get_objects() "
        "if isinstance(d, CPUDispatcher) and d.overloads and d.py_func.__module__.startswith('flowtools')))"
    )
    run = [
        subprocess.run([sys.executable, "-c", code, which], capture_output=True, text=True, check=True).stdout
        for which in ("steps", "all")
    ]
    assert run[0] == run[1]
    assert "column_middles" in run[0] and "_m_step" in run[0]


def test_the_kernel_cache_stamp(tmp_path, monkeypatch):
    from flowtools.pipeline import _kernel_cache as k

    monkeypatch.setattr(k, "_cache_dir", lambda: tmp_path)
    assert not k.is_warm()
    k.mark_warm()
    assert k.is_warm()
    (tmp_path / k._STAMP_NAME).write_text(k._stamp_text().replace("numba", "numba-other"), encoding="utf-8")
    assert not k.is_warm()  # another numba (or flowtools, Python, CPU): cold
    monkeypatch.setattr(k, "_cache_dir", lambda: None)  # no shared cache (FLOWTOOLS_NUMBA_CACHE=0)
    assert not k.is_warm() and not k.can_prime()
    k.mark_warm()  # a no-op


_TOY = """
from numba import njit


@njit(cache=True)
def double(x):
    return x * 2
"""


_PRIME = """
import multiprocessing as mp, sys
from pathlib import Path
tmp = Path(sys.argv[1])
sys.path.insert(0, str(tmp))
from flowtools.pipeline import _kernel_cache as k
values = {values!r}

def step(expr):
    import flowtools_toy_kernel
    import numpy as np
    flowtools_toy_kernel.double(eval(expr, {{"np": np}}))

k.STEPS = tuple((f"toy{{i}}", step, (v,)) for i, v in enumerate(values))
k._other_method_modules = list
k._cache_dir = lambda: tmp / "stamp"
ok = k.prime(mp.get_context("fork"), 3)
print(ok, k.is_warm())
"""


def test_prime_compiles_the_steps_in_helpers_into_one_intact_cache(tmp_path):
    """Helpers adding overloads of one function at once leave numba's index whole: a new process loads all.

    Run in a fresh interpreter: prime() forks, which is only safe from a single-threaded process (the
    fork server), not from a test process where earlier tests left threads running.
    """
    import multiprocessing as mp

    from flowtools.pipeline import _kernel_cache as k

    if "fork" not in mp.get_all_start_methods() or not k.can_prime():
        pytest.skip("no fork, or no shared numba cache / file lock here")
    (tmp_path / "flowtools_toy_kernel.py").write_text(_TOY, encoding="utf-8")
    values = ("3", "2.5", "np.arange(3, dtype=np.int32)", "np.ones(2, dtype=np.float32)", "np.ones((2, 2))",
              "np.int16(4)")
    (tmp_path / "stamp").mkdir()
    primed = subprocess.run([sys.executable, "-c", _PRIME.format(values=values), str(tmp_path)],
                            capture_output=True, text=True, check=True).stdout
    assert primed.split() == ["True", "True"]
    out = subprocess.run(
        [sys.executable, "-c",
         f"import sys; sys.path.insert(0, {str(tmp_path)!r}); import numpy as np, flowtools_toy_kernel as t; "
         f"r = [t.double(v) for v in ({', '.join(values)},)]; "
         "s = t.double.stats; print(s.cache_hits.total(), s.cache_misses.total(), r[0], r[1], r[4].sum())"],
        capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(len(values)), "0", "6", "5.0", "8.0"]


def test_the_fork_server_primes_a_cold_cache_before_its_warm_up(monkeypatch):
    from flowtools.pipeline import _kernel_cache as k

    calls, marks = [], []
    monkeypatch.setattr(k, "is_warm", lambda: False)
    monkeypatch.setattr(k, "can_prime", lambda: True)
    monkeypatch.setattr(k, "prime", lambda ctx, procs: calls.append((ctx.get_start_method(), procs)) or True)
    monkeypatch.setattr(k, "mark_warm", lambda: marks.append(1))
    monkeypatch.setattr(executor, "_WARM", None)
    monkeypatch.setenv(executor._PRIME_ENV, "3")
    executor._warm_worker()  # as the fork server: the variable is set in its environment
    assert calls == [("fork", 3)] and not marks  # prime() marks the cache itself
    assert executor._PRIME_ENV not in os.environ  # its workers must not prime
    assert executor._WARM == os.getpid()

    monkeypatch.setattr(executor, "_WARM", None)
    monkeypatch.setenv(executor._PRIME_ENV, "1")  # one process allowed: the server compiles alone, then marks
    executor._warm_worker()
    assert calls == [("fork", 3)] and marks == [1]

    monkeypatch.setattr(executor, "_WARM", None)
    monkeypatch.setattr(k, "is_warm", lambda: pytest.fail("a worker looked at the cache"))
    executor._warm_worker()  # not the fork server (no variable): just the warm-up
    assert calls == [("fork", 3)] and marks == [1] and executor._WARM == os.getpid()


def test_compile_procs(monkeypatch):
    monkeypatch.setattr(executor, "COMPILE_JOBS", None)
    assert 1 <= executor._compile_procs(64) <= (os.cpu_count() or 1)
    assert executor._compile_procs(1) == 1
    monkeypatch.setattr(executor, "COMPILE_JOBS", 5)  # FLOWTOOLS_COMPILE_JOBS=5
    assert executor._compile_procs(2) == 5
