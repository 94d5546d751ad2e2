"""Start, queue, resume and watch the worker processes of background jobs.

A worker is a separate process in its own session, so it outlives the Streamlit script run (and
the browser tab) that started it; its output goes to `workers/<job id>.log` next to the store.

At most `worker_limit` workers run at once; further jobs wait `queued` (without a pid) and start,
oldest first, as slots free. There is no scheduler process: `dispatch` fills free slots and is
called by whoever may free or fill one: a launch, a resume, a worker as it ends, a page that shows
jobs. A worker that dies without a word (killed, out of memory, machine restarted) leaves its job
active: `refresh_stale` (the first thing `dispatch` does) finds those by their pid, marks them failed
(cancelled if a cancel was pending), and so frees their slot.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..waiting import spin_briefly
from .store import ACTIVE, JobStore

WORKER_MODULE = "ordercomp.jobs.worker"
STALE_REASON = "worker stopped (killed or crashed): resume to continue"
MAX_WORKERS_ENV = "ORDERCOMP_MAX_WORKERS"
MAX_WORKERS_SETTING = "max_workers"
KERNEL_THREADS_PARENT = "2"  # kthreadd's pid: a recycled pid that now names a kernel thread runs no worker


def start_job(store: JobStore, spec, kind: str = "explore") -> str:
    """Queue a job of `kind` for `spec` (an ExploreSpec, BaselineSpec or ExportSpec) and start it if a slot is free; returns the job id."""
    job_id = store.create(spec, kind)
    dispatch(store)
    return job_id


def resume_job(store: JobStore, job_id: str) -> None:
    """Queue a failed, cancelled or killed job again; the steps it finished come back from the cache."""
    refresh_stale(store)
    store.requeue(job_id)
    store.append_log(job_id, "resumed: finished steps come from the cache")
    dispatch(store)


def cancel_job(store: JobStore, job_id: str) -> str:
    """Cancel a job: at once while it waits in the queue, otherwise through its worker (or at once
    when that worker is gone). Returns the job's status."""
    store.request_cancel(job_id)
    refresh_stale(store)
    return store.require(job_id)["status"]


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call on this platform
        return os.cpu_count() or 1


