"""Tests with real worker processes: finishing, killing and resuming, cancelling, stale detection."""
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest

from ordercomp.jobs import BaselineSpec, STALE_REASON, is_alive, launch, refresh_stale, resume_job, set_worker_limit, start_job, worker_log_path
from ordercomp.waiting import SPIN_COUNT
from testkit import WORKER_S

FINAL = ("done", "failed", "cancelled")

# A real worker that stops itself (SIGSTOP) right after it recorded its first step, so a test can kill
# it at a known point instead of racing the steps that follow.
STOPS_AFTER_ONE_STEP = """
import os, signal, sys
import ordercomp.jobs.worker as worker
record = worker.JobEvents.on_step
def on_step(self, event):
    record(self, event)
    os.kill(os.getpid(), signal.SIGSTOP)
worker.JobEvents.on_step = on_step
sys.exit(worker.main(sys.argv[1:]))
"""


def final_status(store, job_id):
    status = store.get(job_id)["status"]
    return status if status in FINAL else None


def stopped(pid: int) -> bool:
    """Whether the process is stopped by a signal (state T in /proc); a process that ended fails the test."""
    with open(f"/proc/{pid}/stat") as stat:
        state = stat.read().rpartition(")")[2].split()[0]
    assert state not in ("Z", "X"), f"worker {pid} ended instead of stopping after its first step"
    return state == "T"


def ended_process():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.timeout(2 * WORKER_S)
def test_two_jobs_started_at_once_both_finish(store, tiny_spec, wait_for):
    set_worker_limit(store, 2)
    specs = [tiny_spec(("prune", "quantize")), tiny_spec(("quantize", "sparsify"))]
    job_ids = [start_job(store, spec) for spec in specs]
    for job_id in job_ids:
        wait_for(lambda: final_status(store, job_id), f"job {job_id} to end", timeout=WORKER_S)
    jobs = [store.get(job_id) for job_id in job_ids]
    for job, spec in zip(jobs, specs):
        # 4 steps of the pairwise plan and the chain's 2 on the test split, against the total planned at the start
        assert (job["status"], job["error"], job["done"], job["total"]) == ("done", None, 6, 6), store.log(job["id"])
        assert sorted(job["result"]["chain"]) == sorted(spec.methods)
        assert job["result"]["spec"] == spec.to_dict()
        assert len(store.steps(job["id"])) == 4
        # every step row is the result's step: the same chain, seed, status and figures
        rows = {(tuple(row["chain"]), row["seed"]): (row["status"], row["metrics"]) for row in store.steps(job["id"])}
        assert rows == {(tuple(step["chain"]), step["seed"]): (step["status"], step["metrics"]) for step in job["result"]["steps"]}
        assert {status for status, _ in rows.values()} == {"ok"}
        assert any(line["message"].startswith("done in") for line in store.log(job["id"]))
        assert worker_log_path(store, job["id"]).is_file()
    assert jobs[0]["pid"] != jobs[1]["pid"]


@pytest.mark.timeout(2 * WORKER_S)
def test_a_killed_job_is_marked_stale_and_resumes_without_recomputing(store, tiny_spec, wait_for, monkeypatch):
    real_command = launch.worker_command
    monkeypatch.setattr(launch, "worker_command", lambda store, job_id: [sys.executable, "-c", STOPS_AFTER_ONE_STEP,
                                                                          *real_command(store, job_id)[3:]])
    job_id = start_job(store, tiny_spec(("prune", "quantize")))
    pid = store.get(job_id)["pid"]
    wait_for(lambda: stopped(pid), "the worker to stop after its first step", timeout=WORKER_S)
    monkeypatch.setattr(launch, "worker_command", real_command)  # the resumed job runs in a plain worker
    before = {(tuple(row["chain"]), row["seed"]): row["seconds"] for row in store.steps(job_id)}
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(store.get(job_id)), "the killed worker to be gone", timeout=60)
    assert store.get(job_id)["status"] == "running" and len(before) == 1

    assert refresh_stale(store) == [job_id]
    assert (store.get(job_id)["status"], store.get(job_id)["error"]) == ("failed", STALE_REASON)
    resume_job(store, job_id)
    assert wait_for(lambda: final_status(store, job_id), "the resumed job to end", timeout=WORKER_S) == "done"

    job, rows = store.get(job_id), store.steps(job_id)
    assert (job["done"], job["total"], len(rows)) == (6, 6, 4)
    assert len({(tuple(row["chain"]), row["seed"]) for row in rows}) == 4
    after = {(tuple(row["chain"]), row["seed"]): row["seconds"] for row in rows}
    assert all(after[key] == seconds for key, seconds in before.items())
    assert job["result"]["applications"]["cache_hits"] >= len(before)
    assert any(line["message"].startswith("resumed") for line in store.log(job_id))


