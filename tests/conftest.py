"""Shared fixtures (the digits data at 8x8, a briefly trained tiny CNN, an untrained one saved as a
checkpoint; no network needed) and the guard that keeps every test out of the checkout.

The guard: each test runs in a working folder and with a job store ($ORDERCOMP_STORE) of its own,
so a relative default (`.ordercomp/cache`, `runs/latest`, `.ordercomp/jobs.sqlite`) lands there; and a
test that still creates, changes or removes anything in the checkout fails at teardown with the list.
The check stats every file of the checkout but .git, .venv and bytecode (about 140 entries) before
and after each test: measured 0.8 ms a snapshot on an idle core, 3 ms at load average 15, so under two
seconds over the suite. What a fixture writes as a test sets it up or tears it down counts as the test's.

And the memory ceiling (memory_ceiling.py): a test that takes the process past 8 GiB stops the run with its name.

Under pytest-xdist (the README's test command runs two workers on two cores) each worker runs torch on one thread:
with two each, their threads waited on each other and the run took longer than in one process. The processes the
tests start keep their own thread counts (stop 37's note has the figures).

OpenMP's waiting threads sleep (OMP_WAIT_POLICY=PASSIVE, unless the environment says otherwise), in this process and
every process it starts: the suite runs more busy processes than CI has cores (two workers, and the job workers, app
servers and Chromium their tests start), and a thread that spins while it waits holds a core the thread it waits for
needs. Beside one CPU hog, the browser module's export test took 303 s spinning and 103 s sleeping; idle, 98 s and 96 s.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime (docstring)

import pytest
import torch

from ordercomp.data.datasets import load_data
from ordercomp.methods.base import Context
from ordercomp.train import Budget, train
from ordercomp.models.zoo import create_model
from testkit import holding, wait_for as wait_until

torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
pytest_plugins = ["memory_ceiling"]

CHECKOUT = Path(__file__).resolve().parent.parent
NOT_THE_CHECKOUTS = {".git", ".venv", "__pycache__", ".pytest_cache"}  # git's, the venv, bytecode, pytest's own cache
BEFORE = pytest.StashKey[dict]()


def checkout_files() -> dict[str, tuple[int, int] | None]:
    """Every file of the checkout with its (mtime, size), every folder with None. Folder mtimes are left
    out: Python writes __pycache__ folders next to the modules it imports."""
    found, folders = {}, [CHECKOUT]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name in NOT_THE_CHECKOUTS:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    found[entry.path] = None
                    folders.append(entry.path)
                else:
                    stat = entry.stat(follow_symlinks=False)
                    found[entry.path] = (stat.st_mtime_ns, stat.st_size)
    return found


def changes(before: dict, after: dict) -> list[str]:
    relative = lambda path: os.path.relpath(path, CHECKOUT)
    return ([f"created {relative(p)}" for p in sorted(after.keys() - before.keys())]
            + [f"removed {relative(p)}" for p in sorted(before.keys() - after.keys())]
            + [f"changed {relative(p)}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    item.stash[BEFORE] = checkout_files()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    written = changes(item.stash[BEFORE], checkout_files())
    if written:
        pytest.fail(f"{item.nodeid} wrote into the checkout {CHECKOUT} (tests write under tmp_path only; or the checkout "
                    "was edited while it ran): " + "; ".join(written[:10]) + (f"; and {len(written) - 10} more" if len(written) > 10 else ""),
                    pytrace=False)
    return result


@pytest.fixture(autouse=True)
def away_from_the_checkout(tmp_path_factory, monkeypatch):
    """A working folder and job store of the test's own, so relative defaults never land in the checkout."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    monkeypatch.setenv("ORDERCOMP_STORE", str(folder / ".ordercomp" / "jobs.sqlite"))


@pytest.fixture(scope="session")
def digits():
    return load_data("digits")


@pytest.fixture(scope="session")
def tiny_model(digits):
    torch.manual_seed(0)
    model = create_model("cnn_tiny", digits.num_classes, digits.in_channels)
    return train(model, digits, Budget(epochs=4, lr=5e-3), seed=0, device=torch.device("cpu"))


