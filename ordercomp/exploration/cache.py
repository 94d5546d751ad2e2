"""On-disk cache of step results, keyed by a hash of everything that determines them.

A key covers the base model's weights, the data, the chain with every config, the seed and the
fine-tuning budget, so an interrupted or repeated exploration resumes instead of recomputing.
Files are written atomically (temp file + rename): a crash never leaves half a record.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .pipeline import StepResult

CACHE_VERSION = 2


def content_key(**payload) -> str:
    """A short hash of JSON-serialisable inputs."""
    return hashlib.sha256(json.dumps({"v": CACHE_VERSION, **payload}, sort_keys=True).encode()).hexdigest()[:24]


def step_key(base: str, data: str, chain: tuple[str, ...], configs: dict[str, dict], seed: int, budget: dict, split: str) -> str:
    return content_key(base=base, data=data, chain=list(chain), configs=[configs[name] for name in chain],
                       seed=seed, budget=budget, split=split)


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
