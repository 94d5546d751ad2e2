"""Step 1, Model & data: the base model and the data every exploration starts from, and its baseline."""
from pathlib import Path

import streamlit as st

from ordercomp import uploads
from ordercomp.models.checkpoints import CheckpointError, is_torchscript, list_samples, registered_models, sample_card
from ordercomp.models.factories import ENTRY_POINT_GROUP, MODELS_ENV, TORCHSCRIPT_ENV, server_runs_torchscript
from ordercomp.dashboard import formatting, plan, session, views
from ordercomp.data.datasets import DataError, check_crop_fits
from ordercomp.data.preprocessing import Normalization
from ordercomp.jobs import start_job
from ordercomp.report.figures import plural
from ordercomp.models.zoo import ARCHITECTURES, list_architectures
from pages._shared import KEEP, job_status, live_job, metric_row, run_inside_app

run_inside_app()
store = session.open_store()
state = st.session_state
session.set_defaults(state, {"w_data_source": "digits", "w_data_path": "", "w_input_size": 0, "w_model_source": "sample",
                             "w_sample": session.DEFAULT_BASE["model"], "w_architecture": "cnn_small", "w_upload_arch": None,
                             "w_trust_torchscript": False, "w_normalize": "dataset", "w_normalize_numbers": "",
                             "w_model_args": "", "w_ema": False, "w_weights_ema": False, "w_crop": 0.0})
EMA_HELP = "timm's state_dict_ema, torchvision's model_ema, Lightning's EMA; without it, the training weights are read"


@st.cache_data(max_entries=16, show_spinner="Reading the file (nothing in it is run)")
def checked(check: str, path: str, **options) -> tuple[str | None, str | None]:
    """(what an uploaded file holds, None) or (None, why it cannot be used), by `uploads.check_<check>`; files are named
    by content, so cached."""
    try:
        return getattr(uploads, f"check_{check}")(Path(path), **options), None
    except (CheckpointError, ValueError) as error:
        return None, str(error)


def choose_normalize() -> str | None:
    """The --normalize text of the choice, or None while the given numbers are wrong (one line says why)."""
    mode = st.selectbox("Normalisation of the images", list(plan.NORMALIZE_CHOICES), format_func=plan.NORMALIZE_CHOICES.get,
                        key="w_normalize", **KEEP)
    if mode != "given":
        return mode
    text = st.text_input("Mean and std: one pair for every channel, or every channel's means then their stds",
                         placeholder="0.485,0.456,0.406,0.229,0.224,0.225", key="w_normalize_numbers", **KEEP)
    try:
        return Normalization.parse(text).text
    except ValueError as error:
        st.error(formatting.md(error))
        return None


def choose_data() -> str | None:
    st.subheader("Data")
    source = st.radio("Data source", list(plan.DATA_SOURCES), format_func=plan.DATA_SOURCES.get, key="w_data_source",
                      **KEEP)
    st.number_input(plan.INPUT_SIZE_LABEL, min_value=0, max_value=512,
                    step=1, key="w_input_size", **KEEP)
    if source == "digits":
        st.caption("1,797 handwritten digits of 8x8 pixels (scikit-learn), 10 classes; no download needed.")
        return "digits"
    if source == "folder":
        roots = " or ".join(map(str, uploads.data_roots()))
        text = st.text_input(f"Dataset folder under {roots} (CIFAR-10/100, one sub-folder per class, or a .npz file)",
                             key="w_data_path", **KEEP)
        try:
            return uploads.check_served_data_path(text, store.path.parent)
        except DataError as error:
            st.error(formatting.md(error))
            return None
    return uploaded_data()


def choose_crop(data: str | None) -> tuple[bool, float | None]:
    """Whether the crop suits the data, and the crop (None: each image resized whole); an ImageFolder tree's only."""
    if data in (None, "digits"):
        return True, None
    crop = st.number_input(plan.CROP_LABEL, min_value=0.0, max_value=1.0, step=0.005, format="%.3f", key="w_crop", **KEEP) or None
    try:
        check_crop_fits(data, crop)
    except DataError as error:
        st.error(formatting.md(error))
        return False, None
    return True, crop


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


