"""The local worker pool: results come back, failures and hangs become reasons, workers are reused."""

import os
import subprocess
import sys

import pytest

from effnas.nas.search.backends.local import WorkerPool

TASK = "tests.workers_tasks:behave"


def collect_all(pool, count, poll=0.2):
    results = []
    while len(results) < count:
        results.extend(pool.collect(poll=poll))
    return {r.key: r for r in results}


def test_results_failures_and_reuse():
    with WorkerPool(2, function=TASK) as pool:
        pool.submit("a", {"action": "ok", "value": 21}, {}, 0)
        pool.submit("b", {"action": "raise"}, {}, 0)
        results = collect_all(pool, 2)
        assert results["a"].metrics["value"] == 42 and results["a"].error is None
        assert results["b"].metrics is None and "RuntimeError: candidate exploded" in results["b"].error
        first_pid = results["a"].metrics["pid"]
        # A TrialError's message is already the reason, in the user's words: no "TrialError: " before it.
        pool.submit("e", {"action": "diverge"}, {}, 0)
        assert collect_all(pool, 1)["e"].error == "diverged: training loss is NaN at epoch 1"
        # A worker survives a candidate's exception and serves the next task (its warm state is kept).
        pool.submit("c", {"action": "ok"}, {}, 0)
        pool.submit("d", {"action": "ok"}, {}, 0)
        pids = {r.metrics["pid"] for r in collect_all(pool, 2).values()}
        assert first_pid in pids


def test_timeout_and_death_are_reported_and_workers_replaced():
    with WorkerPool(2, timeout=3.0, function=TASK) as pool:
        pool.submit("hang", {"action": "hang"}, {}, 0)
        pool.submit("die", {"action": "die"}, {}, 0)
        results = collect_all(pool, 2)
        assert "time limit of 3 s" in results["hang"].error
        assert "worker process died (exit code 3" in results["die"].error
        assert pool.idle == 2
        pool.submit("after", {"action": "ok", "value": 1}, {}, 0)
        assert collect_all(pool, 1)["after"].metrics["value"] == 2


def test_a_trial_that_ends_over_its_limit_between_two_looks_at_the_clock_fails_all_the_same():
    """The pool looks at the clock when it polls; a task whose result arrives while the pool waits (here a poll of
    10 s) has overrun its 0.2 s even so, and the worker that ran it serves the next task."""
    with WorkerPool(1, timeout=0.2, function=TASK) as pool:
        pool.submit("slow", {"action": "sleep", "seconds": 0.6}, {}, 0)
        found: dict = {}
        while not found:
            found = {result.key: result for result in pool.collect(poll=10.0)}
        assert found["slow"].metrics is None and "time limit of 0.2 s" in found["slow"].error
        pool.submit("quick", {"action": "ok"}, {}, 0)
        quick = collect_all(pool, 1)["quick"]
        assert quick.error is None


def test_workers_of_every_pool_fork_from_one_server_and_work_in_the_callers_folder(tmp_path, monkeypatch):
    """The server that has imported torch outlives a pool, so the next pool's workers (and replacements) start
    from it without importing anything again; each worker still works in the folder its pool was made in."""
    with WorkerPool(1, function=TASK) as pool:
        pool.submit("first", {"action": "where"}, {}, 0)
        first = collect_all(pool, 1)["first"].metrics
    monkeypatch.chdir(tmp_path)
    with WorkerPool(1, function=TASK) as pool:
        pool.submit("second", {"action": "where"}, {}, 0)
        second = collect_all(pool, 1)["second"].metrics
    assert first["pid"] != second["pid"] and first["parent"] == second["parent"] != os.getpid()
    assert second["cwd"] == str(tmp_path)


@pytest.mark.slow  # a server importing torch
def test_the_server_can_start_before_any_pool_and_pays_the_imports_in_its_own_process():
    """A search starts the server first, so its imports run beside the search's own start-up: before any pool, a
    child of the caller runs the server and loads torch, and the caller itself has not imported torch. The child
    is looked for until it has loaded torch, as a process caught between fork and exec shows no command line."""
    script = ("import os, sys, time\n"
              "from effnas.nas.search.backends.local import start_worker_server\n"
              "start_worker_server()\n"
              "def server_with_torch():\n"
              "    for child in open(f'/proc/{os.getpid()}/task/{os.getpid()}/children').read().split():\n"
              "        try:\n"
              "            command, maps = open(f'/proc/{child}/cmdline').read(), open(f'/proc/{child}/maps').read()\n"
              "        except OSError:\n"
              "            continue\n"
              "        if 'multiprocessing.' + 'forkserver' in command and 'libtorch' in maps:\n"
              "            return True\n"
              "    return False\n"
              "deadline = time.monotonic() + 90\n"
              "while not server_with_torch() and time.monotonic() < deadline:\n"
              "    time.sleep(0.2)\n"
              "print(server_with_torch(), 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "False"]


def test_memory_limit_fails_the_big_task_and_the_worker_serves_the_next():
    with WorkerPool(1, function="tests.workers_tasks:allocate", memory_gib=0.5) as pool:
        pool.submit("small", {"gib": 0.1}, {}, 0)
        small = collect_all(pool, 1)["small"]
        assert small.error is None, small.error
        pool.submit("big", {"gib": 2.0}, {}, 0)
        big = collect_all(pool, 1)["big"]
        assert big.metrics is None and "can't allocate memory" in big.error, big.error
        pool.submit("after", {"gib": 0.1}, {}, 0)
        after = collect_all(pool, 1)["after"]
        assert after.error is None and after.metrics["pid"] == small.metrics["pid"]  # same worker, not replaced


def test_without_a_memory_limit_the_same_task_runs():
    with WorkerPool(1, function="tests.workers_tasks:allocate") as pool:
        pool.submit("big", {"gib": 2.0}, {}, 0)
        assert collect_all(pool, 1)["big"].error is None


def test_a_queued_task_waits_behind_the_running_one_and_survives_its_death():
    with WorkerPool(1, timeout=3.0, function=TASK, depth=2) as pool:
        pool.submit("first", {"action": "ok", "value": 1}, {}, 0)
        pool.submit("second", {"action": "ok", "value": 2}, {}, 0)
        assert pool.free == 0 and pool.idle == 0
        results = collect_all(pool, 2)
        first_pid = results["first"].metrics["pid"]
        assert results["second"].metrics["pid"] == first_pid  # one worker, back to back
        pool.submit("die", {"action": "die"}, {}, 0)
        pool.submit("queued", {"action": "ok", "value": 5}, {}, 0)
        results = collect_all(pool, 2)
        assert "worker process died" in results["die"].error
        assert results["queued"].metrics["value"] == 10  # re-sent to the replacement worker, and run there
        assert results["queued"].metrics["pid"] != first_pid
        assert pool.idle == 1 and pool.free == 2


def test_default_threads_stay_within_what_the_user_set(monkeypatch):
    """A search worker's and a training run's default threads: the machine's share, never above OMP_NUM_THREADS."""
    from effnas.nas.search.backends.local import default_threads
    from effnas.nas.training import engine

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(engine, "busy_cores", lambda: 0.0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert (default_threads(1), default_threads(2), engine.default_threads()) == (8, 4, 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert (default_threads(1), default_threads(8), engine.default_threads()) == (2, 1, 2)
