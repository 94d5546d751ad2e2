"""Fixtures for the job tests: a store in a temporary folder and explorations of the tiny checkpoint
(`tiny_checkpoint`, tests/conftest.py: an untrained cnn_tiny, so no test pays for training a base), uploaded
beside the store as the Model & data page keeps a checkpoint (a worker reads no other model file).
"""
import os
import signal

import pytest

from ordercomp import uploads
from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.jobs import JobStore, is_alive
from ordercomp.train import Budget


@pytest.fixture
def store(tmp_path):
    """A fresh store; a worker of it still alive after the test (one that failed while waiting) is stopped."""
    store = JobStore(tmp_path / "jobs.sqlite")
    yield store
    for job in store.list_jobs():
        if is_alive(job):
            try:
                os.killpg(job["pid"], signal.SIGKILL)  # a real worker leads its own session
            except ProcessLookupError:
                os.kill(job["pid"], signal.SIGKILL)


@pytest.fixture
def tiny_upload(tmp_path, tiny_checkpoint):
    """The tiny checkpoint uploaded to the store of a test (its folder is tmp_path), as the Model & data page keeps it."""
    return uploads.keep_checkpoint(tmp_path / uploads.CHECKPOINTS_FOLDER, tiny_checkpoint.name, tiny_checkpoint.read_bytes())


@pytest.fixture
def tiny_spec(tiny_upload):
    """An ExploreSpec on the tiny checkpoint uploaded to the test's store (`tiny_upload`): one seed, the pairwise plan, no
    fine-tuning unless `epochs` is given, and no shipped file unless `ship` is given. The job tests are about the queue, the workers and the store; the default search's
    race would add extra seeds to every job (tests/test_explore.py and tests/test_pages.py run it through the explorer and a
    worker), and writing the chain and the base as ONNX and timing them adds seconds to every job (tests/test_shipped.py
    tests it; tests/test_pages.py and tests/test_browser.py read a worker's shipped figures)."""
    def make(methods=("prune", "quantize"), epochs=0.0, **fields):
        fields = {"model": str(tiny_upload), "architecture": "cnn_tiny", "seeds": 1, "device": "cpu", "search": "pairwise",
                  "ship": None} | fields
        return ExploreSpec(methods=methods, budget=Budget(epochs=epochs), **fields)
    return make