def choose_model() -> dict | None:
    """The model part of the base choice (model, architecture, trust, model arguments, weights), or None while unusable."""
    st.subheader("Model")
    source = st.radio("Model source", list(plan.MODEL_SOURCES), format_func=plan.MODEL_SOURCES.get, key="w_model_source",
                      **KEEP)
    if source == "sample":
        name = st.selectbox("Sample model", list_samples(), key="w_sample", **KEEP)
        card = sample_card(name)
        st.caption(f"{card['description']} ({card['architecture']}), trained on {card['data']['name']}: "
                   f"{card['training']['epochs']} epochs, {card['training']['optimizer']}.")
        return {"model": name}
    if source == "zoo":
        architecture = st.selectbox("Architecture", list_architectures(), key="w_architecture",
                                    format_func=lambda name: f"{name}: {ARCHITECTURES[name][1]}", **KEEP)
        st.caption("Trained from scratch on the chosen data as a background job (below); explorations reuse the trained weights.")
        return {"model": architecture}
    if source == "registered":
        return registered_model()
    return uploaded_model()


def registered_model() -> dict | None:
    """A model factory the server's operator registered, its arguments and optional uploaded weights. Nothing typed
    here names code: only registered factories are offered, and the job workers build nothing else."""
    try:
        factories = registered_models()
    except ValueError as error:  # the operator's registration is malformed or takes a name already in use
        st.error(formatting.md(error))
        return None
    if not factories:
        st.info(f"This server registers no model factories. Its operator declares them before starting it, as entry points "
                f"of the group {ENTRY_POINT_GROUP} or in ${MODELS_ENV} (e.g. my_net=my_project.nets:MyNet); the dashboard "
                "never imports a path typed into it.")
        return None
    if state.get("w_factory", next(iter(factories))) not in factories:  # a stale or crafted session: never imported
        try:
            plan.registered_choice(state.pop("w_factory"), "")
        except ValueError as error:
            st.error(formatting.md(error))
            return None
    name = st.selectbox("Model factory", sorted(factories), key="w_factory", format_func=lambda n: f"{n}: {factories[n]}", **KEEP)
    args_text = st.text_input("Model arguments as JSON (num_classes and in_channels come from the data where it takes them)",
                              placeholder='{"num_classes": 10}', key="w_model_args", **KEEP)
    st.caption("Without weights the model is trained here from scratch (a background job, below), as a zoo architecture is.")
    try:
        name, args = plan.registered_choice(name, args_text)
    except ValueError as error:
        st.error(formatting.md(error))
        return None
    weights = uploaded_weights()
    ema = st.checkbox("EMA weights: read the file's EMA weights", key="w_weights_ema", help=EMA_HELP, **KEEP)
    if weights:
        summary, error = checked("weights", weights, ema=ema)
        if error:
            st.error(formatting.md(error))
            return None
        st.caption(f"Weights: {formatting.md(summary)}; checked against the model when the baseline job runs.")
    return {"model": name, "model_args": args, "weights": weights, "ema": ema and bool(weights)}


def kept_upload(upload, state_key: str) -> str | None:
    """The path of the checkpoint last uploaded under `state_key` (a new one is read once, nothing in it runs, and kept
    next to the store); None when there is none, or when the new one is refused (one line says why)."""
    previous = state.get(state_key) or {}
    if upload is not None and previous.get("id") != upload.file_id:
        session.sweep_uploads(store)
        try:
            path = uploads.keep_checkpoint(session.data_folder(store, uploads.CHECKPOINTS_FOLDER), upload.name, upload.getvalue())
        except (ValueError, OSError) as error:  # CheckpointError is a ValueError
            st.error(formatting.md(error))
            return None
        previous = state[state_key] = {"id": upload.file_id, "path": str(path)}
    return previous.get("path")


def uploaded_weights() -> str | None:
    """Weights uploaded for a registered factory; they stay chosen until forgotten."""
    upload = st.file_uploader(f"Weights (optional, at most {uploads.UPLOAD_LIMIT_MB} MB): a state dict (.pt, .pth, .bin, .ckpt) "
                              "or safetensors; checkpoints of training frameworks are unwrapped", type=uploads.checkpoint_types(),
                              max_upload_size=uploads.UPLOAD_LIMIT_MB, key="weights_file")
    path = kept_upload(upload, session.UPLOADED_WEIGHTS)
    if path and st.button("Forget the weights"):
        state.pop(session.UPLOADED_WEIGHTS, None)
        st.rerun()
    return path


