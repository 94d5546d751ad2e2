"""Background jobs: a SQLite job store and worker processes that survive page reloads.

    store = JobStore()                      # .ordercomp/jobs.sqlite, or $ORDERCOMP_STORE
    job_id = start_job(store, ExploreSpec(model="cnn_tiny", methods=("prune", "quantize")))
    store.get(job_id)["status"]             # queued, running, cancelling, cancelled, failed, done
    cancel_job(store, job_id); resume_job(store, job_id)
    start_job(store, BaselineSpec(model="cnn_tiny"), kind="baseline")    # train/measure a base
    start_job(store, ExportSpec(model="digits_cnn", data="digits", chain=("prune", "quantize")), kind="export")

At most `worker_limit(store)` workers run at once (the store's `max_workers` setting, else
$ORDERCOMP_MAX_WORKERS, else half the cores); further jobs wait queued and start as slots free.

The worker itself (`ordercomp.jobs.worker`) imports torch; this package does not, so pages that
only list jobs stay fast.
"""
from .launch import (STALE_REASON, cancel_job, dispatch, is_alive, queue_positions, refresh_stale, resume_job, set_worker_limit,
                     spawn_worker, start_job, worker_limit, worker_log_path)
from .specs import BaselineSpec, ExportSpec
from .store import ACTIVE, KINDS, STATUSES, JobStore, StoreError, default_path

__all__ = [
    "ACTIVE",
    "KINDS",
    "STALE_REASON",
    "STATUSES",
    "BaselineSpec",
    "ExportSpec",
    "JobStore",
    "StoreError",
    "cancel_job",
    "default_path",
    "dispatch",
    "is_alive",
    "queue_positions",
    "refresh_stale",
    "resume_job",
    "set_worker_limit",
    "spawn_worker",
    "start_job",
    "worker_limit",
    "worker_log_path",
]
