"""State, look-ups and formatting for the dashboard pages (`app.py`, `pages/`); nothing here draws.

Nothing heavy runs here either: training, explorations and exports are jobs for a worker process
(`ordercomp.jobs`); the pages only read the job store. State lives in three places:

- widget values in session state under keys starting with `w_` (their widgets keep them across
  page switches with `persist_state="session"`), read through `plan_from_state` and `base_choice`;
- `JOB` (session state and the `?job=` query parameter): the exploration being looked at, so a
  reload, a new tab or a restarted app finds it again;
- the job store on disk: every job, its progress, steps, log and result.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path, PurePosixPath

from .jobs import ACTIVE, BaselineSpec, ExportSpec, JobStore

JOB = "job"                      # session key and query parameter: the exploration on show
BASE = "base_choice"             # session key: the base model and data explorations start from
UPLOADED_MODEL = "uploaded_model"  # session key: {"id": upload id, "path": where the uploaded checkpoint was kept}
UPLOADED_DATA = "uploaded_data"    # session key: {"id": upload id, "path": the root of the extracted ImageFolder zip}
WIDGET_PREFIX = "w_"

DEFAULT_BASE = {"model": "digits_cnn", "architecture": None, "data": "digits", "input_size": None}
DATA_SOURCES = {"digits": "Embedded digits (default)", "folder": "A folder on this machine (CIFAR-10/100 or ImageFolder)",
                "zip": "Upload a zip of an ImageFolder tree"}
MODEL_SOURCES = {"sample": "Sample model", "zoo": "Train a zoo architecture", "upload": "Upload a checkpoint"}
UPLOAD_LIMIT_MB = 200
ZIP_LIMIT_MB = 200
ZIP_MAX_BYTES = 1 << 30          # unpacked
ZIP_MAX_FILES = 100_000
DEFAULT_STEP_SECONDS = 20.0      # per method application, until the store has finished steps to go by
# Seconds per multiply-accumulate of fine-tuning on 2 CPU cores (forward + backward ~ 3x the MACs),
# measured: digits_cnn on digits, 52 applications at 5 epochs in 63 s (benchmarks/bench_explore.py).
CPU_SECONDS_PER_MAC = 2.5e-11
POLL_SECONDS = 1.5
NO_REPEAT = "(none)"
FORMAT_LABELS = {"torchscript": "TorchScript", "pt2": "torch.export (.pt2)", "onnx": "ONNX (checked in onnxruntime)",
                 "state_dict": "state dict", "manifest": "manifest (JSON)"}


def open_store() -> JobStore:
    """The job store at $ORDERCOMP_STORE or .ordercomp/jobs.sqlite."""
    return JobStore()


def data_folder(store: JobStore, name: str) -> Path:
    """A folder next to the store for files the dashboard keeps (uploads, extracted datasets)."""
    return store.path.parent / name


# --- session state -------------------------------------------------------------------------

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
    return dict(state.get(BASE) or DEFAULT_BASE)


def describe_base(choice: dict) -> str:
    size = f", {choice['input_size']} px" if choice.get("input_size") else ""
    architecture = f" ({choice['architecture']})" if choice.get("architecture") else ""
    return f"{Path(choice['model']).name}{architecture} on {Path(choice['data']).name}{size}"


# --- model and data choice ---------------------------------------------------------------------

def check_data_path(text: str) -> str:
    """The folder of a CIFAR-10/100 or ImageFolder dataset, checked by its layout without loading it."""
    from .data import DataError, check_layout

    if not text.strip():
        raise DataError("give the path of a dataset folder on this machine")
    return str(check_layout(text.strip())[1].resolve())


def extract_image_zip(data: bytes, folder: Path) -> str:
    """Unpack an uploaded ImageFolder zip under `folder` (once per content) and return its tree's root.

    Refuses absolute paths, `..`, links, more than ZIP_MAX_FILES files and more than ZIP_MAX_BYTES
    unpacked, and stops a member that unpacks to more bytes than it declares."""
    from .data import DataError

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError("the upload is not a zip archive: zip the dataset folder (one sub-folder per class) and upload that") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    _check_members(members)
    target = folder / hashlib.sha256(data).hexdigest()[:16]
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=folder, prefix=".unzip-"))
        try:
            for member in members:
                _extract_member(archive, member, temp)
            os.replace(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return check_data_path(str(_tree_root(target)))


def _check_members(members: list[zipfile.ZipInfo]) -> None:
    from .data import DataError

    if len(members) > ZIP_MAX_FILES:
        raise DataError(f"the zip holds {len(members)} files; the limit is {ZIP_MAX_FILES}: use a folder on this machine instead")
    if sum(m.file_size for m in members) > ZIP_MAX_BYTES:
        raise DataError(f"the zip unpacks to more than {ZIP_MAX_BYTES >> 20} MB: use a folder on this machine instead")
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", member.filename):
            raise DataError(f"the zip holds an unsafe path {member.filename!r}: nothing was extracted; zip the folder itself")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(f"the zip holds a link {member.filename!r}: nothing was extracted; zip plain files only")


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path) -> None:
    from .data import DataError

    destination = root / PurePosixPath(member.filename.replace("\\", "/"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, open(destination, "wb") as target:
        written = 0
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > member.file_size:
                raise DataError(f"{member.filename} unpacks to more than it declares: the zip is damaged or malicious")
            target.write(block)


def _tree_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (a zip of `dataset/cat/...`)."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    while len(entries) == 1 and entries[0].is_dir():
        folder = entries[0]
        entries = list(folder.iterdir())
    return folder


def checkpoint_types() -> list[str]:
    """File name endings an uploaded model may have."""
    from .checkpoints import PROGRAM_SUFFIXES, STATE_SUFFIXES

    return sorted(suffix.lstrip(".") for suffix in STATE_SUFFIXES | PROGRAM_SUFFIXES)


def save_upload(folder: Path, name: str, data: bytes, limit_mb: int = UPLOAD_LIMIT_MB) -> Path:
    """Keep an uploaded file under `folder`, as `<content hash>/<cleaned file name>`."""
    if len(data) > limit_mb << 20:
        raise ValueError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {limit_mb} MB: give a smaller file")
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "upload"
    path = folder / hashlib.sha256(data).hexdigest()[:16] / clean
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    return path


def check_checkpoint(path: Path, architecture: str | None) -> str:
    """Read an uploaded model file without running code from it; one line saying what it holds.

    A state dict needs an architecture; a .pt2 or TorchScript archive is a whole model."""
    from .checkpoints import PROGRAM_SUFFIXES, STATE_SUFFIXES, CheckpointError, is_torchscript, load_program, read_state_dict

    name = path.name
    if path.suffix in PROGRAM_SUFFIXES or is_torchscript(path):
        model = load_program(path)
        kind = "torch.export program" if path.suffix == ".pt2" else "TorchScript model"
        return f"{name}: a {kind} with {sum(p.numel() for p in model.parameters()):,} parameters"
    if path.suffix not in STATE_SUFFIXES:
        raise CheckpointError(f"{name} has an unknown type: upload a state dict (.pt, .pth, .safetensors), a .pt2 or a TorchScript file")
    state = read_state_dict(path)
    if architecture is None:
        raise CheckpointError(f"{name} holds weights only: choose its architecture")
    return f"{name}: a state dict of {len(state)} tensors ({sum(t.numel() for t in state.values()):,} values) for {architecture}"


def baseline_spec(choice: dict, device: str = "auto") -> BaselineSpec:
    return BaselineSpec(model=choice["model"], data=choice["data"], architecture=choice["architecture"],
                        input_size=choice["input_size"], device=device)


def find_baseline(store: JobStore, spec: BaselineSpec) -> dict | None:
    """The newest baseline job for exactly this base model, data and device."""
    wanted = spec.to_dict()
    return next((job for job in store.list_jobs("baseline") if job["spec"] == wanted), None)


def card_metrics(card: dict) -> dict:
    """A sample model card's test metrics in the names `measure` uses (no latency: it depends on the machine)."""
    metrics = card["metrics"]
    return {"accuracy": metrics["test_accuracy"], "params": metrics["params"], "size_bytes": metrics["size_bytes"],
            "macs": metrics["macs"], "bitops": metrics["bitops"], "latency_ms_b1": None}


