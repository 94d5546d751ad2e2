"""Where the dashboard keeps its state, besides the widgets: which exploration is open (session
state and the `?job=` query parameter, so a reload, a new tab or a restarted app finds it again),
the base model and data explorations start from, and the job store on disk.
"""
from __future__ import annotations

from pathlib import Path

from ..jobs import JobStore

JOB = "job"                      # session key and query parameter: the exploration on show
BASE = "base_choice"             # session key: the base model and data explorations start from
UPLOADED_MODEL = "uploaded_model"  # session key: {"id": upload id, "path": where the uploaded checkpoint was kept}
UPLOADED_DATA = "uploaded_data"    # session key: {"id": upload id, "path": the root of the extracted ImageFolder zip}
UPLOADED_WEIGHTS = "uploaded_weights"  # session key: {"id": upload id, "path": weights uploaded for a registered factory}
DEFAULT_BASE = {"model": "digits_cnn", "architecture": None, "data": "digits", "input_size": None, "trust_torchscript": False,
                "model_args": {}, "weights": None, "normalize": "dataset", "ema": False, "crop": None}
POLL_SECONDS = 1.5               # how often a page showing an active job reads the store again
# The sidebar's summary of the open job polls less often: every poll is a script run on the server, which shares
# the cores with the job's worker (three panels at 1.5 s took 29 % of a core, bench_dashboard.py on 2 cores)
SIDEBAR_POLL_SECONDS = 6.0


def open_store() -> JobStore:
    """The job store at $ORDERCOMP_STORE or .ordercomp/jobs.sqlite."""
    return JobStore()


def data_folder(store: JobStore, name: str) -> Path:
    """A folder next to the store for files the dashboard keeps (uploads, extracted datasets)."""
    return store.path.parent / name


def sweep_uploads(store: JobStore) -> None:
    """Remove uploads (checkpoints, extracted zips) that no job of the store uses and nobody used for a week."""
    from ..uploads import KEPT_FOLDERS, sweep_abandoned

    in_use = {job["spec"][key] for job in store.list_jobs() for key in ("model", "data", "weights") if job["spec"].get(key)}
    for name in KEPT_FOLDERS:
        sweep_abandoned(data_folder(store, name), in_use)


def sync_job_param(state, query_params) -> None:
    """The session's job wins and is written to the URL; a fresh session takes the URL's."""
    if state.get(JOB):
        if query_params.get(JOB) != state[JOB]:
            query_params[JOB] = state[JOB]
    elif query_params.get(JOB):
        state[JOB] = query_params[JOB]


def open_job(state, query_params, job_id: str) -> None:
    state[JOB] = job_id
    query_params[JOB] = job_id


def set_defaults(state, defaults: dict) -> None:
    for key, value in defaults.items():
        state.setdefault(key, value)


def base_choice(state) -> dict:
    """The chosen base and data, with the defaults of any option a choice made before it existed leaves out."""
    return DEFAULT_BASE | dict(state.get(BASE) or {})
