"""What a worker runs for each job kind. Every runner takes the store, the job id, the job's spec
dict and the events callback, and returns the job's result record and a one-line summary.

    explore   the Order of Compression exploration of an ExploreSpec -> Exploration.to_dict()
    baseline  prepare the base model of a BaselineSpec and measure it on the test split
    export    apply the chain of an ExportSpec to the base (or reuse the model an exploration kept under the
              same key: cache.chain_key) and write the compressed model files

Every kind shares the store's cache, so a zoo architecture is trained once for all of them. A worker
never imports a FILE.py:NAME or package.module:NAME a spec names: it builds only the samples, the zoo's
architectures and the model factories the server's operator registered
(`ordercomp.models.checkpoints.registered_models`), reads model files only from the checkpoints uploaded to the
dashboard and data only from the folders the operator offers, and connects only to the Ray clusters it offers
(`check_served`).
"""
from __future__ import annotations

from typing import Callable

from ..exploration.executors import check_served_ray_address
from ..exploration.explorer import Explorer, ExploreSpec, compress, prepare_base, resolve_device
from ..deploy.kept_files import kept_in
from ..deploy.export import DEFAULT_FORMATS, check_export_folder, export_bytes, export_compressed, verify_export
from ..metrics import measure
from ..models.checkpoints import CheckpointError, list_samples, registered_models
from ..models.zoo import ARCHITECTURES, RENAMED
from ..order.plan import chain_text
from ..exploration.pipeline import OK
from ..train import Budget
from ..uploads import check_served_data_path, is_kept_checkpoint
from .specs import BaselineSpec, ExportSpec
from .store import JobStore

Events = Callable[[dict], None]


def check_served(store: JobStore, spec: dict) -> None:
    """What a job may reach is what the dashboard offers its users: its models (`check_served_model`), the data folders
    (`check_served_data`) and the Ray clusters (`check_served_ray_address`) of its operator, whatever a stale or crafted
    session's spec names."""
    check_served_model(store, spec)
    check_served_data(store, spec)
    check_served_ray_address(spec.get("ray_address"))


def check_served_model(store: JobStore, spec: dict) -> None:
    """A job's model is one the dashboard offers, by name (a registered factory, a sample, a zoo architecture), or a
    checkpoint uploaded to it, and its weights are uploaded too (`is_kept_checkpoint`), checked before anything is read
    (a zoo name since renamed is left to `resolve_model`, which says what it is called now)."""
    model, weights, registered = str(spec.get("model", "digits_cnn")), spec.get("weights"), registered_models()
    if model not in {*registered, *list_samples(), *ARCHITECTURES, *RENAMED} and not is_kept_checkpoint(model, store.path.parent):
        raise CheckpointError(f"the model {model[:200]} is not a model factory registered on this server "
                              f"({', '.join(sorted(registered)) or 'none'}), a sample, a zoo architecture nor a checkpoint "
                              "uploaded to it: choose the model on the Model & data page")
    if weights is not None and not is_kept_checkpoint(str(weights), store.path.parent):
        raise CheckpointError(f"the weights {str(weights)[:200]} are not a file uploaded to this server: upload them on the "
                              "Model & data page")


def check_served_data(store: JobStore, spec: dict) -> None:
    """A job reads its data only from where the dashboard lets its users read (`check_served_data_path`): a spec
    written by a stale or crafted session is held to the same folders as the page."""
    if spec.get("data", "digits") != "digits":
        check_served_data_path(spec["data"], store.path.parent)


def run_exploration(store: JobStore, job_id: str, spec: dict, events: Events) -> tuple[dict, str]:
    exploration = Explorer(ExploreSpec.from_dict(spec), cache_dir=store.cache_dir(), events=events, import_code=False).explore()
    return exploration.to_dict(), f"chain {chain_text(exploration.chain)}"


def run_baseline(store: JobStore, job_id: str, spec: dict, events: Events) -> tuple[dict, str]:
    spec = BaselineSpec.from_dict(spec)
    base, source, data = prepare_base(spec.model, spec.data, architecture=spec.architecture, model_args=spec.model_args,
                                      weights=spec.weights, ema=spec.ema, normalize=spec.normalize, crop=spec.crop,
                                      input_size=spec.input_size,
                                      device=spec.device, cache_dir=store.cache_dir(), events=events,
                                      trust_torchscript=spec.trust_torchscript, import_code=False)
    events({"kind": "stage", "stage": "measure", "label": "measuring the base model on the test split"})
    device = resolve_device(spec.device)
    metrics = measure(base, data, "test", device=device).to_dict()
    result = {"base": {k: v for k, v in source.items() if k != "card"}, "metrics": metrics,
              "data": data.describe(), "device": str(device)}
    return result, f"base accuracy {metrics['accuracy']:.2f}% on {data.name}"


def run_export(store: JobStore, job_id: str, spec: dict, events: Events) -> tuple[dict, str]:
    spec = ExportSpec.from_dict(spec)
    folder, formats = store.path.parent / "exports" / job_id, spec.formats or DEFAULT_FORMATS
    check_export_folder(folder, formats, export_bytes(spec.model, formats, spec.weights))  # before the work: a full disk, a read-only store folder
    compressed = compress(model=spec.model, data=spec.data, chain=spec.chain, settings=spec.settings, budget=Budget(**spec.budget),
                          device=spec.device, architecture=spec.architecture, model_args=spec.model_args, weights=spec.weights, ema=spec.ema,
                          normalize=spec.normalize, crop=spec.crop, input_size=spec.input_size, seed=spec.seed,
                          cache_dir=store.cache_dir(),
                          events=events, trust_torchscript=spec.trust_torchscript, import_code=False)
    broken = next((step for step in compressed.steps if step.status != OK), None)
    if broken:
        raise ValueError(f"{chain_text(broken.chain)} is {broken.status}: {broken.reason}; choose another order")
    events({"kind": "stage", "stage": "export", "label": "writing and checking the export files"})
    with kept_in(store.cache_dir()):  # the file the exploration shipped is copied, not exported again
        manifest = export_compressed(compressed.model, folder, formats=formats, chain=list(spec.chain),
                                     configs=compressed.configs, metrics=compressed.steps[-1].metrics, data=compressed.data,
                                     base=compressed.source, base_model=compressed.base, reused=compressed.reused,
                                     shipped=exploration_shipped(store, spec.exploration))
    # the folder is this worker's, written a moment ago in the store's exports folder: its TorchScript is ordercomp's own
    result = {"folder": str(folder), "manifest": manifest, "verify": verify_export(folder, trust_torchscript=True),
              "steps": [step.to_dict() for step in compressed.steps], "base_metrics": compressed.base_metrics}
    return result, f"exported {', '.join(manifest['files'])}"


def exploration_shipped(store: JobStore, exploration: str | None) -> dict | None:
    """The shipped file the exploration an export came from measured (`Exploration.shipped`), if it did."""
    job = store.get(exploration) if exploration else None
    return ((job or {}).get("result") or {}).get("shipped")


RUNNERS: dict[str, Callable[[JobStore, str, dict, Events], tuple[dict, str]]] = {
    "explore": run_exploration,
    "baseline": run_baseline,
    "export": run_export,
}
