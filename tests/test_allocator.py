"""The processes that fine-tune keep freed memory for reuse instead of faulting its pages in again (ordercomp.allocator)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ordercomp import cli

ROOT = Path(__file__).resolve().parents[1]
SETS_OF_TENSORS = """
import resource, sys, torch
from ordercomp.allocator import keep_freed_memory
assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    held = [torch.ones(1 << 20) for _ in range(24)]  # 4 MiB tensors freed together, 96 MiB: past glibc's own trim threshold
    del held
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_freed_tensors_are_reused_without_faulting_their_pages_in_again():
    """Stop 32: the ViT exploration took 6.4 million page faults, glibc handing freed blocks back to the system and
    faulting them in, zeroed, on the next allocation. Kept, ten rounds of 96 MiB fault about one round's pages."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", SETS_OF_TENSORS], capture_output=True, text=True, env=env, check=True)
    touched = 10 * 24 * (4 << 20) // 4096
    assert int(run.stdout) < touched // 5


def test_the_cli_keeps_freed_memory_before_its_command_runs(monkeypatch, tmp_path):
    calls, run_measure = [], cli.run_measure
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("kept"))
    monkeypatch.setattr(cli, "run_measure", lambda args: calls.append("command") or run_measure(args))
    assert cli.main(["measure", "--model", str(tmp_path / "missing.pt")]) != 0
    assert calls == ["kept", "command"]  # once, and before the command (its allocations are the ones to keep)
