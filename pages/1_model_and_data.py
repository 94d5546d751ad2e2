"""Step 1, Model & data: the base model and the data every exploration starts from, and its baseline."""
from pathlib import Path

import streamlit as st

from ordercomp import uploads
from ordercomp.models.checkpoints import CheckpointError, is_torchscript, list_samples, sample_card
from ordercomp.dashboard import formatting, plan, session, views
from ordercomp.data.datasets import DataError
from ordercomp.jobs import start_job
from ordercomp.models.zoo import ARCHITECTURES, list_architectures
from pages._shared import KEEP, job_status, live_job, metric_row, run_inside_app

run_inside_app()
store = session.open_store()
state = st.session_state
session.set_defaults(state, {"w_data_source": "digits", "w_data_path": "", "w_input_size": 0, "w_model_source": "sample",
                             "w_sample": session.DEFAULT_BASE["model"], "w_architecture": "cnn_small", "w_upload_arch": None,
                             "w_trust_torchscript": False})


@st.cache_data(max_entries=16, show_spinner="Reading the checkpoint (nothing in it is run)")
def checked_checkpoint(path: str, architecture: str | None, trust: bool) -> tuple[str | None, str | None]:
    """(what the file holds, None) or (None, why it cannot be used); files are named by content, so cached."""
    try:
        return uploads.check_checkpoint(Path(path), architecture, trust_torchscript=trust), None
    except (CheckpointError, ValueError) as error:
        return None, str(error)


def choose_data() -> str | None:
    st.subheader("Data")
    source = st.radio("Data source", list(plan.DATA_SOURCES), format_func=plan.DATA_SOURCES.get, key="w_data_source",
                      **KEEP)
    st.number_input("Input size in pixels (0: the data's own, 8 for digits, 32 otherwise)", min_value=0, max_value=512,
                    step=1, key="w_input_size", **KEEP)
    if source == "digits":
        st.caption("1,797 handwritten digits of 8x8 pixels (scikit-learn), 10 classes; no download needed.")
        return "digits"
    if source == "folder":
        text = st.text_input("Dataset folder", placeholder="/data/cifar10 or /data/flowers (one sub-folder per class)",
                             key="w_data_path", **KEEP)
        try:
            return uploads.check_data_path(text)
        except DataError as error:
            st.error(formatting.md(error))
            return None
    return uploaded_data()


def uploaded_data() -> str | None:
    upload = st.file_uploader(f"ImageFolder tree as a zip (at most {uploads.ZIP_LIMIT_MB} MB; one folder per class)",
                              type=["zip"], max_upload_size=uploads.ZIP_LIMIT_MB, key="data_zip")
    previous = state.get(session.UPLOADED_DATA) or {}
    if upload is not None and previous.get("id") != upload.file_id:
        session.sweep_uploads(store)
        try:
            path = uploads.extract_image_zip(upload.getvalue(), session.data_folder(store, "datasets"))
        except DataError as error:
            st.error(formatting.md(error))
            return None
        previous = state[session.UPLOADED_DATA] = {"id": upload.file_id, "path": path}
    if previous:
        st.caption(f"Extracted to {formatting.code(previous['path'])}")
    return previous.get("path")


def choose_model() -> tuple[str, str | None, bool] | None:
    """(model, architecture of a state dict, whether its TorchScript code may run), or None while unusable."""
    st.subheader("Model")
    source = st.radio("Model source", list(plan.MODEL_SOURCES), format_func=plan.MODEL_SOURCES.get, key="w_model_source",
                      **KEEP)
    if source == "sample":
        name = st.selectbox("Sample model", list_samples(), key="w_sample", **KEEP)
        card = sample_card(name)
        st.caption(f"{card['description']} ({card['architecture']}), trained on {card['data']['name']}: "
                   f"{card['training']['epochs']} epochs, {card['training']['optimizer']}.")
        return name, None, False
    if source == "zoo":
        architecture = st.selectbox("Architecture", list_architectures(), key="w_architecture",
                                    format_func=lambda name: f"{name}: {ARCHITECTURES[name][1]}", **KEEP)
        st.caption("Trained from scratch on the chosen data as a background job (below); explorations reuse the trained weights.")
        return architecture, None, False
    return uploaded_model()


