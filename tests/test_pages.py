"""AppTest tests of every dashboard page, on a job store holding a real finished exploration and export.

The exploration (prune, quantize; exhaustive, so the ranking shows) and its export run once per
session in this process on an untrained cnn_tiny checkpoint. Each test works on a copy of that
store; buttons that would start a worker process start a stand-in that does nothing (`spawned` lists their job ids).
"""
from __future__ import annotations

import copy
import html
import io
import json
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from untrusted_data import image_bomb_zip

from ordercomp import uploads
from ordercomp.models import factories
from ordercomp.models.checkpoints import sample_card
from ordercomp.dashboard import estimate, formatting, plan, session, views
from ordercomp.data.cifar import write_cifar
from ordercomp.data.datasets import DataError
from ordercomp.exploration.explorer import DEFAULT_METHODS, NO_SHIP, ExploreSpec, default_budget, default_methods
from ordercomp.jobs import BaselineSpec, ExportSpec, JobStore, is_alive, launch, set_worker_limit, start_job
from ordercomp.jobs.worker import run_job
from ordercomp.methods.registry import METHODS
from ordercomp.report.figures import STEP_FIGURES, busy_caveat, duration
from ordercomp.train import Budget
from ordercomp.models.zoo import create_model
from testkit import MARKUP, MY_NET, WORKER_S, figure_texts, png, zip_of
from untrusted_files import NOTES, genuine_pt2, sympy_in_batch_size

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = {name: f"pages/{name}.py" for name in ("1_model_and_data", "2_methods", "3_runs", "4_order", "5_tradeoffs", "6_export")}


@pytest.fixture(scope="session")
def finished(tmp_path_factory, tiny_checkpoint) -> dict:
    """A store folder with a done exploration and a done export of its chain, their base uploaded to the store as the
    Model & data page keeps it; their ids."""
    store = JobStore(tmp_path_factory.mktemp("finished") / "jobs.sqlite")
    kept = uploads.keep_checkpoint(store.path.parent / uploads.CHECKPOINTS_FOLDER, tiny_checkpoint.name, tiny_checkpoint.read_bytes())
    spec = ExploreSpec(model=str(kept), architecture="cnn_tiny", methods=("prune", "quantize"), seeds=1,
                       budget=Budget(epochs=0.0), device="cpu", exhaustive=True)
    exploration = store.create(spec)
    assert run_job(store, exploration) == "done", store.log(exploration)
    record = store.get(exploration)["result"]
    export = store.create(ExportSpec.from_exploration(record, record["chain"], formats=("state_dict", "torchscript"),
                                                      exploration=exploration), "export")
    assert run_job(store, export) == "done", store.log(export)
    return {"folder": store.path.parent, "exploration": exploration, "export": export, "record": record}


@pytest.fixture
def store(finished, tmp_path, monkeypatch) -> JobStore:
    folder = shutil.copytree(finished["folder"], tmp_path / "store")
    monkeypatch.setenv("ORDERCOMP_STORE", str(folder / "jobs.sqlite"))
    return JobStore(folder / "jobs.sqlite")


def base_in(store: JobStore, finished: dict) -> dict:
    """The finished exploration's spec, its base the upload in `store`'s copy of the finished folder: a worker reads
    only the uploads of its own store."""
    spec = finished["record"]["spec"]
    return spec | {"model": str(store.path.parent / Path(spec["model"]).relative_to(finished["folder"]))}


REAL_SPAWN = launch.spawn_worker


@pytest.fixture(autouse=True)
def spawned(fake_workers) -> list[str]:
    """Ids of the jobs whose worker was started: a stand-in process that does nothing, so no page
    test trains anything unless it asks for real workers (`real_workers`)."""
    return fake_workers


@pytest.fixture
def real_workers(monkeypatch):
    monkeypatch.setattr(launch, "spawn_worker", REAL_SPAWN)


