"""Start, resume and watch the worker processes of background jobs.

A worker is a separate process in its own session, so it outlives the Streamlit script run (and
the browser tab) that started it; its output goes to `workers/<job id>.log` next to the store.
A worker that dies without a word (killed, out of memory, machine restarted) leaves its job
`running`: `refresh_stale` finds those by their pid and marks them failed, ready to resume.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .store import ACTIVE, JobStore

WORKER_MODULE = "ordercomp.jobs.worker"
STALE_REASON = "worker stopped (killed or crashed): resume to continue"


def start_job(store: JobStore, spec, kind: str = "explore") -> str:
    """Queue a job of `kind` for `spec` (an ExploreSpec, BaselineSpec or ExportSpec) and start its worker; returns the job id."""
    job_id = store.create(spec, kind)
    spawn_worker(store, job_id)
    return job_id


def resume_job(store: JobStore, job_id: str) -> None:
    """Run a failed, cancelled or killed job again; the steps it finished come back from the cache."""
    refresh_stale(store)
    store.requeue(job_id)
    store.append_log(job_id, "resumed: finished steps come from the cache")
    spawn_worker(store, job_id)


def worker_log_path(store: JobStore, job_id: str) -> Path:
    return store.path.parent / "workers" / f"{job_id}.log"


def spawn_worker(store: JobStore, job_id: str) -> int:
    """Start a worker process for a queued job and record its pid; returns the pid."""
    store.require(job_id)
    log_path = worker_log_path(store, job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", WORKER_MODULE, "--store", str(store.path), "--job", job_id]
    with open(log_path, "ab") as output:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # Recorded before the worker claims the job, so a worker that dies while starting is found too.
    store.set_status(job_id, "queued", pid=process.pid, expect=("queued",))
    return process.pid


def is_alive(job: dict) -> bool:
    """Whether the worker process recorded for `job` is still running."""
    pid = job.get("pid")
    return pid is not None and _process_exists(pid) and _runs_worker(pid)


def _process_exists(pid: int) -> bool:
    try:
        # A worker this process spawned stays a zombie (still found by os.kill) until it is reaped.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _runs_worker(pid: int) -> bool:
    """False when the pid now belongs to another program; trusted as is where there is no /proc."""
    try:
        return WORKER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except PermissionError:
        return True


def refresh_stale(store: JobStore) -> list[str]:
    """Mark active jobs whose worker is gone as failed (cancelled if a cancel was pending); returns their ids."""
    stale = []
    for job in store.list_jobs():
        if job["status"] not in ACTIVE or job["pid"] is None or is_alive(job):
            continue
        cancelling = job["status"] == "cancelling"
        status, error = ("cancelled", None) if cancelling else ("failed", STALE_REASON)
        if store.set_status(job["id"], status, error=error, expect=(job["status"],)):
            store.append_log(job["id"], "cancelled: its worker had already stopped" if cancelling else STALE_REASON)
            stale.append(job["id"])
    return stale
