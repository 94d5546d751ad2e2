"""Tests for the worker run in this process: events, incompatible pairs, failures, cancel."""
import os

import pytest

from ordercomp import uploads
from ordercomp.jobs.worker import Cancelled, JobEvents, main, run_job


class RecordingStore:
    """A toy store that counts writes and status reads, and reports a fixed status."""

    def __init__(self, status="running"):
        self.status, self.writes, self.reads = status, [], 0

    def set_progress(self, job_id, label, fraction, done=None, total=None):
        self.writes.append(("progress", label, fraction, done, total))

    def append_log(self, job_id, message):
        self.writes.append(("log", message))

    def record_step(self, job_id, step):
        self.writes.append(("step", tuple(step["chain"])))

    def require(self, job_id):
        self.reads += 1
        return {"status": self.status}


class Clock:
    """Seconds that move only when the test says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_writes_are_throttled_but_every_step_is_written():
    store, clock = RecordingStore(), Clock()
    events = JobEvents(store, "job", clock=clock)
    for index in range(200):  # 200 progress events over 3.1 s, one every 1/64 s (exact in binary)
        clock.now = index / 64
        events({"kind": "progress", "label": "prune: fine-tune", "fraction": index / 200})
    step = {"chain": ["prune"], "seed": 0, "status": "ok", "reason": None, "metrics": {}, "seconds": 0.5}
    events({"kind": "step", "result": step, "done": 1, "total": 4})
    # a progress write every PROGRESS_INTERVAL_S (16 events), a look for a cancel every CANCEL_CHECK_INTERVAL_S (32)
    written = [write[2] for write in store.writes if write[:2] == ("progress", "prune: fine-tune")]
    assert written == [index / 200 for index in range(0, 200, 16)]
    assert store.reads == len(range(0, 200, 32))
    assert ("step", ("prune",)) in store.writes
    assert ("progress", "prune", 1.0, 1, 4) in store.writes
    assert ("log", "prune (seed 0): ok in 0.5 s") in store.writes


def test_events_raise_cancelled_once_a_cancel_is_requested():
    store = RecordingStore(status="cancelling")
    with pytest.raises(Cancelled):
        JobEvents(store, "job")({"kind": "stage", "stage": "base", "label": "preparing the base model"})


def test_a_method_that_applies_nowhere_is_left_out_and_the_job_ends_with_the_others(store, tiny_spec):
    # At rank ratio 0.99 no layer of cnn_tiny gets cheaper: lowrank applies on no seed, so the chain is found without it.
    job_id = store.create(tiny_spec(methods=("prune", "lowrank"), settings={"lowrank": {"rank_ratio": 0.99}}))
    assert run_job(store, job_id) == "done"
    result = store.get(job_id)["result"]
    assert result["chain"] == ["prune"]
    assert result["left_out"] == [{"method": "lowrank", "status": "incompatible",
                                   "reason": "no layer gets cheaper at rank ratio 0.99: lower the rank ratio"}]
    by_chain = {tuple(row["chain"]): row for row in store.steps(job_id)}
    assert by_chain[("prune",)]["status"] == "ok"
    assert by_chain[("prune", "lowrank")]["status"] == "incompatible"
    assert "no layer gets cheaper at rank ratio 0.99" in by_chain[("prune", "lowrank")]["reason"]
    assert by_chain[("lowrank", "prune")]["reason"] == "lowrank could not be applied"


def test_an_error_fails_the_job_with_one_line_and_the_traceback_in_the_log(store, tiny_spec, tmp_path):
    job_id = store.create(tiny_spec(model=str(tmp_path / uploads.CHECKPOINTS_FOLDER / "missing.pt")))  # removed meanwhile
    assert run_job(store, job_id) == "failed"
    job = store.get(job_id)
    assert job["status"] == "failed" and job["result"] is None
    assert job["error"].startswith("CheckpointError: model ") and "\n" not in job["error"]
    assert any(line["message"].startswith("Traceback") for line in store.log(job_id))


def test_a_job_cancelled_while_queued_never_runs(store, tiny_spec):
    job_id = store.create(tiny_spec())
    store.request_cancel(job_id)
    assert run_job(store, job_id) == "cancelled"
    assert store.get(job_id)["status"] == "cancelled"
    assert store.steps(job_id) == []


def test_a_job_that_is_not_queued_is_refused(store, tiny_spec, capsys):
    job_id = store.create(tiny_spec())
    store.set_status(job_id, "done", result={})
    with pytest.raises(SystemExit):
        main(["--store", str(store.path), "--job", job_id])
    assert "is done, not queued" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--store", str(store.path.parent / "nowhere.sqlite"), "--job", job_id])
    assert "no job store at" in capsys.readouterr().err


def test_a_job_connects_to_no_ray_cluster_its_operator_did_not_offer(store, tiny_spec, monkeypatch):
    """The driver unpickles what a cluster's tasks return: a served dashboard's user who typed the address of a cluster
    of their own ran code in the job's process on the server (/work/notes/s45/untrusted3/a01_ray_address_runs_code.py)."""
    from ordercomp.exploration import executors

    monkeypatch.setattr(executors.socket, "create_connection", lambda *a, **k: pytest.fail(f"connected to {a[0]}"))
    monkeypatch.setenv("ORDERCOMP_RAY_ADDRESSES", "10.0.0.5:6379")
    job = store.create(tiny_spec(executor="ray", ray_address="203.0.113.9:6379"))
    assert run_job(store, job) == "failed"
    assert store.get(job)["error"] == (
        "ValueError: 203.0.113.9:6379 is not a Ray cluster this server's operator offers (10.0.0.5:6379): "
        "a job runs whatever code the cluster there returns; leave the address empty for a local cluster, or ask the "
        "operator to list it in $ORDERCOMP_RAY_ADDRESSES (comma-separated HOST:PORT or auto)")
    monkeypatch.delenv("ORDERCOMP_RAY_ADDRESSES")
    job = store.create(tiny_spec(executor="ray", ray_address="auto"))  # a cluster found on the server: the operator's to offer too
    assert run_job(store, job) == "failed" and "auto is not a Ray cluster this server's operator offers (none)" in store.get(job)["error"]