def app(page: str, job: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    if job:
        at.query_params["job"] = job
    at.run()
    if page != "1_model_and_data":
        at.switch_page(PAGES[page]).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def si_value(text: str) -> float:
    """The number an SI-prefixed figure stands for: '3.04 G' -> 3.04e9."""
    number, _, prefix = text.partition(" ")
    return float(number) * {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[prefix]


def plain(markdown: str) -> str:
    """Markdown source as it reads on screen: the pages escape user text (see formatting.md)."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(elements) -> list[str]:
    return [plain(element.value) for element in elements]


def charts(at: AppTest, kind: str = "plotly_chart") -> int:
    return len(at.main.get(kind))


# --- Model & data ---------------------------------------------------------------------------

def test_model_page_shows_the_sample_card_and_offers_a_baseline_job(store, spawned):
    at = app("1_model_and_data")
    assert at.main.title[0].value == "Model & data"
    assert at.radio(key="w_data_source").value == "digits" and at.radio(key="w_model_source").value == "sample"
    assert at.main.selectbox(key="w_sample").value == "digits_cnn"
    figures = {metric.label: metric.value for metric in at.main.metric}
    card = sample_card("digits_cnn")["metrics"]  # the card's own figures, read back from what the page shows
    assert float(figures["Accuracy (test)"].removesuffix(" %")) == pytest.approx(card["test_accuracy"], abs=0.005)
    assert si_value(figures["BitOps"]) == pytest.approx(card["bitops"], rel=5e-3)
    assert si_value(figures["MACs"]) == pytest.approx(card["macs"], rel=5e-3)
    assert si_value(figures["Parameters"]) == pytest.approx(card["params"], rel=5e-3)
    assert figures["Latency, batch 1"] == "not measured"  # a card holds no latency: it depends on the machine
    assert "digits_cnn on digits" in plain(at.main.success[0].value)
    at.main.button[0].click().run()
    [job] = store.list_jobs("baseline")
    assert job["id"] == spawned[0] and job["spec"] == BaselineSpec(model="digits_cnn").to_dict()
    assert "queued" in plain(at.main.markdown[-1].value) or any("queued" in plain(m.value) for m in at.main.markdown)


def test_a_finished_baseline_job_shows_its_measured_figures(store):
    job = store.create(BaselineSpec(model="digits_cnn"), "baseline")
    assert run_job(store, job) == "done"
    at = app("1_model_and_data")
    # one row of figures, the measured one (the card's row, still "not measured", stood above it)
    [latency] = [metric for metric in at.main.metric if metric.label == "Latency, batch 1"]
    assert latency.value.endswith(" ms")
    # which runtime it is: the module in eager PyTorch, not a deployable file (whose speed Trade-offs and Export show)
    assert "eager" in latency.help and "not a deployable file" in latency.help
    assert any("Measured on cpu" in plain(caption.value) and "eager PyTorch, 1 thread" in plain(caption.value)
               for caption in at.main.caption)
    assert not [b for b in at.main.button if b.label.startswith("Measure")]


def image_folder(root: Path) -> Path:
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(root / name / "1.png")
    return root


def test_a_wrong_data_path_is_an_error_and_a_valid_folder_becomes_the_data(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERCOMP_DATA_ROOTS", str(tmp_path))
    at = app("1_model_and_data")
    at.radio(key="w_data_source").set_value("folder").run()
    at.text_input(key="w_data_path").set_value(str(tmp_path / "nowhere")).run()
    assert "does not exist" in plain(at.main.error[0].value) and not at.exception
    assert at.session_state[session.BASE]["data"] == "digits"
    at.text_input(key="w_data_path").set_value(str(image_folder(tmp_path / "pets"))).run()
    assert not at.main.error
    assert at.session_state[session.BASE]["data"] == str((tmp_path / "pets").resolve())
    assert "digits_cnn on pets" in plain(at.main.success[0].value)
    assert plain(at.main.warning[0].value).startswith("digits_cnn was trained on digits (10 classes, 1 channel)")


def test_a_corrupt_or_pickled_checkpoint_upload_is_refused_and_a_state_dict_is_used(store, tmp_path):
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("broken.pt", b"not a checkpoint", "application/octet-stream")).run()
    assert len(at.main.error) == 1 and plain(at.main.error[0].value).startswith("broken.pt is not a readable torch checkpoint")
    pickled = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), pickled)
    at.file_uploader(key="model_file").set_value(("module.pt", pickled.getvalue(), "application/octet-stream")).run()
    assert "holds more than tensors" in plain(at.main.error[0].value) and "nothing from it was run" in plain(at.main.error[0].value)
    state = io.BytesIO()
    torch.save(create_model("cnn_tiny", 10, 1).state_dict(), state)
    at.file_uploader(key="model_file").set_value(("tiny.pt", state.getvalue(), "application/octet-stream")).run()
    assert "holds weights only: choose its architecture" in plain(at.main.error[0].value)
    at.main.selectbox(key="w_upload_arch").set_value("cnn_tiny").run()
    assert not at.main.error and "a state dict of" in plain(at.main.success[0].value)
    choice = at.session_state[session.BASE]
    assert Path(choice["model"]).name == "tiny.pt" and choice["architecture"] == "cnn_tiny"
    assert Path(choice["model"]).is_relative_to(store.path.parent / "uploads")


def test_a_text_file_or_a_pt2_running_python_is_one_line_on_the_page_and_leaves_nothing(store, tmp_path):
    """A text file named like a state dict made torch's unpickler raise KeyError, which reached the page and
    left the upload behind; a .pt2 whose batch size is Python ran it while loading."""
    marker, kept = tmp_path / "marker", set((store.path.parent / "uploads").iterdir())  # the finished jobs' base
    torch.manual_seed(0)
    evil = sympy_in_batch_size(genuine_pt2(create_model("cnn_tiny", 10, 1)), marker)
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("upload").run()
    for name, data in (("notes.pt", NOTES), ("evil.pt2", evil)):
        at.file_uploader(key="model_file").set_value((name, data, "application/octet-stream")).run()
        assert not at.exception, [e.value for e in at.exception]
        assert len(at.main.error) == 1 and plain(at.main.error[0].value).startswith(f"{name} ")
    assert not marker.exists()
    assert set((store.path.parent / "uploads").iterdir()) == kept


def scripted_model() -> bytes:
    scripted = io.BytesIO()
    torch.jit.save(torch.jit.script(create_model("cnn_tiny", 10, 1)), scripted)
    return scripted.getvalue()


def test_a_server_whose_operator_did_not_allow_torchscript_offers_no_trust_box_and_keeps_no_torchscript_upload(store, monkeypatch):
    """Stop 43: any user of a served dashboard could tick the trust box and run an uploaded TorchScript file's code on the
    server, which a dashboard never does with a typed FILE.py:NAME. TorchScript now needs the operator's $ORDERCOMP_TORCHSCRIPT=allow."""
    from ordercomp.models import checkpoints

    monkeypatch.delenv("ORDERCOMP_TORCHSCRIPT", raising=False)
    monkeypatch.setattr(checkpoints, "load_program", lambda *a, **k: pytest.fail("TorchScript was loaded"))
    kept = set((store.path.parent / "uploads").rglob("*"))  # the finished jobs' base
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("upload").run()
    assert not [box for box in at.checkbox if box.key == "w_trust_torchscript"]
    assert any("unless its operator sets ORDERCOMP_TORCHSCRIPT=allow" in caption for caption in texts(at.main.caption))
    at.file_uploader(key="model_file").set_value(("tiny.ts", scripted_model(), "application/octet-stream")).run()
    assert not at.exception and len(at.main.error) == 1
    assert plain(at.main.error[0].value).startswith("tiny.ts is TorchScript: loading it runs code stored in the file, and this "
                                                    "server's operator has not allowed that")
    assert at.session_state[session.BASE]["model"] == "digits_cnn"
    assert [path for path in (store.path.parent / "uploads").rglob("*") if path.is_file() and path.name != ".ordercomp-upload"
            and path not in kept] == []


def test_an_image_trees_centre_crop_becomes_part_of_the_base_and_square_data_refuses_one(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERCOMP_DATA_ROOTS", str(tmp_path))
    at = app("1_model_and_data")
    assert not [box for box in at.number_input if box.key == "w_crop"]  # digits: square, read as they are
    at.radio(key="w_data_source").set_value("folder").run()
    at.text_input(key="w_data_path").set_value(str(image_folder(tmp_path / "pets"))).run()
    at.number_input(key="w_crop").set_value(0.875).run()
    assert not at.main.error and at.session_state[session.BASE]["crop"] == 0.875
    assert "on pets, centre crop 0.875" in plain(at.main.success[0].value)
    assert plan.baseline_spec(at.session_state[session.BASE], "cpu").crop == 0.875
    blank = (np.zeros((4, 32, 32, 3), dtype=np.uint8), np.arange(4) % 2)
    write_cifar(tmp_path / "cifar", blank, blank)
    at.text_input(key="w_data_path").set_value(str(tmp_path / "cifar")).run()
    assert plain(at.main.error[0].value).startswith("--crop (crop=0.875) is for an ImageFolder tree's images")
    assert at.session_state[session.BASE]["data"] == str((tmp_path / "pets").resolve())  # the last usable choice


def test_a_typed_data_path_is_read_only_inside_the_folders_the_operator_offers(store, tmp_path, monkeypatch):
    """Stop 44: any user of a served dashboard could type any folder of the server ("/" passed as an ImageFolder tree),
    train on what it held and learn its layout from the errors. A typed path must now resolve, links followed, inside
    $ORDERCOMP_DATA_ROOTS (else the folder the server started in) before anything of it is read."""
    offered, private = tmp_path / "offered", image_folder(tmp_path / "private")
    (offered / "ours").mkdir(parents=True)
    (offered / "link").symlink_to(private)
    monkeypatch.setenv("ORDERCOMP_DATA_ROOTS", f"{offered}{os.pathsep}{tmp_path / 'other'}")
    monkeypatch.setattr(uploads, "check_layout", lambda *a: pytest.fail(f"{a} was read"))
    at = app("1_model_and_data")
    at.radio(key="w_data_source").set_value("folder").run()
    assert at.text_input(key="w_data_path").label.startswith(f"Dataset folder under {offered} or {tmp_path / 'other'} (")
    for typed in (private, offered / "link", offered / "ours" / ".." / ".." / "private", "/", "~"):
        at.text_input(key="w_data_path").set_value(str(typed)).run()
        assert not at.exception and plain(at.main.error[0].value) == (
            f"{typed} is outside the folders this server reads data from ({offered}, {tmp_path / 'other'}): give a folder "
            f"under one of them or upload a zip; the server's operator names others in $ORDERCOMP_DATA_ROOTS (e.g. "
            f"/data{os.pathsep}/srv/datasets) before starting it")
        assert at.session_state[session.BASE]["data"] == "digits"
    monkeypatch.delenv("ORDERCOMP_DATA_ROOTS")
    monkeypatch.chdir(offered)  # unset: the folder the server started in
    at.text_input(key="w_data_path").set_value(str(private)).run()
    assert plain(at.main.error[0].value).startswith(f"{private} is outside the folders this server reads data from ({offered}):")


def test_a_data_path_longer_than_a_setting_is_refused_unread_and_not_quoted_back(store):
    """A path of 2 MB ('/x' a million times) took 2.4 s of the server's resolving, and the refusal quoted it back whole;
    a Streamlit message may hold 200 MB (/work/notes/s45/untrusted3/a08_typed_text_json.py)."""
    with pytest.raises(DataError) as error:
        uploads.check_served_data_path("/x" * 100_000, store.path.parent)
    assert str(error.value) == ("the dataset folder's path is 200,000 characters long, more than the 100,000 such a setting "
                                "takes; nothing of it was read: give the path of a dataset folder on this machine")


def test_a_worker_reads_no_data_outside_the_offered_folders_even_when_its_job_names_them(store, tmp_path, monkeypatch):
    from ordercomp.jobs.kinds import check_served_data

    private = image_folder(tmp_path / "private")
    monkeypatch.setenv("ORDERCOMP_DATA_ROOTS", str(tmp_path / "offered"))
    job = store.create(BaselineSpec(model="digits_cnn", data=str(private), device="cpu"))
    assert run_job(store, job) == "failed"
    assert store.get(job)["error"].startswith(f"DataError: {private} is outside the folders this server reads data from")
    kept = image_folder(session.data_folder(store, "datasets") / "0123" / "pets")  # an uploaded zip's tree is the store's
    check_served_data(store, {"data": str(kept)})
    check_served_data(store, {"data": "digits"})


def test_a_worker_refuses_a_torchscript_base_its_operator_did_not_allow_even_when_the_job_says_it_is_trusted(store, tmp_path, monkeypatch):
    from ordercomp.jobs.kinds import run_baseline
    from ordercomp.models import checkpoints

    monkeypatch.delenv("ORDERCOMP_TORCHSCRIPT", raising=False)
    monkeypatch.setattr(checkpoints, "load_program", lambda *a, **k: pytest.fail("TorchScript was loaded"))
    (tmp_path / "tiny.ts").write_bytes(scripted_model())
    spec = {"model": str(tmp_path / "tiny.ts"), "data": "digits", "trust_torchscript": True, "device": "cpu"}
    with pytest.raises(ValueError, match="tiny.ts is TorchScript: .* this server's operator has not allowed that"):
        run_baseline(store, "job", spec, lambda event: None)


def test_torchscript_runs_only_when_the_user_ticks_that_they_trust_the_file(store, tmp_path, monkeypatch, spawned):
    from ordercomp.models import checkpoints

    monkeypatch.setenv("ORDERCOMP_TORCHSCRIPT", "allow")  # the operator's choice for this server
    loads = []
    real_load = checkpoints.load_program
    monkeypatch.setattr(checkpoints, "load_program", lambda path, **kwargs: loads.append(path) or real_load(path, **kwargs))
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("upload").run()
    trust = at.checkbox(key="w_trust_torchscript")
    assert trust.label == "I trust this file: run its TorchScript code" and trust.value is False
    assert any("it can read, write and delete files" in caption for caption in texts(at.main.caption))
    at.file_uploader(key="model_file").set_value(("tiny.ts", scripted_model(), "application/octet-stream")).run()
    assert plain(at.main.error[0].value).startswith("tiny.ts is TorchScript: loading it runs code stored in the file, so nothing "
                                                    "from it was run; tick 'I trust this file'")
    assert loads == [] and at.session_state[session.BASE]["model"] == "digits_cnn"
    at.checkbox(key="w_trust_torchscript").check().run()
    assert not at.main.error and "a TorchScript model (its code runs: you trust it)" in plain(at.main.success[0].value)
    choice = at.session_state[session.BASE]
    assert Path(choice["model"]).name == "tiny.ts" and choice["trust_torchscript"] is True and len(loads) == 1
    next(button for button in at.main.button if button.label.startswith("Measure")).click().run()
    assert store.get(spawned[-1])["spec"]["trust_torchscript"] is True


def test_an_uploaded_checkpoints_ema_weights_can_be_chosen_and_its_jobs_read_them(store, spawned):
    """Stop 44: the dashboard read only a checkpoint's training weights; a file without EMA weights says what it holds."""
    state = create_model("cnn_tiny", 10, 1).state_dict()
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("upload").run()
    untouched = io.BytesIO()
    torch.save(state, untouched)
    at.file_uploader(key="model_file").set_value(("plain.pt", untouched.getvalue(), "application/octet-stream")).run()
    at.main.selectbox(key="w_upload_arch").set_value("cnn_tiny").run()
    at.checkbox(key="w_ema").check().run()
    assert plain(at.main.error[0].value).startswith("plain.pt holds no EMA weights (a state dict of")
    timm = io.BytesIO()
    torch.save({"state_dict": state, "state_dict_ema": state}, timm)
    at.file_uploader(key="model_file").set_value(("last.pth.tar", timm.getvalue(), "application/octet-stream")).run()
    assert not at.main.error and "its EMA weights read" in plain(at.main.success[0].value)
    assert at.session_state[session.BASE]["ema"] is True
    next(button for button in at.main.button if button.label.startswith("Measure")).click().run()
    assert store.get(spawned[-1])["spec"]["ema"] is True


def test_a_registered_factory_is_offered_and_runs_a_baseline_and_a_typed_reference_is_never_imported(store, tmp_path,
                                                                                                       monkeypatch, spawned):
    """Issue 14: the dashboard offers only the model factories its operator registered; its workers import nothing else."""
    from tests.user_models.my_net import MyNet

    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("registered").run()
    assert f"${factories.MODELS_ENV}" in plain(at.main.info[0].value) and "never imports a path typed into it" in plain(at.main.info[0].value)
    monkeypatch.setenv(factories.MODELS_ENV, f"my_net={MY_NET}:MyNet")
    at.run()
    assert at.main.selectbox(key="w_factory").value == "my_net"
    at.text_input(key="w_model_args").set_value('{"width": 4}').run()
    weights = io.BytesIO()
    torch.save({"state_dict": {f"model.{k}": v for k, v in MyNet(width=4).state_dict().items()}}, weights)
    at.file_uploader(key="weights_file").set_value(("mine.ckpt", weights.getvalue(), "application/octet-stream")).run()
    choice = at.session_state[session.BASE]
    assert (choice["model"], choice["model_args"], Path(choice["weights"]).name) == ("my_net", {"width": 4}, "mine.ckpt")
    assert "my_net {\"width\": 4} with weights mine.ckpt on digits" in plain(at.main.success[0].value)
    next(button for button in at.main.button if button.label.startswith("Measure")).click().run()
    job = store.get(spawned[-1])
    assert job["spec"]["model"] == "my_net" and job["spec"]["weights"] == choice["weights"]
    assert run_job(store, job["id"]) == "done", store.log(job["id"])
    assert store.get(job["id"])["result"]["base"]["weights_notes"] == ["read its 'state_dict' entry", "stripped the prefix 'model.'"]
    at.run()
    assert any("Measured on cpu" in caption or "Measured on cuda" in caption for caption in texts(at.main.caption))

    marker = tmp_path / "imported"
    typed = tmp_path / "typed.py"
    typed.write_text(f"open({str(marker)!r}, 'w').close()\nfrom torch import nn\nclass Net(nn.Linear):\n    pass\n")
    crafted = AppTest.from_file(APP, default_timeout=180)  # a session holding a typed reference, as a crafted one could
    crafted.session_state["w_model_source"], crafted.session_state["w_factory"] = "registered", f"{typed}:Net"
    crafted.run()
    assert not crafted.exception and "is not a model factory registered on this server (my_net)" in plain(crafted.main.error[0].value)
    assert session.BASE not in crafted.session_state  # nothing was chosen from it
    job = store.create(BaselineSpec(model=f"{typed}:Net", device="cpu"), "baseline")  # as a crafted store would hold it
    assert run_job(store, job) == "failed"
    assert "is not a model factory registered on this server" in store.get(job)["error"] and not marker.exists()


def test_a_registered_factorys_weights_without_ema_weights_are_refused_on_the_page(store, monkeypatch, spawned):
    """Stop 44: 'EMA weights' ticked for a registered factory's weights that hold none was refused only by the
    baseline job, after it was launched; the page now reads the file (never the model) and says so at once."""
    from tests.user_models.my_net import MyNet

    monkeypatch.setenv(factories.MODELS_ENV, f"my_net={MY_NET}:MyNet")
    at = app("1_model_and_data")
    at.radio(key="w_model_source").set_value("registered").run()
    at.text_input(key="w_model_args").set_value('{"width": 4}').run()
    state = MyNet(width=4).state_dict()
    plain_file, lightning_ema = io.BytesIO(), io.BytesIO()
    torch.save(state, plain_file)
    torch.save({"state_dict": {**{f"model.{k}": v for k, v in state.items()},
                               **{f"model_ema.module.{k}": v for k, v in state.items()}}}, lightning_ema)
    at.checkbox(key="w_weights_ema").check().run()
    at.file_uploader(key="weights_file").set_value(("plain.pt", plain_file.getvalue(), "application/octet-stream")).run()
    [error] = texts(at.main.error)
    assert error.startswith(f"plain.pt holds no EMA weights (a state dict of {len(state)} tensors)") and "without --ema" in error
    assert at.session_state[session.BASE].get("weights") is None  # explorations still start from the last usable choice
    assert "not usable yet" in plain(at.main.warning[0].value)
    at.file_uploader(key="weights_file").set_value(("ema.ckpt", lightning_ema.getvalue(), "application/octet-stream")).run()
    assert not at.main.error
    assert f"Weights: ema.ckpt: a state dict of {2 * len(state)} tensors" in " ".join(texts(at.main.caption))
    choice = at.session_state[session.BASE]
    assert Path(choice["weights"]).name == "ema.ckpt" and choice["ema"] is True


def test_the_input_size_box_says_what_0_gives_an_image_tree_its_own_size_being_another(store, tmp_path):
    """Stop 44's walk: '0: the data's own, 8 for digits, 32 otherwise' read as 'my 16-px images stay 16 px'; an ImageFolder
    tree of 4-px images is read at 32 px with 0."""
    from ordercomp.data.datasets import load_data

    tree = tmp_path / "pets"
    for index in range(6):
        for kind in ("cat", "dog"):
            (tree / kind).mkdir(parents=True, exist_ok=True)
            (tree / kind / f"{index}.png").write_bytes(png())
    label = app("1_model_and_data").number_input(key="w_input_size").label
    assert label.startswith(f"Input size in pixels (0: {load_data('digits').input_size} for digits; "
                            f"{load_data(str(tree)).input_size} for a CIFAR folder or an ImageFolder tree, its images resized to it")
    assert "the data's own" not in label and load_data(str(tree)).input_size != 4


def test_an_uploaded_zip_is_extracted_safely(store, tmp_path):
    at = app("1_model_and_data")
    at.radio(key="w_data_source").set_value("zip").run()
    at.file_uploader(key="data_zip").set_value(("evil.zip", zip_of({"../escape/a.png": png()}), "application/zip")).run()
    assert "unsafe path '../escape/a.png'" in plain(at.main.error[0].value)
    assert not (store.path.parent / "escape").exists()
    at.file_uploader(key="data_zip").set_value(("bomb.zip", image_bomb_zip(), "application/zip")).run()
    assert len(at.main.error) == 1 and "cat/bomb.png is 6000x6000 pixels in 105,048 bytes" in plain(at.main.error[0].value)
    extracted = session.data_folder(store, "datasets")
    assert not (extracted.exists() and any(extracted.iterdir()))
    at.file_uploader(key="data_zip").set_value(("pets.zip", zip_of({"pets/cat/1.png": png(), "pets/dog/1.png": png()}),
                                                "application/zip")).run()
    assert not at.main.error
    data = Path(at.session_state[session.BASE]["data"])
    assert data.name == "pets" and sorted(p.name for p in data.iterdir()) == ["cat", "dog"]


def test_zip_limits_and_links_are_refused(tmp_path, monkeypatch):
    link = zipfile.ZipInfo("cat/link.png")
    link.external_attr = 0o120777 << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(DataError, match="holds a link"):
        uploads.extract_image_zip(buffer.getvalue(), tmp_path)
    with pytest.raises(DataError, match="not a zip archive"):
        uploads.extract_image_zip(b"plain bytes", tmp_path)
    monkeypatch.setattr(uploads, "ZIP_MAX_FILES", 1)
    with pytest.raises(DataError, match="the upload holds more than 1 members: zip the dataset folder"):
        uploads.extract_image_zip(zip_of({"a/1.png": png(), "b/1.png": png()}), tmp_path)
    assert list(tmp_path.iterdir()) == []


# --- Methods and Runs ---------------------------------------------------------------------------

def test_methods_page_builds_widgets_from_the_registry_and_counts_applications(store, finished):
    at = app("2_methods")
    assert at.multiselect(key="w_methods").value == ["distill", "prune", "quantize", "early_exit"]
    assert at.slider(key="w_prune.ratio").label == "**ratio** (strength)"
    assert at.slider(key="w_prune.ratio").value == METHODS["prune"].default_config().ratio
    assert at.selectbox(key="w_quantize.weight_bits").value == METHODS["quantize"].default_config().weight_bits
    assert at.selectbox(key="w_quantize.weight_bits").options == ["2", "4", "8"]
    count = lambda: next(metric for metric in at.main.metric if metric.label == "Method applications").value
    assert count() == "124"  # the default search: at most 2.5 x 16 x 3 seeds, the race's extra seeds included, + the chain's 4
    [where] = [plain(caption.value) for caption in at.main.caption if plain(caption.value).startswith("surrogate: ")]
    assert where.startswith("surrogate: at most 52 on the first seed and the pairwise plan's 16 on each of the 2 others, up "
                            "to 36 to measure the search's best orders on the other seeds and race them on extra seeds, + 4 "
                            "to apply the chain. Pairwise needs n + n(n−1) = 16 per seed")
    at.selectbox(key="w_search").set_value("pairwise").run()
    assert count() == "52"
    at.multiselect(key="w_methods").set_value(["prune", "quantize"]).run()
    at.number_input(key="w_seeds").set_value(2).run()
    applications = next(metric for metric in at.main.metric if metric.label == "Method applications")
    assert applications.value == "10"  # (2 singles + 2 ordered pairs) x 2 seeds + the chain's 2
    # the default sample, not yet run in this store: the guess goes by its size (MACs x images x epochs)
    card = sample_card("digits_cnn")
    guess = card["metrics"]["macs"] * card["data"]["train"] * Budget().epochs * 3 * estimate.CPU_SECONDS_PER_MAC
    assert f"{guess:.1f} s per application, a guess from the sample's size (no step of it measured here yet)" in plain(at.main.caption[-1].value)
    at.session_state[session.BASE] = {"model": "cnn_tiny", "architecture": None, "data": "digits", "input_size": None}
    at.run()
    assert f"{estimate.DEFAULT_STEP_SECONDS:.1f} s per application, a default guess" in plain(at.main.caption[-1].value)
    # its baseline measured here: the guess goes by the measured MACs and training images, not the default
    baseline = store.create(plan.baseline_spec(at.session_state[session.BASE]), "baseline")
    store.set_status(baseline, "done", result={"metrics": {"macs": 2e6}, "data": {"train": 1000}})
    at.run()
    guess = 2e6 * 1000 * Budget().epochs * 3 * estimate.CPU_SECONDS_PER_MAC
    assert f"{guess:.1f} s per application, a guess from the base's size and training images, measured here" in plain(at.main.caption[-1].value)
    applications = int(count())
    at.switch_page(PAGES["3_runs"]).run()  # the Runs page's summary uses the same estimate
    assert f"about {duration(applications * guess)}, a guess from the base's size" in " ".join(texts(at.main.caption))
    at.switch_page(PAGES["2_methods"]).run()
    spec = finished["record"]["spec"]  # a base with finished steps in the store: the estimate goes by them
    at.session_state[session.BASE] = {key: spec[key] for key in ("model", "architecture", "data", "input_size")}
    at.run()
    mean, count = store.step_seconds(spec["model"], "digits")
    assert f"{mean:.1f} s per application, from {count} steps measured here" in plain(at.main.caption[-1].value)
    applications = int(next(metric for metric in at.main.metric if metric.label == "Method applications").value)
    assert next(metric for metric in at.main.metric if metric.label == "Estimated time").value == "about " + duration(applications * mean)


def test_methods_their_settings_and_learning_rate_follow_the_chosen_base(store, spawned):
    """A ViT sample chosen on Model & data brought the CNNs' methods (no token merging), learning rate (2e-3, where its
    card fine-tunes at 2e-4) and student (width 0.6, where its card's keeps the width and drops half the blocks) to
    Methods and to the exploration launched from Runs."""
    vit = {**session.DEFAULT_BASE, "model": "digits32_vit"}
    own = (list(default_methods("digits32_vit")), default_budget("digits32_vit").lr)
    student = lambda at: (at.slider(key="w_distill.width").value, at.number_input(key="w_distill.depth").value)
    at = app("3_runs")  # straight to Runs: the Methods page never opened
    at.session_state[session.BASE] = vit
    at.run()
    next(button for button in at.main.button if button.label == "Launch exploration").click().run()
    job = store.get(spawned[0])
    assert (job["spec"]["methods"], job["spec"]["budget"]["lr"]) == own and "token_merge" in own[0]
    assert job["spec"]["settings"] == {"distill": {"width": 1.0, "depth": 0.5}}
    at = app("2_methods")
    assert (at.multiselect(key="w_methods").value, at.number_input(key="w_lr").value) != own and student(at) == (0.6, 1.0)
    at.session_state[session.BASE] = vit
    at.run()
    assert (at.multiselect(key="w_methods").value, at.number_input(key="w_lr").value) == own and student(at) == (1.0, 0.5)
    assert "the base changed since they were set" in plain(at.main.info[0].value)
    at.slider(key="w_distill.width").set_value(0.6).run()  # the engine's default, not this base's: the user's choice
    assert plan.plan_from_state(at.session_state).settings["distill"] == {"width": 0.6, "depth": 0.5}
    at.slider(key="w_distill.width").set_value(1.0).run()
    at.multiselect(key="w_methods").set_value(["prune", "token_merge"]).run()
    at.run()  # the same base: the user's choice stays
    assert at.multiselect(key="w_methods").value == ["prune", "token_merge"] and not at.main.info
    at.session_state[session.BASE] = session.DEFAULT_BASE
    at.run()
    assert at.multiselect(key="w_methods").value == list(DEFAULT_METHODS) and at.number_input(key="w_lr").value == Budget().lr
    assert student(at) == (0.6, 1.0)


def test_an_impossible_plan_is_an_error_on_methods_and_runs(store):
    at = app("2_methods")
    at.multiselect(key="w_methods").set_value(["distill", "prune"]).run()
    at.number_input(key="w_distill.temperature").set_value(0.0).run()
    assert texts(at.main.error) == ["This plan cannot run: temperature must be in (0.0, 100.0], got 0.0"]
    at.multiselect(key="w_methods").set_value(["prune"]).run()
    assert "choose at least two different methods" in plain(at.main.error[0].value)
    at.switch_page(PAGES["3_runs"]).run()
    assert "choose at least two different methods" in plain(at.main.error[0].value)
    assert not [button for button in at.main.button if button.label == "Launch exploration"]


def test_choices_on_methods_flow_to_runs_and_launch_a_job_kept_in_the_url(store, spawned):
    at = app("2_methods")
    at.multiselect(key="w_methods").set_value(["quantize", "prune"]).run()
    at.slider(key="w_prune.ratio").set_value(0.3).run()
    at.number_input(key="w_seeds").set_value(2).run()
    at.number_input(key="w_epochs").set_value(0.5).run()
    at.number_input(key="w_settle").set_value(40).run()
    assert any("up to 40 more to settle an open choice on more seeds, + 2 to apply the chain" in plain(c.value) for c in at.main.caption)
    at.switch_page(PAGES["3_runs"]).run()
    summary = plain(at.main.markdown[0].value)
    assert "methods **quantize, prune**" in summary and "**2 seeds**" in summary and "0.5 epochs of fine-tuning per step" in summary
    # (2 singles + 2 ordered pairs, both whole orders) x 2 seeds, the race's extra seeds up to 2.5 x 4 x 2, the settling's
    # 40, + the chain's 2
    assert plain(at.main.caption[0].value).startswith("Settings: prune: ratio 0.3. At most 62 method applications, about ")
    next(button for button in at.main.button if button.label == "Launch exploration").click().run()
    job = store.get(spawned[0])
    assert (job["kind"], job["status"]) == ("explore", "queued")
    assert (job["spec"]["methods"], job["spec"]["seeds"], job["spec"]["settings"]) == (["quantize", "prune"], 2, {"prune": {"ratio": 0.3}})
    assert job["spec"]["settle"] == 40
    assert at.query_params["job"] == [spawned[0]] or at.query_params["job"] == spawned[0]
    assert at.session_state["job"] == spawned[0]
    at.switch_page(PAGES["2_methods"]).run()
    assert at.multiselect(key="w_methods").value == ["quantize", "prune"] and at.slider(key="w_prune.ratio").value == 0.3


def test_runs_page_shows_the_finished_run_from_the_url_with_pairs_log_and_list(store, finished):
    at = app("3_runs", job=finished["exploration"])
    assert f"Run {finished['exploration']}" in texts(at.main.subheader)
    assert any("**done**" in plain(markdown.value) for markdown in at.main.markdown)
    assert at.main.get("progress")[0].value == 100
    pairs = at.main.dataframe[0].value
    assert list(pairs["applications"]) == ["prune alone", "quantize alone", "prune / quantize", "extra seeds for the contenders (race)"]
    raced = len([s for s in finished["record"]["steps"] if s["seed"] >= 1])  # the spec's seed is 0
    assert list(pairs["status"]) == ["ok"] * 4 and list(pairs["done"]) == [1, 1, 2, raced] and raced > 0
    chain = " → ".join(finished["record"]["chain"])
    assert plain(at.main.success[0].value) == f"Recommended order: **{chain}**"
    assert "prune → quantize (seed 0): ok" in at.main.code[0].value
    assert finished["exploration"] in list(at.main.dataframe[1].value["id"])
    assert at.main.selectbox[0].value == finished["exploration"]


def test_the_run_picker_names_no_status_that_the_live_table_beside_it_would_contradict(store, finished, spawned):
    """Stop 44's walk: the picker, drawn once when the run was launched, read '... · queued' under a live panel and table
    saying 'running' (and went on saying it) until something reran the whole page."""
    at = app("3_runs")
    next(button for button in at.main.button if button.label == "Launch exploration").click().run()
    store.set_status(spawned[0], "running")
    picker = next(box for box in at.main.selectbox if box.label == "Open a run")
    assert picker.value == spawned[0] and not [option for option in picker.options if option.endswith(("queued", "running", "done"))]
    assert f"{finished['exploration']} · prune, quantize · cnn_tiny.pt on digits" in picker.options


def test_a_failed_pair_shows_its_reason_and_cancel_and_resume_act_on_the_store(store, spawned):
    spec = ExploreSpec(model="digits_cnn", methods=("prune", "lowrank"), seeds=1)
    job = store.create(spec)
    store.record_step(job, {"chain": ["prune"], "seed": 0, "status": "ok", "reason": None, "metrics": {"accuracy": 90.0}, "seconds": 1.0})
    store.record_step(job, {"chain": ["prune", "lowrank"], "seed": 0, "status": "incompatible",
                            "reason": "no layer gets cheaper at rank ratio 0.99", "metrics": None, "seconds": 0.1})
    store.set_progress(job, "lowrank: fine-tune", 0.4, done=2, total=4)
    at = app("3_runs", job=job)
    assert texts(at.main.warning) == ["prune / lowrank: incompatible: no layer gets cheaper at rank ratio 0.99"]
    assert [p.value for p in at.main.get("progress")][-2:] == [50, 40]
    next(button for button in at.main.button if button.label == "Cancel").click().run()
    assert store.get(job)["status"] == "cancelling"
    store.set_status(job, "failed", error="RuntimeError: out of memory")
    at.run()
    assert "The job failed: RuntimeError: out of memory" in texts(at.main.error)
    next(button for button in at.main.button if button.label == "Resume").click().run()
    assert store.get(job)["status"] == "queued" and spawned[-1] == job and is_alive(store.get(job))


def step_row(chain, seed, status="ok"):
    return {"chain": list(chain), "seed": seed, "status": status, "reason": None if status == "ok" else "why", "metrics": None}


def test_pair_progress_says_running_for_a_started_group_and_counts_the_search_apart():
    spec = ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=3).to_dict()
    steps = [step_row(("prune",), 0), step_row(("prune",), 1)] + [step_row(c, 0) for c in (("quantize",), ("early_exit",))]
    steps += [step_row(c, seed) for c in (("prune", "quantize"), ("quantize", "prune")) for seed in range(3)]
    steps += [step_row(("prune", "quantize", "early_exit"), 0)]
    rows = {row["applications"]: row for row in views.pair_progress(spec, steps)}
    # two of three seeds done: running (main said "waiting" at 66.67 %), none done: waiting, all: ok
    assert (rows["prune alone"]["status"], rows["prune alone"]["done"], rows["prune alone"]["of"]) == ("running", 2, 3)
    assert rows["prune / early_exit"]["status"] == "waiting" and rows["prune / quantize"]["status"] == "ok"
    # the whole orders of the search have a row of their own: on the first seed, every order (15 applications) - 9
    assert (rows["whole orders (search)"]["done"], rows["whole orders (search)"]["of"], rows["whole orders (search)"]["status"]) == (1, 6, "running")
    # the best orders on seeds 1-2 and the race's extra seeds (3, 4, ... beyond the spec's 0-2) have a row of their
    # own, up to the budget's 2.5 x 9 x 3 = 67 - 15 (the search) - 2 x 9 (the pairwise plan on seeds 1-2) = 34
    later = "the best orders on the other seeds (confirmation), extra seeds for the contenders (race)"
    assert (rows[later]["done"], rows[later]["of"]) == (0, 34)
    steps += [step_row(("prune", "quantize", "early_exit"), 1)]
    steps += [step_row(prefix, 3) for prefix in (("prune",), ("prune", "quantize"), ("prune", "quantize", "early_exit"))]
    rows = {row["applications"]: row for row in views.pair_progress(spec, steps)}
    assert rows["prune alone"]["done"] == 2 and rows["whole orders (search)"]["done"] == 1  # seeds 1 and 3 are not theirs
    assert (rows[later]["done"], rows[later]["status"]) == (4, "running")
    done = {row["applications"]: row["status"] for row in views.pair_progress(spec, steps, finished=True)}
    assert done["whole orders (search)"] == "ok" and done["prune / early_exit"] == "not needed" and done[later] == "ok"


@pytest.mark.parametrize("status, done, total, text", [
    ("running", 24, 100, "24 of at most 100 method applications finished"),
    ("done", 72, 100, "72 method applications finished: the search found its order within its budget of 100"),
    ("done", 100, 100, "100 of 100 method applications finished")])
def test_progress_reads_against_the_planned_total(status, done, total, text):
    assert views.progress_text({"status": status, "done": done, "total": total, "kind": "explore"}) == text


def test_waiting_runs_show_their_place_in_the_queue_cancel_at_once_and_start_as_the_limit_rises(store, spawned):
    set_worker_limit(store, 1)
    spec = ExploreSpec(model="digits_cnn", methods=("prune", "quantize"), seeds=1)
    running = start_job(store, spec)
    first, second = start_job(store, spec), start_job(store, spec)
    assert spawned == [running]
    at = app("3_runs", job=second)
    assert "2nd in the queue: it starts when a worker is free; 1 worker runs at a time (the job store's setting)." in texts(at.main.caption)
    table = at.main.dataframe[-1].value
    queue = dict(zip(table["id"], table["queue"]))
    assert {job_id: place for job_id, place in queue.items() if place} == {second: "2nd", first: "1st"}
    assert set(queue.values()) == {"", "1st", "2nd"}  # a job not waiting has an empty cell, not "None"
    next(button for button in at.main.button if button.label == "Cancel").click().run()
    assert store.get(second)["status"] == "cancelled" and spawned == [running]
    at.number_input[-1].set_value(2).run()
    assert store.setting("max_workers") == "2" and spawned == [running, first]


@pytest.mark.parametrize("damage", ["corrupt", "read-only"])
def test_a_corrupt_or_read_only_job_store_is_one_line(tmp_path, monkeypatch, damage, read_only):
    path = tmp_path / "jobs.sqlite"
    if damage == "corrupt":
        path.write_bytes(b"this is not a database" * 100)
    else:
        JobStore(path)
        read_only(path)
    monkeypatch.setenv("ORDERCOMP_STORE", str(path))
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    [error] = texts(at.error)
    assert error.startswith(f"the job store {path} cannot be used (") and "\n" not in error
    assert error.endswith("make it a writable SQLite file, or set ORDERCOMP_STORE to a new path")


def test_a_job_store_damaged_while_in_use_is_one_line(tmp_path, monkeypatch, damage_pages):
    store = JobStore(tmp_path / "jobs.sqlite")
    for _ in range(20):
        store.append_log(store.create(ExploreSpec(methods=("prune", "quantize"))), "a log line " * 40)
    damage_pages(store.path)  # after the store was opened: its open-time check passed
    monkeypatch.setattr(session, "open_store", lambda: store)
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception
    [error] = texts(at.error)
    assert error.startswith(f"the job store {store.path} cannot be used (database disk image is malformed): ") and "\n" not in error


INJECTION = "[pwn](http://evil.example/x) **loud** :red[red] $x^2$ _it_ `tick`"


def shown_as_typed(markdown: str, text: str = INJECTION) -> bool:
    """`text` appears in `markdown` escaped (so it renders as typed) and nowhere unescaped."""
    return formatting.md(text) in markdown and text not in markdown


# Streamlit's markdown (remark-gfm, mdast-util-gfm-autolink-literal) links bare URLs, www. names and e-mail addresses in a
# pass over the parsed text, after backslash escapes are undone: these are its patterns, from the frontend bundle
AUTOLINK_LITERALS = (re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I),
                     re.compile(r"(?<![^\s\W])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"))


@pytest.mark.parametrize("text", ["log in again at https://evil.example/login", "see http://www.evil.example", "www.evil.example",
                                  "WWW.Evil.Example/x", "write to help@evil.example", INJECTION])
def test_user_text_never_becomes_a_link_not_even_a_bare_url(text):
    """md() escapes markdown links, but a bare URL, www. name or e-mail address would still be linked by the autolink
    pass that runs on the unescaped text: md() breaks them with an invisible word joiner, and the text reads the same."""
    shown = plain(formatting.md(text))
    assert not any(pattern.search(shown) for pattern in AUTOLINK_LITERALS), shown
    assert shown.replace("\u2060", "") == text


def test_text_from_the_url_is_shown_as_typed_not_as_markdown(store):
    at = app("4_order", job=INJECTION)
    assert shown_as_typed(at.main.info[0].value)
    at = app("3_runs", job=INJECTION)
    assert f"Run {formatting.md(INJECTION)}" in [subheader.value for subheader in at.main.subheader]
    assert shown_as_typed(at.main.error[0].value)


def test_names_and_errors_a_user_supplied_are_shown_as_typed(store, tmp_path, monkeypatch):
    monkeypatch.setenv("ORDERCOMP_DATA_ROOTS", str(tmp_path))
    folder = tmp_path / INJECTION.replace("/", "|")
    for name in ("cat", "dog"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(folder / name / "1.png")
    at = app("1_model_and_data")
    at.radio(key="w_data_source").set_value("folder").run()
    at.text_input(key="w_data_path").set_value(str(folder) + "/nowhere").run()
    assert shown_as_typed(at.main.error[0].value, str(folder))
    at.text_input(key="w_data_path").set_value(str(folder)).run()
    assert shown_as_typed(at.main.success[0].value, folder.name)
    at.run()  # the sidebar was drawn before the page chose the data
    assert shown_as_typed(at.sidebar.caption[0].value, folder.name)
    job = store.create(ExploreSpec(model="digits_cnn", methods=("prune", "quantize"), seeds=1))
    store.set_status(job, "failed", error=f"ValueError: {INJECTION}")
    at = app("3_runs", job=job)
    assert shown_as_typed(next(error.value for error in at.main.error if error.value.startswith("The job failed")))


# --- Order, Trade-offs, Export ------------------------------------------------------------------

def test_order_page_draws_the_matrix_graph_orders_and_exhaustive_rank(store, finished):
    record = finished["record"]
    at = app("4_order", job=finished["exploration"])
    assert plain(at.main.markdown[0].value) == f"### Recommended order: {' → '.join(record['chain'])}"
    verdict = record["search"]["verdict"]  # how sure the search is, in the words of the CLI and the report
    assert plain(at.main.info[0].value).startswith(f"The recommended order is the best of the {verdict['evaluated']} evaluated")
    assert "method applications were spent" in plain(at.main.info[0].value)
    assert charts(at) == 1 and charts(at, "graphviz_chart") == 1
    assert "digraph precedence" in at.get("graphviz_chart")[0].proto.spec
    assert list(at.main.dataframe[0].value["pair"]) == ["prune / quantize"]
    assert len(at.main.dataframe[1].value) == len(record["valid_chains"])
    assert next(metric for metric in at.main.metric if metric.label == "Rank of the recommended chain").value == f"{record['exhaustive']['rank']} of 2"
    assert len(at.main.dataframe[2].value) == 2


@pytest.mark.parametrize("screen, copies, caption, expander", [
    (None, 3, "the search ran 6 orders on the first seed", "The 6 orders the search ran on the first seed"),
    (0.25, 2, "The search screened 4 orders at 0.25 of the epochs", "The 4 orders screened at 0.25 of the epochs")])
def test_order_page_lists_the_orders_a_search_ran_apart_from_those_it_measured_in_full(store, finished, screen, copies, caption, expander):
    """A one-seed search's orders on the first seed, or a --screen run's at a fraction of the epochs (stop 31 listed
    only the first: a screen's page showed the orders it confirmed, not the ones it ran to choose them)."""
    record = copy.deepcopy(finished["record"])
    record["search"]["screen"] = screen
    record["search"]["screened_orders"] = [dict(row, seeds=1) for row in record["search"]["orders"]] * copies
    job = store.create(ExploreSpec.from_dict(record["spec"]))
    store.set_status(job, "done", result=record)
    at = app("4_order", job=job)
    assert any(caption in plain(shown.value) for shown in at.main.caption)
    assert at.main.expander[0].label == expander
    assert len(at.main.expander[0].dataframe[0].value) == 2 * copies


def open_choice(store, finished, points: float) -> str:
    """A done run whose verdict could not separate its two orders: the other could be `points` better."""
    record = copy.deepcopy(finished["record"])
    other = next(row["chain"] for row in record["search"]["orders"] if row["chain"] != record["chain"])
    record["search"]["verdict"] |= {"chain": record["chain"], "separated": False, "inseparable": [other], "margin": 0.5,
                                    "behind_at_most": {"chain": other, "points": points, "lower": 0.4, "seeds": 3}}
    job = store.create(ExploreSpec.from_dict(record["spec"]))
    store.set_status(job, "done", result=record)
    return job


def test_an_open_choice_is_settled_by_a_new_run_that_races_its_orders_on_more_seeds(store, finished, spawned):
    job = open_choice(store, finished, points=3.0)
    at = app("4_order", job=job)
    assert "so the choice among them is open" in plain(at.main.info[0].value)
    button = next(button for button in at.main.button if button.label.startswith("Settle it"))
    assert button.label.endswith("up to 8 more seeds (a settle budget of 32 method applications)")  # both orders: 4 prefixes a seed
    button.click().run()
    settling = store.get(spawned[0])
    assert settling["spec"] == ExploreSpec.from_dict(finished["record"]["spec"] | {"settle": 32}).to_dict()
    assert at.session_state["job"] == spawned[0] and at.title[0].value == "Runs"
    picker = next(box for box in at.main.selectbox if box.label == "Open a run")
    assert any(option.startswith(f"{spawned[0]} · prune, quantize (settle 32) · ") for option in picker.options)


def test_a_sound_choice_offers_no_settling(store, finished):
    at = app("4_order", job=open_choice(store, finished, points=0.3))
    assert "sound choice" in plain(at.main.info[0].value)
    assert not [button for button in at.main.button if button.label.startswith("Settle it")]


def test_a_step_cache_that_stopped_being_written_during_the_run_is_said_on_the_runs_and_order_pages(store, finished):
    """Stop 43 made a full disk under the step cache stop the cache, not the run, and the CLI's summary say so; the
    dashboard, whose jobs all share the store's cache, said nothing, so a resumed or settled run silently recomputed."""
    said = ("The step cache stopped being written during the run (No space left on device): these results are complete, "
            "but a rerun computes again the steps that were not cached; free space in the cache folder")
    record = copy.deepcopy(finished["record"])
    record["applications"]["cache_stopped"] = "No space left on device"
    job = store.create(ExploreSpec.from_dict(record["spec"]))
    store.set_status(job, "done", result=record)
    for page in ("3_runs", "4_order"):
        assert texts(app(page, job=job).main.warning) == [said], page
        assert not app(page, job=finished["exploration"]).main.warning, page


def test_a_running_job_whose_step_cache_stops_says_so_in_its_log_before_it_ends(store, finished, monkeypatch):
    """A job cancelled after its cache stopped had no result to say it, and its resume computed every step again
    unannounced: the log, shown on the Runs page while it runs, says so after the step whose write failed."""
    import errno

    from ordercomp.exploration import cache

    written, real = [], cache.write_atomically

    def filling(path, fill):
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real(path, fill)

    monkeypatch.setattr(cache, "write_atomically", filling)
    spec = ExploreSpec.from_dict(base_in(store, finished) | {"methods": ["prune", "sparsify"], "exhaustive": False,
                                                                  "ship": None})
    job = store.create(spec)
    assert run_job(store, job) == "done", store.log(job)
    lines = [line["message"] for line in store.log(job)]
    said = [index for index, line in enumerate(lines) if line.startswith("The step cache stopped being written")]
    assert len(said) == 1 and lines[said[0]] == ("The step cache stopped being written (No space left on device): the run goes "
                                                 "on, but the steps from here on are not cached, so a resume or a rerun "
                                                 "computes them again; free space in the cache folder")
    steps = [index for index, line in enumerate(lines) if " (seed " in line]
    assert steps[0] < said[0] < steps[-1]  # while the steps still ran, not only once the run was over
    assert len(written) == 1


def test_a_run_served_from_the_step_cache_says_so_step_by_step_in_its_log(store, finished):
    """Stop 44's walk: after a resume the log listed the 53 finished steps again as 'ok in 0.4 s', the seconds they had
    taken to compute, as if it had run them again."""
    job = store.create(ExploreSpec.from_dict(base_in(store, finished) | {"ship": None}))  # every step already ran
    assert run_job(store, job) == "done", store.log(job)
    lines = [line["message"] for line in store.log(job)]
    steps = [line for line in lines[:lines.index(next(line for line in lines if line.startswith("applying the chain")))]
             if " (seed " in line]
    assert steps and all(line.endswith(" s (from the cache)") for line in steps), steps
    computed = [line["message"] for line in store.log(finished["exploration"]) if " (seed " in line["message"]]
    assert computed and not [line for line in computed if "from the cache" in line]
    # the Order page's run line: its wall time is this run's, beside how many steps came from the cache
    record = store.get(job)["result"]
    hits = record["applications"]["cache_hits"]
    assert hits == len(record["steps"]) and hits > 0
    caption = lambda job_id: plain(next(c.value for c in app("4_order", job_id).main.caption if c.value.startswith("Run ")))
    assert f" method applications ({hits} found in the step cache) · {duration(record['seconds'])} of wall time" in caption(job)
    assert "found in the step cache" not in caption(finished["exploration"])


def test_result_pages_say_what_to_do_without_a_finished_run(store, spawned):
    for page in ("4_order", "5_tradeoffs", "6_export"):
        at = app(page)
        assert plain(at.main.info[0].value).startswith("No exploration is open") and not at.get("plotly_chart")
    queued = store.create(ExploreSpec(model="digits_cnn", methods=("prune", "quantize")))
    assert "is queued: its results appear here once it is done" in plain(app("4_order", job=queued).info[0].value)
    assert "There is no run feedc0ffee00" in plain(app("5_tradeoffs", job="feedc0ffee00").info[0].value)


def test_tradeoffs_page_draws_three_tradeoffs_and_the_chain(store, finished):
    at = app("5_tradeoffs", job=finished["exploration"])
    assert charts(at) == 4
    titles = [chart.proto.spec for chart in at.get("plotly_chart")]
    for title in ("Accuracy against BitOps", "Accuracy against model size", "Accuracy against latency", "The chain step by step"):
        assert any(title in spec for spec in titles), title
    # the exploration measured its shipped file (float ONNX, the default): the headline is that file's, in its runtime
    headline = {metric.label: metric.value for metric in at.main.metric}
    assert set(headline) == {"Shipped file size", "Speed, batch 1", "Speed, batch 32", "Accuracy (test)", "BitOps"}
    assert headline["BitOps"].endswith("× fewer") and headline["Speed, batch 1"].endswith(("faster", "slower"))
    shipped = finished["record"]["shipped"]
    assert shipped["format"] == "onnx" and headline["Accuracy (test)"] == f"{shipped['accuracy']:.2f} %"
    assert list(at.main.dataframe[0].value["step"])[0] == "base"
    # the charts and the table below the headline hold the counted storage and the eager simulation, and say so: only
    # latency was captioned, and "size KiB 14.6" stood under "Shipped file size 124.7 KiB" for the same chain
    assert STEP_FIGURES in texts(at.main.caption)
    assert {"counted KiB", "eager ms, b=1", "eager ms, b=32"} <= set(at.main.dataframe[0].value.columns)


def test_record_text_in_the_order_and_tradeoffs_charts_reads_as_written(store, finished):
    """The pages draw the report's charts (report/charts.py), and with them its escaping: a method name holding a link
    is drawn as text in the pair matrix, the trade-offs' hover text and the chain step by step."""
    record = json.loads(json.dumps(finished["record"]).replace('"quantize"', json.dumps(MARKUP)))
    job = store.create(ExploreSpec.from_dict(finished["record"]["spec"]))
    store.set_status(job, "done", result=record)
    for page, drawn in (("4_order", 1), ("5_tradeoffs", 4)):
        specs = [json.loads(chart.proto.spec) for chart in app(page, job=job).get("plotly_chart")]
        assert len(specs) == drawn and not [text for spec in specs for text in figure_texts(spec) if MARKUP in text], page
        assert all(any(html.escape(MARKUP, quote=False) in text for text in figure_texts(spec)) for spec in specs), page


def test_export_page_offers_reports_and_the_finished_export_files(store, finished):
    at = app("6_export", job=finished["exploration"])
    labels = [button.label for button in at.main.get("download_button")]
    assert labels[:2] == ["Meeting report (HTML)", "Results CSV (every step)"]
    assert labels[2:] == ["state dict", "TorchScript", "manifest", "All as a zip"]
    assert at.multiselect(key=f"w_export_order_{finished['exploration']}").value == finished["record"]["chain"]
    assert plain(at.main.success[-1].value) == "All 2 files load back, run, match their checksums and pass their checks on the whole test split."
    checks = [plain(check) for check in at.main.table[0].value["check"]]  # the verdict is these rows
    assert checks[0] == "not checked" and checks[1].startswith("check against PyTorch on ") and " passed: largest logit difference " in checks[1]


BUSY = {"start": 7.6, "end": 7.8, "logical_cores": 2}  # an audit's machine: other jobs on its 2 cores
CAVEAT = ("Timed while the machine was busy (load average 7.8 on 2 logical cores): absolute times may read several times "
          "slower than on an idle machine; the speed-ups against the base were timed side by side, under the same load.")


def with_load(store: JobStore, job_id: str, load: dict | None, timed: Callable[[dict], list[dict]]) -> None:
    """The job's result with `load` (None: none, as recorded before loads were kept) in every timing `timed` picks."""
    result = store.get(job_id)["result"]
    for measured in timed(result):
        measured.pop("load", None)
        measured.update({"load": load} if load else {})
    store.set_status(job_id, "done", result=result)


def every_step(result: dict) -> list[dict]:
    return result["steps"] + result["chain_steps"]


def test_the_tradeoffs_headline_says_when_its_file_was_timed_on_a_busy_machine(store, finished):
    """The audit's shipped files read many times slower than idle, timed at a load of 7-8 on 2 cores, with no word."""
    with_load(store, finished["exploration"], None, every_step)  # the steps' timings, as this machine's load left them: none
    for load, said in ((BUSY, True), (None, False)):
        with_load(store, finished["exploration"], load, lambda result: [result["shipped"]])
        captions = texts(app("5_tradeoffs", job=finished["exploration"]).main.caption)
        assert [caption for caption in captions if "machine was busy" in caption] == ([CAVEAT] if said else [])  # once


def test_step_latencies_timed_on_a_busy_machine_say_so_on_the_order_and_tradeoffs_pages(store, finished):
    """The chain's steps, and under the latency objectives every step, are timed; their milliseconds stood in the
    trade-offs, the chain table and the latency objectives' pair outcomes with no word of the load they were timed under."""
    said = busy_caveat([BUSY], side_by_side=False)  # each step timed alone, not side by side with the base
    with_load(store, finished["exploration"], None, lambda result: [result["shipped"]])
    for load, order, tradeoffs in ((BUSY, [said], [said]), (None, [], [])):
        with_load(store, finished["exploration"], load, every_step)
        for page, shown in (("4_order", order), ("5_tradeoffs", tradeoffs)):
            captions = texts(app(page, job=finished["exploration"]).main.caption)
            assert [caption for caption in captions if "machine was busy" in caption] == shown, page
    with_load(store, finished["exploration"], BUSY, lambda result: result["chain_steps"])  # the chain's own timings only
    assert not [c for c in texts(app("4_order", job=finished["exploration"]).main.caption) if "machine was busy" in c]


def test_the_export_table_says_when_its_files_were_timed_on_a_busy_machine(store, finished):
    for load, said in ((BUSY, True), (None, False)):
        with_load(store, finished["export"], load, lambda result: [e["measured"] for e in result["manifest"]["formats"] if "measured" in e])
        caption = next(c for c in texts(app("6_export", job=finished["exploration"]).main.caption) if c.startswith("Each file measured"))
        assert caption.endswith(f"PyTorch's. {CAVEAT}" if said else "PyTorch's.")


def test_export_of_an_order_of_ones_own_is_a_background_job(store, finished, spawned):
    at = app("6_export", job=finished["exploration"])
    reverse = finished["record"]["chain"][::-1]
    at.multiselect(key=f"w_export_order_{finished['exploration']}").set_value(reverse).run()
    assert "your own order" in plain(at.main.caption[-1].value) or any("your own order" in plain(c.value) for c in at.main.caption)
    at.button_group(key="w_export_formats").set_value(["onnx"]).run()
    next(button for button in at.main.button if button.label == "Apply and export").click().run()
    job = store.get(spawned[0])
    assert (job["kind"], job["spec"]["chain"], job["spec"]["formats"]) == ("export", reverse, ["onnx"])
    assert job["spec"]["exploration"] == finished["exploration"] and job["spec"]["budget"] == finished["record"]["spec"]["budget"]
    assert any("**queued**" in plain(markdown.value) for markdown in at.main.markdown)


@pytest.mark.parametrize("page, target", [("1_model_and_data", "methods"), ("2_methods", "runs"), ("4_order", "tradeoffs"),
                                          ("5_tradeoffs", "export")])
def test_every_step_of_the_story_links_to_the_next(store, finished, page, target):
    """Model & data, Methods and Runs each end with a link to the next step; Order and Trade-offs ended without one, so a
    new user who had followed the links from the first page stopped short of the download and the meeting report."""
    at = app(page, job=finished["exploration"])
    assert target in [link.proto.page for link in at.main.get("page_link")]  # the page's address


def test_a_deep_link_to_a_page_runs_it_inside_the_app_with_the_run_from_the_url(store, finished):
    at = AppTest.from_file(APP, default_timeout=180)  # a fresh server whose first request is /runs?job=...
    at.query_params["job"] = finished["exploration"]
    at.switch_page(PAGES["3_runs"]).run()
    assert not at.exception and at.main.title[0].value == "Runs"
    assert f"Run {finished['exploration']}" in texts(at.main.subheader)
    assert any(f"job `{finished['exploration']}`" in plain(markdown.value) for markdown in at.sidebar.markdown)


def test_the_sidebar_shows_the_open_run_device_and_store(store, finished):
    at = app("5_tradeoffs", job=finished["exploration"])
    captions = texts(at.sidebar.caption)
    assert any(caption.startswith("Device: CPU") or caption.startswith("Device: CUDA") for caption in captions)
    assert f"Job store: `{store.path}`" in captions
    assert any(f"job `{finished['exploration']}`" in plain(markdown.value) for markdown in at.sidebar.markdown)
    # stop 44's walk: a run opened from its link under 'Base: digits_cnn on digits', its own base another (the session's default)
    assert "Base of a new exploration: digits_cnn on digits" in captions and not [c for c in captions if c.startswith("Base:")]


@pytest.mark.timeout(2 * WORKER_S)
def test_a_launched_exploration_runs_in_a_worker_and_its_result_reaches_the_result_pages(store, finished, real_workers, wait_for):
    spec = base_in(store, finished)  # the same plan: its steps come back from the store's cache
    at = app("2_methods")
    at.session_state[session.BASE] = {key: spec[key] for key in ("model", "architecture", "data", "input_size")}
    at.run()  # the base chosen first (on Model & data), then the methods for it
    at.multiselect(key="w_methods").set_value(spec["methods"]).run()
    at.number_input(key="w_seeds").set_value(spec["seeds"]).run()
    at.number_input(key="w_epochs").set_value(spec["budget"]["epochs"]).run()
    at.main.selectbox(key="w_device").set_value("cpu").run()
    at.switch_page(PAGES["3_runs"]).run()
    next(button for button in at.main.button if button.label == "Launch exploration").click().run()
    job_id = at.session_state["job"]
    wait_for(lambda: store.get(job_id)["status"] in ("done", "failed", "cancelled"), f"job {job_id} to end", timeout=WORKER_S)
    at.run()
    job = store.get(job_id)
    assert job["status"] == "done", store.log(job_id)
    # the pairs and the race's extra seed, every one from the finished run's cache
    assert job["result"]["applications"]["cache_hits"] == len(job["result"]["steps"]) == len(finished["record"]["steps"])
    assert plain(at.main.success[0].value) == f"Recommended order: **{' → '.join(job['result']['chain'])}**"
    at.switch_page(PAGES["4_order"]).run()
    assert plain(at.main.markdown[0].value).startswith("### Recommended order:") and charts(at, "graphviz_chart") == 1


def test_the_methods_page_runtime_choice_reaches_the_spec_only_for_latency_objectives(store):
    assert plan.plan_from_state({"w_objective": "weighted_latency", "w_runtime": "onnx_int8"}).runtime == "onnx_int8"
    assert plan.plan_from_state({"w_objective": "weighted", "w_runtime": "onnx_int8"}).runtime == "eager"
    at = app("2_methods")
    assert not [s for s in at.selectbox if s.key == "w_runtime"]
    at.selectbox(key="w_objective").set_value("latency").run()
    assert at.selectbox(key="w_runtime").value == "eager"
    at.selectbox(key="w_runtime").set_value("onnx_int8").run()
    assert not at.exception and at.session_state["w_runtime"] == "onnx_int8"


def test_the_methods_page_offers_only_the_ray_clusters_of_the_servers_operator(store, monkeypatch):
    """Whoever answers at a typed Ray address runs code in the job's process (tests/jobs/test_worker.py): the page
    says so before a job is queued."""
    monkeypatch.setenv("ORDERCOMP_RAY_ADDRESSES", "10.0.0.5:6379")
    at = app("2_methods")
    at.selectbox(key="w_executor").set_value("ray").run()
    assert at.text_input(key="w_ray_address").label.endswith("this server's operator offers: 10.0.0.5:6379)")
    at.text_input(key="w_ray_address").set_value("203.0.113.9:6379").run()
    assert not at.exception and plain(at.main.error[0].value) == (
        "This plan cannot run: 203.0.113.9:6379 is not a Ray cluster this server's operator offers (10.0.0.5:6379): "
        "a job runs whatever code the cluster there returns; leave the address empty for a local cluster, or ask the "
        "operator to list it in $ORDERCOMP_RAY_ADDRESSES (comma-separated HOST:PORT or auto)")
    at.text_input(key="w_ray_address").set_value("10.0.0.5:6379").run()
    assert not at.main.error and plan.plan_from_state(at.session_state).ray_address == "10.0.0.5:6379"


def test_the_methods_page_chooses_the_shipped_format(store):
    """The API and the CLI (--ship) could ship int8 ONNX, faster than float ONNX on the default sample on an Intel Xeon
    with AMX; the dashboard could not choose."""
    assert plan.plan_from_state({}).ship == "onnx"
    assert plan.plan_from_state({"w_ship": NO_SHIP}).ship is None
    at = app("2_methods")
    assert at.selectbox(key="w_ship").value == "onnx"
    at.selectbox(key="w_ship").set_value("onnx_int8").run()
    assert not at.exception and plan.plan_from_state(at.session_state).ship == "onnx_int8"
