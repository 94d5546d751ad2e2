"""On-disk cache of step results, keyed by a hash of everything that determines them.

A key covers the base model's weights, the data, the chain with every config, the seed, the
fine-tuning budget, what was measured (validation, and latency in which runtime) and where the step
ran: the kind of device (CUDA trains under bf16 autocast) and the versions of the libraries that
compute and time the steps. So an interrupted or repeated exploration resumes instead of
recomputing, and a step computed under other conditions is computed again, never reused.
The torch thread count is left out on purpose: it moves float sums in their last bits only, and
the in-process and Ray executors (1 thread per task) share one cache. A change to ordercomp that
changes step results bumps CACHE_VERSION.
Files are written atomically (temp file + rename): a crash never leaves half a record.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .pipeline import StepResult

CACHE_VERSION = 3
LIBRARIES = ("torch", "torch-pruning", "torchao", "onnxruntime")  # what trains, compresses, measures and times the steps


def content_key(**payload) -> str:
    """A short hash of JSON-serialisable inputs."""
    return hashlib.sha256(json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True).encode()).hexdigest()[:24]


def step_key(base: str, data: str, chain: tuple[str, ...], configs: dict[str, dict], seed: int, budget: dict, split: str,
             environment: dict) -> str:
    return content_key(base=base, data=data, chain=list(chain), configs=[configs[name] for name in chain],
                       seed=seed, budget=budget, split=split, environment=environment)


def environment(device: str) -> dict:
    """Where a step runs, as far as it changes the step's numbers: the device type and the library versions."""
    return {"device": device, "libraries": library_versions()}


@functools.cache
def library_versions() -> dict[str, str | None]:
    return {name: _installed(name) for name in LIBRARIES}


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:  # the runtimes check for onnxruntime themselves and say what to install
        return None


class StepCache:
    """Step results as small JSON files in a folder; `None` folder means no caching."""

    def __init__(self, folder: Path | str | None):
        self.folder = Path(folder) if folder else None
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)
        self.hits = 0

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
        if not self.folder:
            return
        handle, temp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(handle, "w") as file:
            json.dump(result.to_dict(), file)
        os.replace(temp, self.folder / f"{key}.json")