def metric_figures(metrics: dict) -> list[tuple[str, str]]:
    """(label, value) for the headline figures of a model."""
    latency = metrics.get("latency_ms_b1")
    return [("Accuracy (test)", f"{metrics['accuracy']:.2f}%"), ("Parameters", si(metrics["params"])),
            ("Size", human_bytes(metrics["size_bytes"])), ("MACs", si(metrics["macs"])), ("BitOps", si(metrics["bitops"])),
            ("Latency (batch 1)", "not measured" if latency is None else f"{latency:.3f} ms")]


# --- methods and the plan ----------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One field of a method's config, as a widget shows it."""

    method: str
    name: str
    default: object
    choices: tuple | None
    strength: bool

    @property
    def key(self) -> str:
        return f"{WIDGET_PREFIX}{self.method}.{self.name}"


def method_settings(method) -> list[Setting]:
    """The fields of a registry method's config, its strength knob first."""
    settings = [Setting(method.name, f.name, f.default if f.default is not MISSING else f.default_factory(),
                        tuple(f.metadata["choices"]) if "choices" in f.metadata else None, f.name == method.strength)
                for f in fields(method.config_type)]
    return sorted(settings, key=lambda s: not s.strength)


def plan_defaults() -> dict:
    """Widget keys of the Methods page and their starting values: the engine's defaults."""
    from .explore import ExploreSpec
    from .methods.registry import METHODS

    spec = ExploreSpec()
    defaults = {"w_methods": list(spec.methods), "w_objective": spec.objective, "w_weight": spec.weight, "w_seeds": spec.seeds,
                "w_epochs": spec.budget.epochs, "w_lr": spec.budget.lr, "w_device": spec.device, "w_exhaustive": spec.exhaustive,
                "w_min_margin": spec.min_margin, "w_repeat": NO_REPEAT, "w_executor": spec.executor, "w_ray_address": ""}
    for method in METHODS.values():
        defaults |= {s.key: s.default for s in method_settings(method)}
    return defaults


