"""The suite's memory ceiling: a test that runs away stops the run with its name and the stacks, not the machine."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import memory_ceiling

HOARDING_TEST = '''
import time
def test_that_hoards():
    kept = [bytearray(1 << 20) for _ in range(1024)]  # 1 GiB, twice the ceiling this run is given
    time.sleep(60)  # held, so that the ceiling's look every half second sees it

def test_that_passes():
    pass
'''


def hoarding_run(folder: Path, *options: str) -> subprocess.CompletedProcess:
    """pytest on HOARDING_TEST (and a test that passes) in `folder`, under a ceiling of 0.5 GiB."""
    (folder / "test_hoard.py").write_text(HOARDING_TEST)
    (folder / "pytest.ini").write_text("[pytest]\n")
    env = dict(os.environ, ORDERCOMP_TEST_MEMORY_CEILING_GIB="0.5",
               PYTHONPATH=os.pathsep.join([str(Path(memory_ceiling.__file__).parent), *sys.path]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "memory_ceiling", "-p", "no:cacheprovider", *options,
                           "test_hoard.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def named_with_its_stack(run: subprocess.CompletedProcess, folder: Path) -> bool:
    return ("test_hoard.py::test_that_hoards took the test process past its memory ceiling of 0.5 GiB" in run.stderr
            and bool(re.search(re.escape(f'File "{folder / "test_hoard.py"}", line ') + r"[45] in test_that_hoards", run.stderr)))


def test_a_test_that_takes_the_process_past_the_ceiling_stops_the_run_and_is_named(tmp_path):
    run = hoarding_run(tmp_path)
    assert run.returncode == memory_ceiling.EXIT_STATUS
    assert named_with_its_stack(run, tmp_path)


def test_under_xdist_the_worker_stops_and_the_run_fails_that_test_by_name(tmp_path):
    """The README's test command runs two xdist workers: the worker that ran away stops with its message and stacks,
    xdist fails that test as crashed, and the other test still runs."""
    run = hoarding_run(tmp_path, "-n", "2")
    assert run.returncode == 1 and named_with_its_stack(run, tmp_path)
    assert re.search(r"worker 'gw\d' crashed while running 'test_hoard.py::test_that_hoards'", run.stdout)
    assert "1 failed, 1 passed" in run.stdout


def test_the_ceiling_is_eight_gibibytes_unless_set(monkeypatch):
    monkeypatch.delenv("ORDERCOMP_TEST_MEMORY_CEILING_GIB", raising=False)
    assert memory_ceiling.ceiling_bytes() == 8 * (1 << 30)
