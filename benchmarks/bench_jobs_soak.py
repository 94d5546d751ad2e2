"""Soak test of the job queue: many explorations launched at once, one worker killed mid-run.

    python benchmarks/bench_jobs_soak.py [--jobs 10] [--workers 2] [--store DIR]

Launches `--jobs` small explorations at once (digits_cnn on digits, prune + quantize, 1 seed,
1 fine-tuning epoch; each with its own prune ratio, so each has work of its own) on a fresh job
store with a limit of `--workers` workers. While they run it samples, every 50 ms, how many jobs
hold a worker slot (running, or started and not yet running), and watches like an open Runs page
would (a `dispatch` every 1.5 s). Once a job has finished its first step, its worker is killed
with SIGKILL; the job turns failed when the queue next moves, and it is resumed once the others
have ended. Prints the figures and checks: every job ended (done, or failed with a reason), never
more than the limit at once, and no finished step of the killed job lost (same rows, same
seconds; they come back from the cache). Exits 1 if a check fails.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.jobs import JobStore, dispatch, resume_job, set_worker_limit, start_job
from ordercomp.jobs.launch import cores, holds_slot
from ordercomp.train import Budget

FINAL = ("done", "failed", "cancelled")
SAMPLE_S = 0.05
PAGE_POLL_S = 1.5
TIMEOUT_S = 1800


def specs(count: int) -> list[ExploreSpec]:
    return [ExploreSpec(model="digits_cnn", data="digits", methods=("prune", "quantize"), seeds=1, budget=Budget(epochs=1),
                        device="cpu", settings={"prune": {"ratio": round(0.3 + 0.05 * index, 2)}}) for index in range(count)]


def step_rows(store: JobStore, job_id: str) -> dict:
    return {(tuple(row["chain"]), row["seed"]): row["seconds"] for row in store.steps(job_id)}


class Soak:
    """Launch, watch, kill one worker, resume it; the figures it gathers."""

    def __init__(self, store: JobStore, count: int):
        self.store, self.count = store, count
        self.most_at_once, self.killed, self.before_kill = 0, None, {}

    def launch(self) -> list[str]:
        self.started = time.monotonic()
        self.jobs = [start_job(self.store, spec) for spec in specs(self.count)]
        return self.jobs

    def watch(self, job_ids: list[str]) -> None:
        """Sample until every job in `job_ids` has ended, killing one worker once along the way."""
        last_poll = time.monotonic()
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            jobs = self.store.list_jobs()
            self.most_at_once = max(self.most_at_once, sum(holds_slot(job) for job in jobs))
            if self.killed is None:
                self.kill_one(jobs)
            if all(job["status"] in FINAL for job in jobs if job["id"] in job_ids):
                return
            if time.monotonic() - last_poll >= PAGE_POLL_S:
                dispatch(self.store)
                last_poll = time.monotonic()
            time.sleep(SAMPLE_S)
        raise TimeoutError(f"the jobs did not end within {TIMEOUT_S} s")

    def kill_one(self, jobs: list[dict]) -> None:
        for job in jobs:
            if job["status"] == "running" and job["done"] >= 1:
                self.before_kill = step_rows(self.store, job["id"])
                os.kill(job["pid"], signal.SIGKILL)
                self.killed = job["id"]
                return


def report(store: JobStore, soak: Soak, limit: int, seconds: float, resumed_seconds: float) -> int:
    jobs = [store.get(job_id) for job_id in soak.jobs]
    statuses = {status: sum(job["status"] == status for job in jobs) for status in FINAL}
    unexplained = [job["id"] for job in jobs if job["status"] != "done" and not job["error"]]
    after = step_rows(store, soak.killed) if soak.killed else {}
    kept = all(after.get(key) == value for key, value in soak.before_kill.items())
    killed = store.get(soak.killed) if soak.killed else None
    hits = killed["result"]["applications"]["cache_hits"] if killed and killed["result"] else 0
    print(f"cores {cores()}, worker limit {limit}, {len(jobs)} explorations launched at once")
    print(f"all ended in {seconds:.0f} s: {statuses['done']} done, {statuses['failed']} failed, {statuses['cancelled']} cancelled")
    for job in jobs:
        if job["status"] != "done":
            print(f"  {job['id']} {job['status']}: {job['error']}")
    print(f"most jobs holding a worker slot at once: {soak.most_at_once} (limit {limit})")
    print(f"killed with SIGKILL after {len(soak.before_kill)} finished step(s): job {soak.killed}; resumed: "
          f"{killed['status'] if killed else '-'} in {resumed_seconds:.0f} s, {len(after)} steps, "
          f"{hits} from the cache; every step finished before the kill kept: {kept}")
    checks = {"every job ended, done or failed with a reason": not unexplained and statuses["cancelled"] == 0,
              "never more than the limit at once": soak.most_at_once <= limit,
              "a worker was killed mid-run": soak.killed is not None,
              "the killed job resumed to done": killed is not None and killed["status"] == "done",
              "no finished step lost": kept and hits >= len(soak.before_kill)}
    for name, passed in checks.items():
        print(f"{'ok  ' if passed else 'FAIL'} {name}")
    return 0 if all(checks.values()) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2, help="the queue's limit for this run")
    parser.add_argument("--store", type=Path, help="a new folder for the job store (default: a temporary one)")
    args = parser.parse_args()
    folder = args.store or Path(tempfile.mkdtemp(prefix="ordercomp-soak-"))
    store = JobStore(folder / "jobs.sqlite")
    set_worker_limit(store, args.workers)
    soak = Soak(store, args.jobs)
    soak.watch(soak.launch())
    seconds = time.monotonic() - soak.started
    resumed_seconds = 0.0
    if soak.killed and store.get(soak.killed)["status"] == "failed":
        start = time.monotonic()
        resume_job(store, soak.killed)
        soak.watch([soak.killed])
        resumed_seconds = time.monotonic() - start
    print(f"store: {store.path}")
    return report(store, soak, args.workers, seconds, resumed_seconds)


if __name__ == "__main__":
    sys.exit(main())