def plan_from_state(state):
    """The ExploreSpec the current choices make; a ValueError says what is impossible about them."""
    from .explore import ExploreSpec
    from .methods.registry import get_method
    from .train import Budget

    defaults = plan_defaults()
    value = lambda key: state.get(key, defaults[key])
    methods = tuple(value("w_methods"))
    settings = {}
    for name in methods:
        changed = {s.name: value(s.key) for s in method_settings(get_method(name)) if value(s.key) != s.default}
        if changed:
            settings[name] = changed
    repeat = value("w_repeat")
    choice = base_choice(state)
    return ExploreSpec(model=choice["model"], data=choice["data"], architecture=choice["architecture"],
                       input_size=choice["input_size"], methods=methods, settings=settings, objective=value("w_objective"),
                       weight=float(value("w_weight")), seeds=int(value("w_seeds")),
                       budget=Budget(epochs=float(value("w_epochs")), lr=float(value("w_lr"))), device=value("w_device"),
                       exhaustive=bool(value("w_exhaustive")), min_margin=float(value("w_min_margin")),
                       repeat=None if repeat in (None, NO_REPEAT) or repeat not in methods else repeat,
                       executor=value("w_executor"), ray_address=value("w_ray_address").strip() or None)


def plan_cost(spec, mean_seconds: float | None) -> dict:
    """Method applications of an exploration and an estimate of its time."""
    from . import order

    n = len(spec.methods)
    pairwise, exhaustive = order.pairwise_applications(n), order.exhaustive_applications(n)
    per_seed = exhaustive if spec.exhaustive else pairwise
    applications = per_seed * spec.seeds + n  # + the chain applied once to the base on the test split
    guess = sample_step_seconds(spec)
    each = mean_seconds or guess or DEFAULT_STEP_SECONDS
    basis = "measured" if mean_seconds else ("sample" if guess else "default")
    return {"pairwise_per_seed": pairwise, "exhaustive_per_seed": exhaustive, "per_seed": per_seed, "seeds": spec.seeds,
            "applications": applications, "seconds_each": each, "basis": basis, "seconds": applications * each}


def sample_step_seconds(spec) -> float | None:
    """Seconds per application of a sample model on its own data, from its card's MACs and training
    images; None for other models or data."""
    from .checkpoints import list_samples, sample_card

    if spec.model not in list_samples() or spec.data != "digits":
        return None
    card = sample_card(spec.model)
    work = card["metrics"]["macs"] * card["data"]["train"] * spec.budget.epochs * 3
    return max(0.2, work * CPU_SECONDS_PER_MAC)


