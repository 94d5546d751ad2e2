"""The worker process of a background job: runs one job of a job store to its end.

    python -m ordercomp.jobs.worker --store .ordercomp/jobs.sqlite --job 3f9a1c0b2d4e

It claims the queued job and runs what its kind names (`kinds.RUNNERS`: an exploration, a baseline
or an export) with the store's shared step cache (so a resumed job gets every finished step back
at once), records each finished step, progress (throttled) and log lines, then the result and
status `done`. An error makes the job `failed` with a one-line message
(the traceback goes to the job's log); a cancel request is noticed from the events callback.
As it ends, the worker starts the next queued jobs (`launch.dispatch`), so the queue moves on
without a scheduler process.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

from ..allocator import keep_freed_memory
from ..errors import one_line
from ..order.plan import chain_text
from .launch import dispatch, worker_limit, worker_threads
from .store import JobStore

PROGRESS_INTERVAL_S = 0.25
CANCEL_CHECK_INTERVAL_S = 0.5


class Cancelled(BaseException):
    """The job was asked to stop. A BaseException, like KeyboardInterrupt (and asyncio's CancelledError): a
    step turns every Exception into a failed result, and a cancel must stop the exploration instead."""


class JobEvents:
    """The Explorer's events callback for one job: stores steps, progress and log lines; stops on cancel.
    Progress is written and a cancel looked for at most once per interval of `clock` (seconds; a test
    passes a clock of its own)."""

    def __init__(self, store: JobStore, job_id: str, clock: Callable[[], float] = time.monotonic):
        self.store, self.job_id, self.clock = store, job_id, clock
        self.last_progress = self.last_cancel_check = float("-inf")

    def __call__(self, event: dict) -> None:
        handlers = {"stage": self.on_stage, "progress": self.on_progress, "step": self.on_step}
        handlers[event["kind"]](event)
        self.check_cancel()

    def on_stage(self, event: dict) -> None:
        self.store.append_log(self.job_id, event["label"])
        self.store.set_progress(self.job_id, event["label"], 0.0)

    def on_progress(self, event: dict) -> None:
        now = self.clock()
        if now - self.last_progress >= PROGRESS_INTERVAL_S:
            self.last_progress = now
            self.store.set_progress(self.job_id, event["label"], event["fraction"])

    def on_step(self, event: dict) -> None:
        step = event["result"]
        if event.get("split", "val") == "val":  # the chain applied on the test split is no pair's evidence
            self.store.record_step(self.job_id, step)
        self.store.set_progress(self.job_id, chain_text(step["chain"]), 1.0, event["done"], event["total"])
        self.store.append_log(self.job_id, describe_step(step) + (" (from the cache)" if event.get("cached") else ""))

    def check_cancel(self) -> None:
        now = self.clock()
        if now - self.last_cancel_check < CANCEL_CHECK_INTERVAL_S:
            return
        self.last_cancel_check = now
        if self.store.require(self.job_id)["status"] == "cancelling":
            raise Cancelled


def describe_step(step: dict) -> str:
    outcome = f"{step['status']} in {step['seconds']:.1f} s"
    if step["reason"]:
        outcome += f": {step['reason']}"
    return f"{chain_text(step['chain'])} (seed {step['seed']}): {outcome}"


def run_job(store: JobStore, job_id: str) -> str:
    """Run a queued job in this process and return the status it ended with."""
    if not store.set_status(job_id, "running", pid=os.getpid(), expect=("queued",)):
        return settle_unclaimed(store, job_id)
    store.append_log(job_id, f"worker {os.getpid()} started")
    # Each final log line is written before the final status: whoever sees the status finds its line.
    start = time.perf_counter()
    try:
        from .kinds import RUNNERS, check_served  # torch and the engine: a failed import fails the job with its reason

        job = store.require(job_id)
        check_served(store, job["spec"])
        result, summary = RUNNERS[job["kind"]](store, job_id, job["spec"], JobEvents(store, job_id))
        store.append_log(job_id, f"done in {time.perf_counter() - start:.1f} s: {summary}")
        store.set_status(job_id, "done", result=result)
    except Cancelled:
        store.append_log(job_id, "cancelled on request")
        store.set_status(job_id, "cancelled")
        return "cancelled"
    except Exception as error:  # whatever stops the exploration must end the job as failed, not leave it running
        store.append_log(job_id, traceback.format_exc())
        store.set_status(job_id, "failed", error=one_line(error))
        return "failed"
    return "done"


def settle_unclaimed(store: JobStore, job_id: str) -> str:
    """A job this worker could not claim: cancelled while queued, or not queued at all."""
    status = store.require(job_id)["status"]
    if status == "cancelling":
        store.append_log(job_id, "cancelled before it started")
        store.set_status(job_id, "cancelled", expect=("cancelling",))
        return "cancelled"
    if status == "cancelled":  # cancelled while it waited, just as this worker was spawned
        return "cancelled"
    raise ValueError(f"job {job_id} is {status}, not queued: resume a failed or cancelled job instead of running it")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ordercomp.jobs.worker", description="Run one queued job (explore, baseline or export).")
    parser.add_argument("--store", required=True, help="path of the job store (SQLite file)")
    parser.add_argument("--job", required=True, help="id of the queued job to run")
    args = parser.parse_args(argv)
    if not Path(args.store).is_file():
        parser.error(f"no job store at {args.store}: give the --store path the job was created in")
    store = JobStore(args.store)
    try:
        _share_cores(store)
        keep_freed_memory()
        status = run_job(store, args.job)
    except ValueError as error:
        parser.error(str(error))
    finally:
        dispatch(store)  # this worker's slot is free: start the next queued job
    return 1 if status == "failed" else 0


def _share_cores(store: JobStore) -> None:
    """Take this worker's share of the cores, so the workers running at once do not crowd each other."""
    import torch

    torch.set_num_threads(worker_threads(worker_limit(store)[0]))


if __name__ == "__main__":
    sys.exit(main())