@pytest.mark.timeout(2 * WORKER_S)
def test_cancel_stops_a_running_job(store, tiny_spec, wait_for):
    job_id = start_job(store, tiny_spec(("prune", "quantize", "sparsify"), epochs=3.0, seeds=3))
    wait_for(lambda: store.steps(job_id), "the first step row", timeout=WORKER_S)
    store.request_cancel(job_id)
    assert wait_for(lambda: final_status(store, job_id), "the job to stop", timeout=120) == "cancelled"
    job = store.get(job_id)
    assert job["result"] is None and len(store.steps(job_id)) < 27
    assert store.log(job_id)[-1]["message"] == "cancelled on request"
    wait_for(lambda: not is_alive(job), "the worker to exit", timeout=60)


def test_refresh_stale_marks_jobs_whose_worker_is_gone(store, tiny_spec):
    running, cancelling, waiting = (store.create(tiny_spec()) for _ in range(3))
    store.set_status(running, "running", pid=ended_process())
    store.set_status(cancelling, "cancelling", pid=ended_process())
    assert sorted(refresh_stale(store)) == sorted([running, cancelling])
    assert (store.get(running)["status"], store.get(running)["error"]) == ("failed", STALE_REASON)
    assert store.get(cancelling)["status"] == "cancelled"
    assert store.get(waiting)["status"] == "queued"


def test_is_alive_requires_a_running_worker_process():
    impostor = subprocess.Popen([sys.executable, "-c", "import time; print(1, flush=True); time.sleep(60)", "ordercomp.jobs.worker"],
                                stdout=subprocess.PIPE, text=True)
    try:
        impostor.stdout.readline()  # it has exec'd: its command line is the one to check
        assert is_alive({"pid": impostor.pid})
        assert not is_alive({"pid": os.getpid()})
        assert not is_alive({"pid": None})
    finally:
        impostor.kill()
        impostor.wait()
    assert not is_alive({"pid": impostor.pid})


def test_only_failed_or_cancelled_jobs_resume(store, tiny_spec):
    job_id = store.create(tiny_spec())
    store.set_status(job_id, "done", result={})
    with pytest.raises(ValueError, match="is done: only failed or cancelled jobs can be resumed"):
        resume_job(store, job_id)
    with pytest.raises(ValueError, match="unknown job"):
        resume_job(store, "0123abcd")


def test_a_worker_starts_with_openmp_spinning_briefly_unless_the_environment_says_otherwise(store, tiny_checkpoint, monkeypatch):
    """Beside a busy process, a small exploration took up to 2.2 times as long with libgomp's default spinning as with
    brief spinning (ordercomp/waiting.py)."""
    started = []
    monkeypatch.setattr(launch.subprocess, "Popen", lambda command, **options: started.append(options["env"]) or SimpleNamespace(pid=1))
    spec = BaselineSpec(model=str(tiny_checkpoint), data="digits", architecture="cnn_tiny", device="cpu")
    for variable in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(variable, raising=False)
    launch.spawn_worker(store, store.create(spec, "baseline"))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # the user's (and this suite's) choice
    launch.spawn_worker(store, store.create(spec, "baseline"))
    assert started[0]["GOMP_SPINCOUNT"] == SPIN_COUNT and "OMP_WAIT_POLICY" not in started[0]
    assert started[1]["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in started[1]
    assert "GOMP_SPINCOUNT" not in os.environ  # the dashboard's own process is left as it is