@pytest.fixture()
def context(digits):
    return Context(digits, Budget(epochs=1), seed=0)


@pytest.fixture()
def bomb_png():
    """Writes a tiny PNG whose header claims width x height pixels (decoding it would need gigabytes)."""
    import struct
    import zlib

    from PIL import Image

    def write(path, width=20000, height=20000):
        Image.new("L", (1, 1)).save(path)
        data = bytearray(path.read_bytes())
        data[16:24] = struct.pack(">II", width, height)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the IHDR chunk's checksum
        path.write_bytes(bytes(data))

    return write


@pytest.fixture
def read_only():
    """Make a file read-only for this process, root included (chattr +i); undone after the test."""
    import os
    import shutil
    import subprocess

    locked = []

    def lock(path):
        path.chmod(0o444)
        if os.geteuid() == 0:  # root writes through permissions: mark the file immutable instead
            if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                pytest.skip("running as root without chattr: no way to make a file read-only here")
            locked.append(path)

    yield lock
    for path in locked:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def fake_workers(monkeypatch):
    """Workers that start (a process whose command line names the worker module) but do nothing;
    lists the ids of the jobs they were started for. Every one is killed after the test."""
    import subprocess
    import sys

    from ordercomp.jobs import launch

    job_ids, processes = [], []

    def spawn(store, job_id):
        processes.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", launch.WORKER_MODULE]))
        job_ids.append(job_id)
        return processes[-1].pid

    monkeypatch.setattr(launch, "spawn_worker", spawn)
    yield job_ids
    for process in processes:
        process.kill()
        process.wait()


@pytest.fixture
def damage_pages():
    """Issue 19, item 6: overwrite the start of every page of an SQLite file but the first, so its header and
    schema stay valid while its tables are damaged (as a bad disk or a half-copied file leaves them)."""
    def damage(path):
        data = bytearray(path.read_bytes())
        page_size = int.from_bytes(data[16:18], "big")
        for offset in range(page_size, len(data), page_size):
            data[offset:offset + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    return damage


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained cnn_tiny (seed 0) saved as a state dict: every process that loads it sees the same
    weights (and the same cache keys), and no test pays for training a base."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "cnn_tiny.pt"
    torch.save(create_model("cnn_tiny", 10, 1).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def fast_base(tmp_path_factory):
    """`testkit.FAST`'s base (the zoo's cnn_tiny trained on digits for its BASE_BUDGET) trained once for the session, as
    its cache file `base-<key>.safetensors`: an exploration of FAST in an empty cache trains it first, more than half of
    a small exploration's time on a busy machine."""
    from testkit import FAST
    from ordercomp.exploration.explorer import prepare_base

    folder = tmp_path_factory.mktemp("fast-base")
    prepare_base(FAST["model"], "digits", device=FAST["device"], cache_dir=folder)
    (weights,) = folder.glob("base-*.safetensors")
    return weights


@pytest.fixture
def fast_cache(tmp_path, fast_base):
    """An empty step cache (the test's tmp_path) that holds FAST's trained base (`testkit.holding`)."""
    return holding(fast_base, tmp_path)


@pytest.fixture
def quick_timing(monkeypatch):
    """Latency timing at its least, for tests that check what is timed and where, not how precisely: no minimum warm-up
    or timed wall time, and warm-up ends after its first round of calls (`runtimes.warm_up`). Each timing still makes
    its `repeats` timed calls. A busy machine made warm-up run to its cap of a second on every runner and batch size."""
    from ordercomp.deploy import runtimes

    monkeypatch.setattr(runtimes, "WARMUP_S", 0.0)
    monkeypatch.setattr(runtimes, "MIN_TIMED_S", 0.0)
    monkeypatch.setattr(runtimes, "WARMUP_MAX_S", 0.0)


@pytest.fixture
def wait_for():
    """`testkit.wait_for`: poll a condition until it holds, fail with what was awaited after a timeout."""
    return wait_until
