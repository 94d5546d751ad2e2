"""The job queue: at most `worker_limit` workers at once, waiting jobs start as slots free, workers
that cannot start fail their job with the reason, and cancel always ends."""
import os
import signal
import sys

import pytest

from ordercomp.jobs import (cancel_job, dispatch, is_alive, launch, queue_positions, refresh_stale, set_worker_limit, start_job,
                            worker_limit)
from ordercomp.jobs.launch import MAX_WORKERS_ENV, WORKER_MODULE, default_worker_limit, holds_slot
from testkit import WORKER_S

FINAL = ("done", "failed", "cancelled")


def kill_worker(store, job_id):
    os.kill(store.get(job_id)["pid"], signal.SIGKILL)


def busy(store):
    return sum(holds_slot(job) for job in store.list_jobs())


def test_the_limit_comes_from_the_store_then_the_environment_then_the_cores(store, monkeypatch):
    monkeypatch.delenv(MAX_WORKERS_ENV, raising=False)
    assert worker_limit(store) == (default_worker_limit(), f"half of the {launch.cores()} CPU cores")
    assert default_worker_limit() == max(1, launch.cores() // 2)
    monkeypatch.setenv(MAX_WORKERS_ENV, "3")
    assert worker_limit(store) == (3, f"${MAX_WORKERS_ENV}")
    set_worker_limit(store, 2)
    assert worker_limit(store) == (2, "the job store's setting")
    set_worker_limit(store, None)
    for bad in ("0", "two", "1.5", "nan"):
        monkeypatch.setenv(MAX_WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=rf"^\${MAX_WORKERS_ENV} must be a whole number of workers >= 1, got '{bad}'$"):
            worker_limit(store)
    with pytest.raises(ValueError, match="must be a whole number of workers >= 1, got -1"):
        set_worker_limit(store, -1)


def test_waiting_jobs_start_in_order_as_slots_free(store, tiny_spec, fake_workers, wait_for):
    set_worker_limit(store, 2)
    jobs = [start_job(store, tiny_spec()) for _ in range(4)]
    assert fake_workers == jobs[:2] and busy(store) == 2
    assert queue_positions(store.list_jobs()) == {jobs[2]: 1, jobs[3]: 2}
    assert dispatch(store) == []  # no slot is free: nothing more starts
    kill_worker(store, jobs[0])  # a worker dies: its slot frees when anyone next dispatches
    wait_for(lambda: not is_alive(store.get(jobs[0])), "the killed worker to be gone", timeout=WORKER_S)
    assert dispatch(store) == [jobs[2]]
    assert store.get(jobs[0])["status"] == "failed" and busy(store) == 2
    assert queue_positions(store.list_jobs()) == {jobs[3]: 1}


def test_a_worker_that_cannot_be_spawned_fails_its_job_with_the_reason(store, tiny_spec, monkeypatch):
    monkeypatch.setattr(launch, "worker_command", lambda store, job_id: ["/nonexistent/python", "-m", WORKER_MODULE])
    job_id = start_job(store, tiny_spec())
    job = store.get(job_id)
    assert job["status"] == "failed" and job["error"].startswith("its worker could not start: [Errno 2] No such file")
    assert store.log(job_id)[-1]["message"] == job["error"]


def test_a_worker_that_dies_while_starting_fails_its_job_with_its_last_words(store, tiny_spec, monkeypatch, wait_for):
    dying = [sys.executable, "-c", "import sys; sys.exit('ImportError: libtorch.so: cannot open shared object file')", WORKER_MODULE]
    monkeypatch.setattr(launch, "worker_command", lambda store, job_id: dying)
    job_id = start_job(store, tiny_spec())
    assert store.get(job_id)["pid"] is not None
    wait_for(lambda: not is_alive(store.get(job_id)), "the worker to die", timeout=WORKER_S)
    assert refresh_stale(store) == [job_id]
    job = store.get(job_id)
    assert job["status"] == "failed"
    assert job["error"] == "its worker stopped before it started the job: ImportError: libtorch.so: cannot open shared object file"


def test_cancel_always_ends(store, tiny_spec, fake_workers, wait_for):
    set_worker_limit(store, 1)
    running, waiting = start_job(store, tiny_spec()), start_job(store, tiny_spec())
    assert cancel_job(store, waiting) == "cancelled"  # waiting in the queue: at once
    assert cancel_job(store, running) == "cancelling"  # its worker is alive: it stops the job
    kill_worker(store, running)
    wait_for(lambda: not is_alive(store.get(running)), "the killed worker to be gone", timeout=WORKER_S)
    assert refresh_stale(store) == [running] and store.get(running)["status"] == "cancelled"
    gone = start_job(store, tiny_spec())
    kill_worker(store, gone)
    wait_for(lambda: not is_alive(store.get(gone)), "the killed worker to be gone", timeout=WORKER_S)
    assert cancel_job(store, gone) == "cancelled"  # a 'cancelling' job whose worker is gone ends at once


@pytest.mark.timeout(3 * WORKER_S)
def test_real_workers_never_exceed_the_limit_and_start_each_other(store, tiny_spec, wait_for):
    """Two jobs at once with a limit of one: the first worker, as it ends, starts the next (nobody else dispatches)."""
    set_worker_limit(store, 1)
    jobs = [start_job(store, tiny_spec(methods)) for methods in (("prune", "quantize"), ("quantize", "sparsify"))]
    most = 0

    def all_ended():
        nonlocal most
        most = max(most, busy(store))
        return all(store.get(job_id)["status"] in FINAL for job_id in jobs)

    wait_for(all_ended, "two queued jobs to finish one after another", timeout=2 * WORKER_S, interval=0.05)
    assert [store.get(job_id)["status"] for job_id in jobs] == ["done"] * 2, [store.log(job_id) for job_id in jobs]
    assert most == 1
    starts = [store.log(job_id)[0]["time"] for job_id in jobs]
    ends = [store.log(job_id)[-1]["time"] for job_id in jobs]
    assert starts[1] >= ends[0]