def test_a_job_reads_no_model_file_but_those_uploaded_to_its_store(store, tiny_checkpoint, tiny_upload, quick_timing):
    """A spec written by a stale or crafted session named any model file on the server (an operator's private model) as
    its model or weights, and the worker loaded it, measured or compressed it and exported it for download
    (/work/notes/s45/untrusted4/r1_job_reads_any_model.py): only the dashboard's own choices pass, refused before the run."""
    from ordercomp.jobs import BaselineSpec, ExportSpec

    link = tiny_upload.parent / "link.pt"
    link.symlink_to(tiny_checkpoint)
    climbing = tiny_upload.parent / os.path.relpath(tiny_checkpoint, tiny_upload.parent)
    for outside in (tiny_checkpoint, link, climbing):
        for kind, spec in (("baseline", BaselineSpec(model=str(outside), architecture="cnn_tiny", device="cpu")),
                           ("export", ExportSpec(model=str(outside), data="digits", chain=("prune",), architecture="cnn_tiny", device="cpu"))):
            job = store.create(spec, kind)
            assert run_job(store, job) == "failed"
            assert store.get(job)["error"].startswith(f"CheckpointError: the model {outside} is not a model factory registered on "
                                                      "this server (")
            assert store.get(job)["error"].endswith(", a sample, a zoo architecture nor a checkpoint uploaded to it: choose "
                                                    "the model on the Model & data page")
        job = store.create(BaselineSpec(model="cnn_tiny", weights=str(outside), device="cpu"), "baseline")
        assert run_job(store, job) == "failed"
        assert store.get(job)["error"] == (f"CheckpointError: the weights {outside} are not a file uploaded to this server: "
                                           "upload them on the Model & data page")
    assert not (store.path.parent / "exports").exists()
    job = store.create(BaselineSpec(model="cnn_tiny", weights=str(tiny_upload), device="cpu"), "baseline")  # as the page makes it
    assert run_job(store, job) == "done", store.log(job)
