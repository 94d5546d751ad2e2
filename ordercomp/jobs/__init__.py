"""Background jobs: a SQLite job store and worker processes that survive page reloads.

    store = JobStore()                      # .ordercomp/jobs.sqlite, or $ORDERCOMP_STORE
    job_id = start_job(store, ExploreSpec(model="cnn_tiny", methods=("prune", "quantize")))
    store.get(job_id)["status"]             # queued, running, cancelling, cancelled, failed, done
    store.request_cancel(job_id); resume_job(store, job_id)
    start_job(store, BaselineSpec(model="cnn_tiny"), kind="baseline")    # train/measure a base
    start_job(store, ExportSpec(model="digits_cnn", data="digits", chain=("prune", "quantize")), kind="export")

The worker itself (`ordercomp.jobs.worker`) imports torch; this package does not, so pages that
only list jobs stay fast.
"""
from .launch import STALE_REASON, is_alive, refresh_stale, resume_job, spawn_worker, start_job, worker_log_path
from .specs import BaselineSpec, ExportSpec
from .store import ACTIVE, KINDS, STATUSES, JobStore, default_path

__all__ = [
    "ACTIVE",
    "KINDS",
    "STALE_REASON",
    "STATUSES",
    "BaselineSpec",
    "ExportSpec",
    "JobStore",
    "default_path",
    "is_alive",
    "refresh_stale",
    "resume_job",
    "spawn_worker",
    "start_job",
    "worker_log_path",
]
