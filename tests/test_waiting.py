"""OpenMP's idle threads spin briefly in the processes ordercomp starts (the CLI here; job workers in
jobs/test_launch.py), set before torch loads OpenMP; a setting the environment already makes wins."""
from __future__ import annotations

import os
import subprocess
import sys

from ordercomp.waiting import SPIN_COUNT, spin_briefly

WAIT_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def without_wait_settings() -> dict:
    return {name: value for name, value in os.environ.items() if name not in WAIT_VARIABLES}


def test_the_spin_count_is_set_only_where_the_environment_sets_neither():
    assert spin_briefly({}) == {"GOMP_SPINCOUNT": SPIN_COUNT}
    assert spin_briefly({"GOMP_SPINCOUNT": "300000"}) == {"GOMP_SPINCOUNT": "300000"}
    assert spin_briefly({"OMP_WAIT_POLICY": "PASSIVE"}) == {"OMP_WAIT_POLICY": "PASSIVE"}  # its own count: none


def test_the_cli_sets_it_before_torch_is_imported():
    """libgomp reads the count once, when torch loads it: what the environment holds then is what counts."""
    watch = ("import os, sys\n"
             "seen = []\n"
             "class Watch:\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' and not seen: seen.append(os.environ.get('GOMP_SPINCOUNT'))\n"
             "sys.meta_path.insert(0, Watch())\n"
             "import ordercomp.cli\n"
             "print(seen)\n")
    printed = subprocess.run([sys.executable, "-c", watch], env=without_wait_settings(), capture_output=True, text=True,
                             check=True).stdout
    assert printed.strip() == f"['{SPIN_COUNT}']"