def default_worker_limit() -> int:
    """Half the cores, at least one: a training worker keeps about two cores busy (torch's threads
    and moving batches), and the dashboard's server needs some too; more workers than that only
    make every job slower. Each worker takes cores // limit threads (`worker_threads`)."""
    return max(1, cores() // 2)


def worker_limit(store: JobStore) -> tuple[int, str]:
    """How many workers may run at once, and where that number comes from: the store's
    `max_workers` setting, else $ORDERCOMP_MAX_WORKERS, else `default_worker_limit()`."""
    for value, source in ((store.setting(MAX_WORKERS_SETTING), "the job store's setting"),
                          (os.environ.get(MAX_WORKERS_ENV), f"${MAX_WORKERS_ENV}")):
        if value not in (None, ""):
            return parse_worker_limit(value, source), source
    return default_worker_limit(), f"half of the {cores()} CPU cores"


def parse_worker_limit(value, source: str = "the worker limit") -> int:
    try:
        limit = int(str(value).strip())
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{source} must be a whole number of workers >= 1, got {value!r}")
    return limit


def set_worker_limit(store: JobStore, limit: int | None) -> None:
    """Set how many workers may run at once for every process using this store (None: the default)."""
    store.set_setting(MAX_WORKERS_SETTING, None if limit is None else str(parse_worker_limit(limit)))
    dispatch(store)


def worker_threads(limit: int) -> int:
    """Torch threads per worker, so that `limit` workers together use the cores without crowding them."""
    return max(1, cores() // limit)


def holds_slot(job: dict) -> bool:
    """A job whose worker was started (it may not have claimed the job yet) and has not ended."""
    return job["status"] in ("running", "cancelling") or (job["status"] == "queued" and job["pid"] is not None)


def waiting_jobs(jobs: list[dict]) -> list[dict]:
    """Queued jobs without a worker, in the order they start: longest waiting first."""
    return sorted((job for job in jobs if job["status"] == "queued" and job["pid"] is None),
                  key=lambda job: (job["updated"], job["created"]))


def queue_positions(jobs: list[dict]) -> dict[str, int]:
    """Job id -> place in the queue (1: starts next) of every waiting job."""
    return {job["id"]: place for place, job in enumerate(waiting_jobs(jobs), start=1)}


def dispatch(store: JobStore) -> list[str]:
    """Start workers for waiting jobs while fewer than `worker_limit` hold a slot; returns the ids started.

    A file lock next to the store keeps two processes from filling the same slot; the lock goes
    with the process that holds it, so a crash here blocks nobody."""
    with _queue_lock(store):
        refresh_stale(store)
        jobs = store.list_jobs()
        free = worker_limit(store)[0] - sum(holds_slot(job) for job in jobs)
        return [job["id"] for job in waiting_jobs(jobs)[:max(free, 0)] if _start_worker(store, job["id"])]


@contextmanager
def _queue_lock(store: JobStore) -> Iterator[None]:
    with open(store.path.with_name(store.path.name + ".queue-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _start_worker(store: JobStore, job_id: str) -> bool:
    """Spawn the worker of a waiting job and record its pid; a worker that cannot start fails its job with the reason."""
    try:
        pid = spawn_worker(store, job_id)
    except OSError as error:
        reason = f"its worker could not start: {error}"
        store.append_log(job_id, reason)
        store.set_status(job_id, "failed", error=reason, expect=("queued",))
        return False
    # Recorded before the worker claims the job, so a worker that dies while starting is found too.
    store.set_status(job_id, "queued", pid=pid, expect=("queued",))
    return True


def worker_log_path(store: JobStore, job_id: str) -> Path:
    return store.path.parent / "workers" / f"{job_id}.log"


def worker_command(store: JobStore, job_id: str) -> list[str]:
    return [sys.executable, "-m", WORKER_MODULE, "--store", str(store.path), "--job", job_id]


def spawn_worker(store: JobStore, job_id: str) -> int:
    """Start a worker process for a queued job; returns its pid."""
    store.require(job_id)
    log_path = worker_log_path(store, job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as output:
        process = subprocess.Popen(worker_command(store, job_id), stdin=subprocess.DEVNULL, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=spin_briefly(dict(os.environ)))
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
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes()
        if arguments:
            return WORKER_MODULE.encode() in arguments
        # No arguments to read: a process still inside exec (Popen returns before the kernel has set the new
        # program's arguments: a quarter of immediate reads here), one that is exiting, or a kernel thread.
        state, parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:2]
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except PermissionError:
        return True
    except ProcessLookupError:  # gone while we read
        return False
    return state not in ("Z", "X") and parent != KERNEL_THREADS_PARENT


def refresh_stale(store: JobStore) -> list[str]:
    """End active jobs whose worker is gone: failed with the reason, or cancelled if a cancel was
    pending; returns their ids. Queued jobs that never got a worker are waiting, not stale."""
    stale = []
    for job in store.list_jobs():
        if job["status"] not in ACTIVE or (job["pid"] is None and job["status"] == "queued") or is_alive(job):
            continue
        status, error = _stale_ending(store, job)
        if store.set_status(job["id"], status, error=error, expect=(job["status"],)):
            store.append_log(job["id"], "cancelled: its worker had already stopped" if status == "cancelled" else error)
            stale.append(job["id"])
    return stale


def _stale_ending(store: JobStore, job: dict) -> tuple[str, str | None]:
    if job["status"] == "cancelling":
        return "cancelled", None
    if job["status"] == "queued":  # its worker died before it claimed the job
        return "failed", f"its worker stopped before it started the job: {_last_line(worker_log_path(store, job['id']))}"
    return "failed", STALE_REASON


def _last_line(path: Path) -> str:
    """The last non-empty line a worker wrote (the error that stopped it), or a note that there is none."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return lines[-1][:300] if lines else f"it wrote nothing (see {path})"
