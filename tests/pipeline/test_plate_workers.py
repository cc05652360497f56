"""Worker start-up helpers of the batch runner: warm-up and output-module preloading."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowtools.pipeline import plate


def _fresh(code: str) -> str:
    """Run ``code`` in a new interpreter (this one has imported everything already); its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_warm_worker_loads_the_method_kernels_and_never_raises(monkeypatch):
    out = _fresh(
        "import sys; from flowtools.pipeline import plate; "
        "before = 'flowtools.gating.methods._mixture_kernels' in sys.modules; plate._warm_worker(); "
        "print(before, 'flowtools.gating.methods._mixture_kernels' in sys.modules)"
    )
    assert out.split() == ["False", "True"]


def test_a_broken_warm_up_is_silent_and_not_marked_done(monkeypatch):
    def broken() -> None:
        msg = "no methods today"
        raise RuntimeError(msg)

    monkeypatch.setattr(plate, "_WARM", None)
    monkeypatch.setattr("flowtools.gating.methods.methods", broken)
    plate._warm_worker()  # no exception
    assert plate._WARM is None


def test_warm_worker_loads_the_kernels_a_task_calls():
    # In a fresh interpreter: after the warm-up, the kernels of logicle, compensation and the
    # methods are loaded (a forked worker's first task loads none of its own).
    out = _fresh(
        "from flowtools.pipeline import plate; plate._warm_worker(); "
        "from flowtools.transforms import _kernels as t; from flowtools.compensation import _kernels as c; "
        "from flowtools.gating.methods import _mixture_kernels as m; "
        "print(*(bool(k.overloads) for k in (t.exact_masked, t.exact_serial, t.build_table, c._serial)))"
    )
    assert out.split() == ["True"] * 4


def test_warm_worker_loads_the_population_table_kernels():
    # The MFI kernel moved to flowtools.analysis._population_kernels: the warm-up compiles it there.
    out = _fresh(
        "from flowtools.pipeline import plate; plate._warm_worker(); "
        "from flowtools.analysis import _population_kernels as k; "
        "print(plate._WARM is not None, *(bool(f.overloads) for f in (k.pattern_ids, k.column_middles)))"
    )
    assert out.split() == ["True"] * 3


def test_in_process_executor_is_not_remote_and_warm_up_is_a_no_op():
    with plate._Executor(1, None) as ex:
        assert not ex.remote
        ex.warm_up()
        assert list(ex.map(abs, [-1, 2])) == [1, 2]


def _loaded(_: int) -> bool:
    kernels = ("flowtools.gating.methods._mixture_kernels", "flowtools.gating.methods._density_kernels",
               "flowtools.gating.engine._kernels")
    return all(m in sys.modules for m in kernels)


def test_pool_executor_warms_up_and_runs_tasks():
    with plate._Executor(2, None) as ex:
        assert ex.remote
        ex.warm_up()
        assert sorted(ex.map(abs, [-3, 4, -5])) == [3, 4, 5]
        assert all(ex.map(_loaded, [0, 1]))  # _worker_init loaded them


def test_import_table_writers():
    out = _fresh(
        "import sys; from flowtools.pipeline import plate; before = 'pyarrow.parquet' in sys.modules; "
        "plate._import_table_writers(); print(before, 'pyarrow.parquet' in sys.modules)"
    )
    assert out.split() == ["False", "True"]


def _thread_caps(_: int) -> tuple[int, list[int], str | None, bool]:
    import numba
    from threadpoolctl import threadpool_info

    warmed_elsewhere = plate._WARM is not None and plate._WARM != os.getpid()  # in the fork server
    return numba.get_num_threads(), sorted({d["num_threads"] for d in threadpool_info()}), os.environ.get(
        "NUMBA_NUM_THREADS"), warmed_elsewhere


def test_local_workers_start_from_a_warm_fork_server_with_one_thread_each(monkeypatch):
    import multiprocessing as mp

    monkeypatch.delenv("FLOWTOOLS_START_METHOD", raising=False)
    if "forkserver" not in mp.get_all_start_methods():
        pytest.skip("this platform has no fork server")
    before = {k: os.environ.get(k) for k in plate._ONE_THREAD_ENV}
    with plate._Executor(2, None) as ex:
        caps = list(ex.map(_thread_caps, [0, 1, 2]))
        assert ex.start_method == ("forkserver" if sys.platform.startswith("linux") else "spawn")
        assert {k: os.environ.get(k) for k in plate._ONE_THREAD_ENV} == before  # this process: unchanged
        assert all(ex.map(_loaded, [0, 1]))
    assert {c[0] for c in caps} == {1}  # numba
    assert {t for c in caps for t in c[1]} == {1}  # BLAS / OpenMP pools
    assert {c[2] for c in caps} == {"1"}
    if ex.start_method == "forkserver":
        assert all(c[3] for c in caps)  # the kernels were loaded once, in the fork server


def test_start_method_can_be_forced_to_spawn(monkeypatch):
    monkeypatch.setenv("FLOWTOOLS_START_METHOD", "spawn")
    assert plate._mp_context().get_start_method() == "spawn"
    with plate._Executor(2, None) as ex:
        ex.warm_up()
        caps = list(ex.map(_thread_caps, [0, 1]))
        assert all(ex.map(_loaded, [0, 1]))
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
            plate._mp_context()


def test_a_fully_cached_run_starts_no_worker(monkeypatch):
    with plate._Executor(2, None) as ex:
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
    monkeypatch.setattr(plate, "_WARM", None)
    plate._warm_worker()
    assert not calls and plate._WARM == os.getpid()
