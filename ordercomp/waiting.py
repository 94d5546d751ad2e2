"""How long OpenMP's idle threads spin before they sleep, in the processes ordercomp starts to fine-tune (the CLI, the
dashboard's job workers, a local Ray cluster's workers).

torch's parallel loops run on GNU OpenMP (libgomp), whose threads, between two loops, spin for 300,000 rounds before
they sleep. Where another process holds a core, a spinning thread keeps the core that the thread it waits for needs:
beside one busy process on 2 cores a small exploration took 2.5-3.4 times as long as on the idle machine (once 7.9).
With 10,000 rounds it took 1.7 times as long, the same time idle, and the eager latency it reports was the same
(benchmarks/bench_openmp_wait.py; README, "Sharing the machine"). libgomp reads the setting once, when torch loads it,
so it goes into a process's environment before that process imports torch. A setting the environment already makes
(GOMP_SPINCOUNT, or OMP_WAIT_POLICY, which sets its own count) wins. The Python API leaves its caller's process as it
is, but for a local Ray cluster, whose workers inherit the variable from it (`executors.start_local_ray`).
"""
from __future__ import annotations

import os
from typing import MutableMapping

SPIN_COUNT_VARIABLE, WAIT_POLICY_VARIABLE = "GOMP_SPINCOUNT", "OMP_WAIT_POLICY"
SPIN_COUNT = "10000"


def spin_briefly(env: MutableMapping[str, str] = os.environ) -> MutableMapping[str, str]:
    """`env` with libgomp's spin count at SPIN_COUNT, unless it already sets the spin count or the wait policy."""
    if SPIN_COUNT_VARIABLE not in env and WAIT_POLICY_VARIABLE not in env:
        env[SPIN_COUNT_VARIABLE] = SPIN_COUNT
    return env
