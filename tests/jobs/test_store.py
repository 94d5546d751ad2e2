"""Tests for the SQLite job store: round trips, counters, transitions and unknown ids."""
import sqlite3
import threading

import pytest

from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.jobs import JobStore, StoreError


def step(chain, seed=0, status="ok", seconds=1.5, reason=None, metrics=None):
    return {"chain": list(chain), "seed": seed, "status": status, "reason": reason,
            "metrics": {"accuracy": 90.0, "bitops": 1e6} if metrics is None and status == "ok" else metrics,
            "seconds": seconds}


def test_create_and_get_round_trip_the_spec(store, tiny_spec):
    spec = tiny_spec(settings={"prune": {"ratio": 0.3}}, objective="weighted", weight=2.0)
    job = store.get(store.create(spec))
    assert job["status"] == "queued" and job["pid"] is None and job["result"] is None
    assert (job["done"], job["total"], job["error"]) == (0, 0, None)
    assert job["spec"] == spec.to_dict()
    assert ExploreSpec.from_dict(job["spec"]) == spec


def test_result_round_trips_and_list_is_newest_first_without_results(store, tiny_spec):
    first, second = store.create(tiny_spec()), store.create(tiny_spec())
    result = {"chain": ["prune", "quantize"], "base_metrics": {"accuracy": 91.25}, "repeat": None}
    assert store.set_status(first, "done", result=result)
    assert store.get(first)["result"] == result
    listed = store.list_jobs()
    assert [job["id"] for job in listed] == [second, first]
    assert all("result" not in job for job in listed)
    assert listed[1]["status"] == "done"


def test_progress_sets_label_fraction_and_counters(store, tiny_spec):
    job_id = store.create(tiny_spec())
    store.set_progress(job_id, "prune -> quantize", 1.0, done=3, total=4)
    store.set_progress(job_id, "quantize: QAT", 0.5)
    job = store.get(job_id)
    assert (job["label"], job["fraction"], job["done"], job["total"]) == ("quantize: QAT", 0.5, 3, 4)


def test_a_step_recorded_again_replaces_its_row(store, tiny_spec):
    job_id = store.create(tiny_spec())
    store.record_step(job_id, step(["prune"], seconds=1.0))
    store.record_step(job_id, step(["prune", "int8"], status="incompatible", reason="no int8 here", seconds=0.1))
    store.record_step(job_id, step(["prune"], seconds=2.0))
    store.record_step(job_id, step(["prune"], seed=1, seconds=3.0))
    rows = store.steps(job_id)
    assert [(r["chain"], r["seed"], r["seconds"]) for r in rows] == [(["prune"], 0, 2.0), (["prune", "int8"], 0, 0.1), (["prune"], 1, 3.0)]
    assert rows[0]["metrics"] == {"accuracy": 90.0, "bitops": 1e6}
    assert (rows[1]["status"], rows[1]["reason"], rows[1]["metrics"]) == ("incompatible", "no int8 here", None)


def test_log_keeps_the_last_lines_oldest_first(store, tiny_spec):
    job_id = store.create(tiny_spec())
    for index in range(5):
        store.append_log(job_id, f"line {index}")
    assert [line["message"] for line in store.log(job_id, limit=3)] == ["line 2", "line 3", "line 4"]
    assert len(store.log(job_id)) == 5


def test_status_changes_respect_expectations(store, tiny_spec):
    job_id = store.create(tiny_spec())
    assert not store.set_status(job_id, "done", expect=("running",))
    assert store.set_status(job_id, "running", pid=4242, expect=("queued",))
    assert store.set_status(job_id, "failed", error="RuntimeError: out of memory")
    job = store.get(job_id)
    assert (job["status"], job["pid"], job["error"]) == ("failed", 4242, "RuntimeError: out of memory")
    store.requeue(job_id)
    job = store.get(job_id)
    assert (job["status"], job["pid"], job["error"]) == ("queued", None, None)
    with pytest.raises(ValueError, match="unknown job status 'finished'"):
        store.set_status(job_id, "finished")


def test_cancel_and_requeue_only_from_sensible_statuses(store, tiny_spec):
    job_id = store.create(tiny_spec())
    with pytest.raises(ValueError, match="is queued: only failed or cancelled jobs can be resumed"):
        store.requeue(job_id)
    assert store.request_cancel(job_id) == "cancelled"  # no worker yet: at once
    assert store.log(job_id)[-1]["message"] == "cancelled while waiting in the queue"
    started, running = store.create(tiny_spec()), store.create(tiny_spec())
    store.set_status(started, "queued", pid=4242)
    store.set_status(running, "running", pid=4243)
    assert store.request_cancel(started) == store.request_cancel(running) == "cancelling"  # their workers stop them
    store.set_status(job_id, "done", result={})
    with pytest.raises(ValueError, match="is done: only queued or running jobs can be cancelled"):
        store.request_cancel(job_id)


def test_unknown_job_ids_are_reported(store):
    assert store.get("feedc0ffee00") is None
    calls = [lambda: store.require("nope"), lambda: store.steps("nope"), lambda: store.log("nope"),
             lambda: store.append_log("nope", "x"), lambda: store.record_step("nope", step(["prune"])),
             lambda: store.set_progress("nope", "x", 0.1), lambda: store.set_status("nope", "done"),
             lambda: store.request_cancel("nope"), lambda: store.requeue("nope")]
    for call in calls:
        with pytest.raises(ValueError, match="unknown job 'nope': pick an id from the job list"):
            call()


def test_settings_are_kept_per_store(store):
    assert store.setting("max_workers") is None
    store.set_setting("max_workers", "3")
    assert JobStore(store.path).setting("max_workers") == "3"
    store.set_setting("max_workers", None)
    assert store.setting("max_workers") is None


def test_a_corrupt_store_is_one_line(tmp_path):
    path = tmp_path / "jobs.sqlite"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=r"^the job store .*jobs.sqlite cannot be used \(file is not a database\): make it a "
                                         "writable SQLite file, or set ORDERCOMP_STORE to a new path$"):
        JobStore(path)
    with pytest.raises(StoreError, match="cannot be used"):
        JobStore(tmp_path / "jobs.sqlite" / "below a file")


def test_a_read_only_store_is_one_line(store, read_only):
    read_only(store.path)
    with pytest.raises(StoreError, match="readonly database"):
        JobStore(store.path)


def test_default_path_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERCOMP_STORE", str(tmp_path / "deep" / "folder" / "jobs.sqlite"))
    store = JobStore()
    assert store.path == tmp_path / "deep" / "folder" / "jobs.sqlite" and store.path.is_file()
    assert store.cache_dir() == tmp_path / "deep" / "folder" / "cache"
    with sqlite3.connect(store.path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_many_writers_at_once_lose_nothing(store, tiny_spec):
    job_id = store.create(tiny_spec())
    other = JobStore(store.path)

    def write(name, handle):
        for index in range(40):
            handle.append_log(job_id, f"{name} {index}")
            handle.set_progress(job_id, name, index / 40)

    threads = [threading.Thread(target=write, args=(f"writer {n}", (store, other)[n % 2])) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.log(job_id, limit=1000)) == 160
