"""Tests for the job kinds besides explorations: baseline and export jobs, their specs, the kind
column of the store (with stores written before it existed) and the step-time estimate."""
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from ordercomp import uploads
from ordercomp.exploration import explorer
from ordercomp.deploy.export import export_zip
from ordercomp.jobs import BaselineSpec, ExportSpec, JobStore, start_job
from ordercomp.jobs.worker import run_job
from ordercomp.data.datasets import load_data
from ordercomp.train import Budget
from ordercomp.models.zoo import create_model
from testkit import WORKER_S


@pytest.fixture
def base(tiny_upload):
    return {"model": str(tiny_upload), "data": "digits", "architecture": "cnn_tiny", "device": "cpu"}


def test_a_baseline_job_measures_the_base_on_the_test_split(store, base, quick_timing):
    job_id = store.create(BaselineSpec(**base), "baseline")
    assert run_job(store, job_id) == "done"
    job = store.get(job_id)
    assert job["kind"] == "baseline" and job["result"]["base"] == {"source": "checkpoint", "path": base["model"], "architecture": "cnn_tiny"}
    metrics = job["result"]["metrics"]
    model = create_model("cnn_tiny", 10, 1)
    assert metrics["params"] == sum(p.numel() for p in model.parameters())
    assert metrics["bitops"] == metrics["macs"] * 32 * 32 and metrics["latency_ms_b1"] > 0  # a float model: 32-bit weights and activations
    assert job["result"]["data"]["test"] == 359 and job["result"]["device"] == "cpu"
    assert store.log(job_id)[-1]["message"].startswith("done in") and "base accuracy" in store.log(job_id)[-1]["message"]


def test_a_baseline_that_does_not_fit_the_data_fails_with_one_line(store, base, tmp_path):
    job_id = store.create(BaselineSpec(**base | {"architecture": "cnn_small"}), "baseline")
    assert run_job(store, job_id) == "failed"
    assert store.get(job_id)["error"].startswith("CheckpointError: cnn_tiny.pt does not fit cnn_small")


def test_an_export_job_applies_the_chain_writes_every_format_and_verifies_them(store, base, quick_timing):
    spec = ExportSpec(**base, chain=("prune", "quantize"), settings={"prune": {"ratio": 0.25}, "sparsify": {"sparsity": 0.5}},
                      budget=Budget(epochs=0.0).to_dict())
    assert spec.settings == {"prune": {"ratio": 0.25}}  # settings of methods outside the chain are dropped
    job_id = store.create(spec, "export")
    assert run_job(store, job_id) == "done", store.log(job_id)
    job = store.get(job_id)
    result = job["result"]
    assert (job["done"], job["total"]) == (2, 2) and [row["chain"] for row in store.steps(job_id)] == [["prune"], ["prune", "quantize"]]
    assert result["folder"] == str(store.path.parent / "exports" / job_id)
    manifest = result["manifest"]
    assert manifest["chain"] == ["prune", "quantize"] and manifest["configs"]["prune"]["ratio"] == 0.25
    assert sorted(manifest["files"]) == ["model.int8.onnx", "model.onnx", "model.packed.safetensors", "model.pt2", "model.state_dict.pt",
                                         "model.torchscript.pt"]
    assert all(entry["check"]["passed"] for entry in manifest["formats"] if "check" in entry)
    int8 = next(entry for entry in manifest["formats"] if entry["format"] == "onnx_int8")
    assert int8["base_measured"]["format"] == "onnx" and set(int8["speedup"]) == {"1", "32"}
    assert int8["measured"]["accuracy"] == pytest.approx(onnx_accuracy(Path(result["folder"]) / int8["file"]))
    assert result["verify"]["ok"] and result["steps"][-1]["metrics"]["bitops"] < result["base_metrics"]["bitops"]
    with zipfile.ZipFile(io.BytesIO(export_zip(result["folder"]))) as archive:  # every file and the manifest, as written
        assert sorted(archive.namelist()) == sorted(f"{job_id}/{name}" for name in manifest["files"] + ["manifest.json"])
        assert all(archive.read(f"{job_id}/{name}") == (Path(result["folder"]) / name).read_bytes() for name in manifest["files"])