# --- jobs -------------------------------------------------------------------------------------

def is_active(job: dict | None) -> bool:
    return job is not None and job["status"] in ACTIVE


def job_title(job: dict) -> str:
    spec = job["spec"]
    what = {"explore": lambda: ", ".join(spec["methods"]), "baseline": lambda: "baseline",
            "export": lambda: "export " + " -> ".join(spec["chain"])}[job.get("kind", "explore")]()
    return f"{job['id']} · {what} · {Path(spec['model']).name} on {Path(spec['data']).name} · {job['status']}"


def job_rows(jobs: list[dict]) -> list[dict]:
    """One row per job for a table."""
    return [{"id": job["id"], "status": job["status"], "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(job["created"])),
             "model": Path(job["spec"]["model"]).name, "data": Path(job["spec"]["data"]).name,
             "methods": ", ".join(job["spec"].get("methods") or job["spec"].get("chain", ())),
             "seeds": job["spec"].get("seeds"), "applications": f"{job['done']}/{job['total']}" if job["total"] else "",
             "error": job["error"] or ""} for job in jobs]


def pair_progress(spec: dict, steps: list[dict]) -> list[dict]:
    """Finished applications per single method, per pair (both orders) and, in an exhaustive run, of
    the longer orders; with the first failure's reason."""
    from . import order

    methods, seeds = spec["methods"], spec["seeds"]
    by_chain: dict[tuple, list[dict]] = {}
    for step in steps:
        by_chain.setdefault(tuple(step["chain"]), []).append(step)
    groups = [(f"{m} alone", [(m,)]) for m in methods]
    groups += [(f"{a} / {b}", [(a, b), (b, a)]) for i, a in enumerate(methods) for b in methods[i + 1:]]
    if spec["exhaustive"]:
        groups.append(("orders of 3 or more", [c for c in order.exhaustive_plan(methods) if len(c) > 2]))
    rows = []
    for label, chains in groups:
        if not chains:
            continue
        done = [s for chain in chains for s in by_chain.get(chain, [])]
        broken = next((s for s in done if s["status"] != "ok"), None)
        total = len(chains) * seeds
        rows.append({"applications": label, "done": len(done), "of": total, "progress": len(done) / total,
                     "status": broken["status"] if broken else ("ok" if len(done) == total else "waiting"),
                     "reason": broken["reason"] if broken else ""})
    return rows


def exploration_record(store: JobStore, job_id: str | None) -> tuple[dict | None, str]:
    """The result of a finished exploration, or None and a line saying why there is none."""
    if not job_id:
        return None, "No exploration is open: launch one on the Runs page, or open one from its list of runs."
    job = store.get(job_id)
    if job is None:
        return None, f"There is no run {job_id} in the job store {store.path}: open one from the list on the Runs page."
    if job["kind"] != "explore":
        return None, f"Job {job_id} is a {job['kind']} job, not an exploration: open an exploration on the Runs page."
    if job["status"] != "done":
        return None, f"Run {job_id} is {job['status']}: its results appear here once it is done (see the Runs page)."
    return job["result"], ""


def export_spec(record: dict, chain, formats, exploration: str) -> ExportSpec:
    return ExportSpec.from_exploration(record, chain, formats=formats, exploration=exploration)


def latest_export(store: JobStore, exploration: str) -> dict | None:
    """The newest export job made from the exploration `exploration`."""
    return next((job for job in store.list_jobs("export") if job["spec"].get("exploration") == exploration), None)


def export_files(result: dict) -> list[tuple[str, Path]]:
    """(format, file) of every file an export job wrote, manifest last."""
    folder = Path(result["folder"])
    files = [(entry["format"], folder / entry["file"]) for entry in result["manifest"]["formats"] if "file" in entry]
    return files + [("manifest", folder / "manifest.json")]


# --- formatting ------------------------------------------------------------------------------

def si(value: float | None, unit: str = "") -> str:
    """3 significant digits with a k/M/G/T prefix: 3040083968 -> '3.04 G'."""
    if value is None:
        return "n/a"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def human_bytes(value: float) -> str:
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}"
    return f"{value:.0f} B"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    return "CPU (no CUDA GPU found)"