def uploaded_model() -> tuple[str, str | None, bool] | None:
    upload = st.file_uploader(f"Checkpoint (at most {uploads.UPLOAD_LIMIT_MB} MB): a state dict (.pt, .pth, .safetensors), "
                              "a torch.export program (.pt2) or a TorchScript model", type=uploads.checkpoint_types(),
                              max_upload_size=uploads.UPLOAD_LIMIT_MB, key="model_file")
    architecture = st.selectbox("Architecture of a state dict", [None, *list_architectures()], key="w_upload_arch",
                                format_func=lambda name: "(a whole model: .pt2 or TorchScript)" if name is None else name, **KEEP)
    trust = st.checkbox("I trust this file: run its TorchScript code", key="w_trust_torchscript", **KEEP)
    st.caption("Loading TorchScript runs code stored in the file, with your rights on this machine: it can read, write "
               "and delete files. Tick this only for a file you made yourself. State dicts, safetensors and .pt2 programs "
               "are read without running anything from them.")
    previous = state.get(session.UPLOADED_MODEL) or {}
    if upload is not None and previous.get("id") != upload.file_id:
        session.sweep_uploads(store)
        try:
            path = uploads.keep_checkpoint(session.data_folder(store, "uploads"), upload.name, upload.getvalue())
        except (ValueError, OSError) as error:  # CheckpointError is a ValueError
            st.error(formatting.md(error))
            return None
        previous = state[session.UPLOADED_MODEL] = {"id": upload.file_id, "path": str(path)}
    if not previous:
        st.info("Upload a checkpoint to use it.")
        return None
    summary, error = checked_checkpoint(previous["path"], architecture, trust)
    if error:
        st.error(formatting.md(error))
        return None
    st.success(formatting.md(summary))
    return previous["path"], architecture, trust and is_torchscript(Path(previous["path"]))


def baseline(choice: dict) -> None:
    st.subheader("Baseline")
    if choice["model"] in list_samples():
        card = sample_card(choice["model"])
        if choice["data"] != card["data"]["name"]:
            st.warning(f"{choice['model']} was trained on {card['data']['name']} ({card['num_classes']} classes, "
                       f"{card['in_channels']} channel(s)): other data needs as many classes and channels, or the jobs fail. "
                       "Train a zoo architecture on it instead.")
        st.caption(f"From the model card (test split of {card['data']['name']}); latency depends on the machine: measure it below.")
        metric_row(views.card_metrics(card))
    spec = plan.baseline_spec(choice, state.get("w_device", "auto"))
    job = views.find_baseline(store, spec)
    if job is not None:
        live_job(store, job["id"], draw_baseline)
        return
    label = "Train the base model" if choice["model"] in ARCHITECTURES else "Measure the baseline on this machine"
    if st.button(label, type="primary"):
        try:
            start_job(store, spec, kind="baseline")
        except (ValueError, OSError) as error:
            st.error(f"Could not start the job: {formatting.md(error)}")
            return
        st.rerun()


def draw_baseline(job: dict) -> None:
    job_status(store, job, unit="steps")
    if job["status"] == "done":
        result = job["result"]
        data = result["data"]
        st.caption(f"Measured on {result['device']}, test split of {formatting.md(data['name'])}: {data['classes']} classes, "
                   f"{data['channels']} channel(s), {data['input_size']} px, {data['test']} test images.")
        metric_row(result["metrics"])


st.title("Model & data")
st.caption("The model to compress and the data it is fine-tuned and measured on. Nothing here trains in the page: "
           "training and measuring run as background jobs.")
data_column, model_column = st.columns(2)
with data_column:
    data = choose_data()
with model_column:
    model = choose_model()
if data and model:
    state[session.BASE] = {"model": model[0], "architecture": model[1], "data": data, "input_size": state["w_input_size"] or None,
                           "trust_torchscript": model[2]}
elif session.BASE in state:
    st.warning("The choice above is not usable yet; explorations still start from the last usable one.")
current = session.base_choice(state)
st.success(f"Explorations start from **{formatting.md(plan.describe_base(current))}**.")
baseline(current)
st.page_link("pages/2_methods.py", label="Next: choose the methods", icon=":material/tune:")