def onnx_accuracy(path: Path) -> float:
    """Top-1 accuracy (percent) of an ONNX file on the digits test split, run here in onnxruntime."""
    import onnxruntime

    images, labels = load_data("digits").test.tensors
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    return 100.0 * float((logits.argmax(1) == labels.numpy()).mean())


def test_an_export_of_an_order_that_cannot_apply_fails_and_keeps_its_steps(store, base):
    spec = ExportSpec(**base, chain=("prune", "lowrank"), settings={"lowrank": {"rank_ratio": 0.99}}, budget={"epochs": 0.0})
    job_id = store.create(spec, "export")
    assert run_job(store, job_id) == "failed"
    job = store.get(job_id)
    assert job["error"].startswith("ValueError: prune → lowrank is incompatible: ") and "choose another order" in job["error"]
    assert [row["status"] for row in store.steps(job_id)] == ["ok", "incompatible"]
    assert not (store.path.parent / "exports" / job_id).exists()


def test_a_zoo_base_is_trained_once_for_baseline_and_export(store, monkeypatch):
    monkeypatch.setattr(explorer, "BASE_BUDGET", Budget(epochs=0.05))
    spec = {"model": "cnn_tiny", "data": "digits", "device": "cpu"}
    baseline = store.create(BaselineSpec(**spec), "baseline")
    assert run_job(store, baseline) == "done"
    # the channels the zoo model takes are part of its record since issue 16 (a ViT takes grey digits repeated to 3)
    assert store.get(baseline)["result"]["base"] == {"source": "trained", "architecture": "cnn_tiny", "in_channels": 1}
    trained = list(store.cache_dir().glob("base-*.safetensors"))
    export = store.create(ExportSpec(**spec, chain=("prune",), budget={"epochs": 0.0}, formats=("state_dict",)), "export")
    assert run_job(store, export) == "done", store.log(export)
    result = store.get(export)["result"]
    assert len(trained) == 1 and list(store.cache_dir().glob("base-*.safetensors")) == trained
    assert result["manifest"]["base"] == {"source": "trained", "architecture": "cnn_tiny", "in_channels": 1}
    assert result["base_metrics"]["accuracy"] == store.get(baseline)["result"]["metrics"]["accuracy"]


def test_specs_round_trip_and_check_their_fields():
    spec = ExportSpec(model="digits_cnn", data="digits", chain=["prune", "quantize"], formats=["onnx"], exploration="abc")
    assert ExportSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert BaselineSpec.from_dict(BaselineSpec(model="cnn_tiny").to_dict()) == BaselineSpec(model="cnn_tiny")
    with pytest.raises(ValueError, match="the order to export is empty"):
        ExportSpec(model="digits_cnn", data="digits", chain=())
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        BaselineSpec(device="tpu")
    record = {"spec": {"model": "m.pt", "data": "digits", "architecture": "cnn_tiny", "input_size": None, "device": "cpu",
                       "settings": {"prune": {"ratio": 0.3}, "quantize": {"weight_bits": 4}}, "budget": {"epochs": 1.0}}}
    made = ExportSpec.from_exploration(record, ["quantize"], formats=("pt2",), exploration="abc")
    assert (made.model, made.architecture, made.settings, made.budget, made.exploration) == ("m.pt", "cnn_tiny", {"quantize": {"weight_bits": 4}},
                                                                                         {"epochs": 1.0}, "abc")
    assert made.trust_torchscript is False  # a record from before the trust switch
    trusted = ExportSpec.from_exploration({"spec": record["spec"] | {"trust_torchscript": True}}, ["quantize"])
    assert trusted.trust_torchscript is True and ExportSpec.from_dict(trusted.to_dict()) == trusted
    assert BaselineSpec.from_dict(BaselineSpec(trust_torchscript=True).to_dict()).trust_torchscript is True
    with pytest.raises(ValueError, match="trust_torchscript must be true or false, got 'yes'"):
        BaselineSpec(trust_torchscript="yes")