def torchscript_trust() -> bool:
    """The user's word that an uploaded TorchScript file may run, where the server's operator allows TorchScript at all."""
    if not server_runs_torchscript():
        st.caption(f"State dicts, safetensors and .pt2 programs are read without running anything from them. TorchScript runs code "
                   f"stored in the file, so this server does not load it unless its operator sets {TORCHSCRIPT_ENV}=allow.")
        return False
    trust = st.checkbox("I trust this file: run its TorchScript code", key="w_trust_torchscript", **KEEP)
    st.caption("Loading TorchScript runs code stored in the file, with the server's rights on this machine: it can read, write "
               "and delete files. Tick this only for a file you made yourself. State dicts, safetensors and .pt2 programs "
               "are read without running anything from them.")
    return trust


def uploaded_model() -> dict | None:
    upload = st.file_uploader(f"Checkpoint (at most {uploads.UPLOAD_LIMIT_MB} MB): a state dict (.pt, .pth, .safetensors), "
                              "a torch.export program (.pt2) or a TorchScript model", type=uploads.checkpoint_types(),
                              max_upload_size=uploads.UPLOAD_LIMIT_MB, key="model_file")
    architecture = st.selectbox("Architecture of a state dict", [None, *list_architectures()], key="w_upload_arch",
                                format_func=lambda name: "(a whole model: .pt2 or TorchScript)" if name is None else name, **KEEP)
    ema = architecture is not None and st.checkbox("EMA weights: read the checkpoint's EMA weights", key="w_ema",
                                                   help=EMA_HELP, **KEEP)
    trust = torchscript_trust()
    path = kept_upload(upload, session.UPLOADED_MODEL)
    if path is None:
        if upload is None:
            st.info("Upload a checkpoint to use it.")
        return None
    summary, error = checked("checkpoint", path, architecture=architecture, trust_torchscript=trust, ema=ema)
    if error:
        st.error(formatting.md(error))
        return None
    st.success(formatting.md(summary))
    return {"model": path, "architecture": architecture, "trust_torchscript": trust and is_torchscript(Path(path)), "ema": ema}


def sample_card_row(choice: dict) -> None:
    """A sample's figures from its card, until the baseline is measured here."""
    if choice["model"] not in list_samples():
        return
    card = sample_card(choice["model"])
    if choice["data"] != card["data"]["name"]:
        st.warning(f"{choice['model']} was trained on {card['data']['name']} ({plural(card['num_classes'], 'class')}, "
                   f"{plural(card['in_channels'], 'channel')}): other data needs as many classes and channels, or the jobs fail. "
                   "Train a zoo architecture on it instead.")
    st.caption(f"From the model card (test split of {card['data']['name']}); latency depends on the machine: measure it below.")
    metric_row(views.card_metrics(card))


def baseline(choice: dict) -> None:
    st.subheader("Baseline")
    spec = plan.baseline_spec(choice, state.get("w_device", "auto"))
    job = views.find_baseline(store, spec)
    if job is None or job["status"] != "done":  # the measured row replaces the card's: one row of figures
        sample_card_row(choice)
    if job is not None:
        live_job(store, job["id"], draw_baseline)
        return
    label = "Train the base model" if plan.trains_here(choice) else "Measure the baseline on this machine"
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
        st.caption(f"Measured on {result['device']}, test split of {formatting.md(data['name'])}: {plural(data['classes'], 'class')}, "
                   f"{plural(data['channels'], 'channel')}, {data['input_size']} px, {data['test']} test images; latency of the "
                   f"model in eager PyTorch{', 1 thread' if result['device'] == 'cpu' else ''} (what a deployable file does in its "
                   "runtime is on Trade-offs and Export).")
        metric_row(result["metrics"])


st.title("Model & data")
st.caption("The model to compress and the data it is fine-tuned and measured on. Nothing here trains in the page: "
           "training and measuring run as background jobs.")
data_column, model_column = st.columns(2)
with data_column:
    data = choose_data()
    crop_fits, crop = choose_crop(data)
    normalize = choose_normalize()
with model_column:
    model = choose_model()
if data and crop_fits and model and normalize:
    state[session.BASE] = session.DEFAULT_BASE | model | {"data": data, "input_size": state["w_input_size"] or None,
                                                          "normalize": normalize, "crop": crop}
elif session.BASE in state:
    st.warning("The choice above is not usable yet; explorations still start from the last usable one.")
current = session.base_choice(state)
st.success(f"Explorations start from **{formatting.md(plan.describe_base(current))}**.")
baseline(current)
st.page_link("pages/2_methods.py", label="Next: choose the methods", icon=":material/tune:")
