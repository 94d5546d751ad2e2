"""On-disk cache of step results, keyed by a hash of everything that determines them.

A key covers the base model's weights, the data, the chain with every config, the seed, the
fine-tuning budget, what was measured (validation, and latency in which runtime) and where the step
ran: the kind of device (CUDA trains under bf16 autocast) and the versions of the libraries that
compute and time the steps. So an interrupted or repeated exploration resumes instead of
recomputing, and a step computed under other conditions is computed again, never reused.
The torch thread count is left out on purpose: it moves float sums in their last bits only, and
the in-process and Ray executors (1 thread per task) share one cache. A change to ordercomp that
changes step results bumps CACHE_VERSION.
Files are written atomically (temp file + rename): a crash never leaves half a record. A folder that
fails during a run (a full disk) stops being written, and the run goes on with its results (`keep`).

The chain an exploration recommends is applied to the base once more, on the test split, and that
compressed model is kept too (`put_chain`), so that an export of the same chain with the same settings
(`compress`: the dashboard's export job, `ordercomp apply`) ships that very model instead of training
another. It is kept as `torch.save` of the whole module, because a compressed model's architecture
(pruned widths, a student, exit heads, quantiser state) is not rebuilt from a state dict; loading it
unpickles, which can run code. It is loaded only from this folder, which only ordercomp writes (as it
does the step records, whose figures decide the order), only under the key of the exact inputs that
made it, and only when its SHA-256 matches the one recorded beside it when it was written, so a file
that was cut short or swapped is applied again rather than loaded. The cache folder must therefore be
as private as the project's own code: anyone who can write into it can write the record too.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import pickle
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..folders import FOLDER_ERRNOS, make_writable_folder, sha256, write_atomically
from .pipeline import StepResult

CACHE_VERSION = 10  # 10: the parameters and storage of a traced network (its stem, stages and head GraphModules) no longer count batch norm's running statistics; 9: prune and distill narrow a weight tied between layers alike in both and keep it tied, lowrank shares its factors, prune keeps a channel shuffle's widths (steps kept before hold untied weights, or a walk stopped at its bound); 8: peak memory counts a storage until the last tensor on it is released (an alias that outlived the tensor it shares was counted as freed); 7: a ViT's exits read the class token's own path (the BitOps of steps with ViT exits fall); 6: prune narrows what a forward that holds some widths lets it (a user's own transformer's MLPs), int8 converts a network without stages or BatchNorm layer by layer, exits read tokens, attention products inside an int8 part count at full bits; 5: prune removes a ViT's heads too (prune steps of ViTs change); 4: a ViT's 4-bit attention probabilities on a log grid
LIBRARIES = ("torch", "torch-pruning", "torchao", "onnxruntime")  # what trains, compresses, measures and times the steps


def content_key(**payload) -> str:
    """A short hash of JSON-serialisable inputs."""
    return hashlib.sha256(json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True).encode()).hexdigest()[:24]


def step_key(base: str, data: str, chain: tuple[str, ...], configs: dict[str, dict], seed: int, budget: dict, split: str,
             environment: dict) -> str:
    return content_key(base=base, data=data, chain=list(chain), configs=[configs[name] for name in chain],
                       seed=seed, budget=budget, split=split, environment=environment)


def chain_key(base: str, data: str, chain, configs: dict[str, dict], seed: int, budget: dict, environment: dict) -> str:
    """The key of a whole chain applied to the base on the test split (every step measured with latency)."""
    return content_key(kind="applied chain", base=base, data=data, chain=list(chain), configs=[configs[name] for name in chain],
                       seed=seed, budget=budget, split="test+latency", environment=environment)


def environment(device: str) -> dict:
    """Where a step runs, as far as it changes the step's numbers: the device type and the library versions."""
    return {"device": device, "libraries": library_versions()}


@functools.cache
def library_versions() -> dict[str, str | None]:
    return {name: installed_version(name) for name in LIBRARIES}


def installed_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:  # the runtimes check for onnxruntime themselves and say what to install
        return None


# Said once while the run goes on (the CLI's progress, a dashboard job's log) when `StepCache.keep` stops writing
STOPPED_WHILE_RUNNING = ("The step cache stopped being written ({}): the run goes on, but the steps from here on are not "
                         "cached, so a resume or a rerun computes them again; free space in the cache folder")


class StepCache:
    """Step results as small JSON files in a folder; `None` folder means no caching."""

    def __init__(self, folder: Path | str | None):
        # checked before any work: a step cache that cannot be written would fail the run after its first step
        self.folder = make_writable_folder(folder, "step cache") if folder else None
        self.hits = 0
        self.stopped: str | None = None  # why writing stopped during the run (a full disk): the run goes on uncached

    def keep(self, write: Callable[[], object]) -> bool:
        """Run `write()`, which writes a file into the folder atomically, unless the folder failed (a full disk or quota,
        a folder made read-only meanwhile): then this and every later write is skipped, so the run goes on and keeps its
        results; `stopped` says why. Whether the file was written."""
        if not self.folder or self.stopped:
            return False
        try:
            write()
        except OSError as error:
            if error.errno not in FOLDER_ERRNOS:
                raise
            self.stopped = error.strerror or str(error)
            return False
        return True

    def _keep_json(self, name: str, record: dict) -> bool:
        return self.keep(lambda: write_atomically(self.folder / name, lambda temp: Path(temp).write_text(json.dumps(record))))

    def get(self, key: str) -> StepResult | None:
        if not self.folder or not (self.folder / f"{key}.json").exists():
            return None
        try:
            result = StepResult.from_dict(json.loads((self.folder / f"{key}.json").read_text()))
        except (json.JSONDecodeError, TypeError, KeyError):
            return None
        self.hits += 1
        return result

    def put(self, key: str, result: StepResult) -> None:
        self._keep_json(f"{key}.json", result.to_dict())

    def get_chain(self, key: str) -> tuple[nn.Module, list[StepResult]] | None:
        """The compressed model and step results kept under `key` (see the module's docstring), or None when
        there are none, or the model file is not the one recorded, or it cannot be loaded here."""
        if not self.folder or not (self.folder / f"chain-{key}.json").exists():
            return None
        path = self.folder / f"chain-{key}.pt"
        try:
            record = json.loads((self.folder / f"chain-{key}.json").read_text())
            if not path.is_file() or sha256(path) != record["sha256"]:
                return None
            model = torch.load(path, map_location="cpu", weights_only=False)  # ordercomp's own file, checked above
            steps = [StepResult.from_dict(step) for step in record["steps"]]
        except Exception:  # a record of another version, a class that no longer imports: apply the chain again
            return None
        return (model, steps) if isinstance(model, nn.Module) else None

    def put_chain(self, key: str, model: nn.Module, steps: list[StepResult]) -> None:
        """Keep a compressed model (CPU copy) and its step results under `key`; the model file first, then the
        record naming its checksum, so a record never names a file that is not there. A model that cannot be
        pickled (a module holding a lambda) is not kept: an export applies its chain again."""
        try:
            if not self.keep(lambda: write_atomically(self.folder / f"chain-{key}.pt", lambda temp: torch.save(copy.deepcopy(model).cpu(), temp))):
                return
        except (pickle.PicklingError, TypeError, AttributeError):
            return
        record = {"sha256": sha256(self.folder / f"chain-{key}.pt"), "steps": [step.to_dict() for step in steps]}
        self._keep_json(f"chain-{key}.json", record)