def test_the_store_lists_jobs_by_kind_and_refuses_unknown_kinds(store, tiny_spec):
    exploration = store.create(tiny_spec())
    baseline = store.create(BaselineSpec(), "baseline")
    assert [job["id"] for job in store.list_jobs("baseline")] == [baseline]
    assert [job["id"] for job in store.list_jobs("explore")] == [exploration]
    assert {job["kind"] for job in store.list_jobs()} == {"explore", "baseline"}
    with pytest.raises(ValueError, match="unknown job kind 'train'"):
        store.create(BaselineSpec(), "train")


def test_a_store_from_before_job_kinds_reads_its_jobs_as_explorations(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL, error TEXT, pid INTEGER, "
                           "created REAL NOT NULL, updated REAL NOT NULL, done INTEGER NOT NULL DEFAULT 0, total INTEGER NOT NULL "
                           "DEFAULT 0, label TEXT NOT NULL DEFAULT '', fraction REAL NOT NULL DEFAULT 0, result TEXT)")
        connection.execute("INSERT INTO jobs (id, spec, status, created, updated) VALUES ('old', '{}', 'done', 1, 1)")
    connection.close()
    store = JobStore(path)
    assert store.get("old")["kind"] == "explore" and [job["id"] for job in store.list_jobs("explore")] == ["old"]
    assert JobStore(path).get("old")["kind"] == "explore"


def test_step_seconds_averages_and_counts_successful_steps_of_explorations(store, tiny_spec):
    assert store.step_seconds() is None
    job_id = store.create(tiny_spec())
    for chain, status, seconds in ((["prune"], "ok", 2.0), (["quantize"], "ok", 4.0), (["prune", "quantize"], "failed", 100.0)):
        store.record_step(job_id, {"chain": chain, "seed": 0, "status": status, "reason": None, "metrics": None, "seconds": seconds})
    model = store.get(job_id)["spec"]["model"]
    assert store.step_seconds() == (3.0, 2) and store.step_seconds(model, "digits") == (3.0, 2)
    assert store.step_seconds("digits_cnn") is None and store.step_seconds(model, "/data/cifar") is None


@pytest.mark.timeout(2 * WORKER_S)
def test_the_worker_process_runs_a_baseline_job(store, base, wait_for):
    job_id = start_job(store, BaselineSpec(**base), kind="baseline")
    status = wait_for(lambda: store.get(job_id)["status"] in ("done", "failed") and store.get(job_id)["status"], "the baseline job", timeout=WORKER_S)
    assert status == "done", store.log(job_id)
    assert store.get(job_id)["result"]["metrics"]["latency_ms_b1"] > 0


def test_a_job_reads_the_ema_weights_its_spec_chose_and_an_export_keeps_the_choice(store, tmp_path, tiny_model, quick_timing):
    """Stop 44: the dashboard's jobs read only a checkpoint's training weights; the EMA choice goes with the job's spec."""
    import torch

    state = tiny_model.state_dict()
    saved = io.BytesIO()
    torch.save({"model": state, "model_ema": {k: v * 0 if v.is_floating_point() else v for k, v in state.items()}}, saved)
    kept = uploads.keep_checkpoint(tmp_path / uploads.CHECKPOINTS_FOLDER, "w.pth", saved.getvalue())  # as the page keeps it
    base = {"model": str(kept), "architecture": "cnn_tiny", "device": "cpu"}
    accuracy = {}
    for ema in (False, True):
        job_id = store.create(BaselineSpec(**base, ema=ema), "baseline")
        assert run_job(store, job_id) == "done", store.log(job_id)
        result = store.get(job_id)["result"]
        accuracy[ema] = result["metrics"]["accuracy"]
        assert ("read the EMA weights, its 'model_ema' entry" in result["base"]["weights_notes"][0]) is ema
    assert accuracy[True] < accuracy[False]
    made = ExportSpec.from_exploration({"spec": base | {"data": "digits", "input_size": None, "settings": {}, "budget": {},
                                                        "ema": True}}, ["quantize"])
    assert made.ema is True and ExportSpec.from_dict(made.to_dict()) == made
    with pytest.raises(ValueError, match="ema must be true or false, got 'yes'"):
        BaselineSpec(ema="yes")
