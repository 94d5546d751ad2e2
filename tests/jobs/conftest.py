"""Fixtures for the job tests: a store in a temporary folder and a tiny, deterministic base model.

The base is an untrained cnn_tiny saved as a checkpoint, so every process that loads it sees the
same weights (and the same cache keys) and no test pays for training a base model.
"""
import os
import signal
import time

import pytest
import torch

from ordercomp.exploration.explorer import ExploreSpec
from ordercomp.jobs import JobStore, is_alive
from ordercomp.train import Budget
from ordercomp.models.zoo import create_model


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


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "cnn_tiny.pt"
    torch.save(create_model("cnn_tiny", 10, 1).state_dict(), path)
    return path


@pytest.fixture
def tiny_spec(tiny_checkpoint):
    """An ExploreSpec on the tiny checkpoint: one seed, no fine-tuning unless `epochs` is given."""
    def make(methods=("prune", "quantize"), epochs=0.0, **fields):
        fields = {"model": str(tiny_checkpoint), "architecture": "cnn_tiny", "seeds": 1, "device": "cpu"} | fields
        return ExploreSpec(methods=methods, budget=Budget(epochs=epochs), **fields)
    return make


@pytest.fixture
def wait_for():
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    def wait(condition, what, timeout=60.0, interval=0.02):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
    return wait
