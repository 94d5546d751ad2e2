"""How long OpenMP's idle threads should spin in ordercomp's own processes (`ordercomp/waiting.py`): a small
exploration and an eager latency measurement, each in a fresh `ordercomp` process, under libgomp's default (300,000
spins before a thread sleeps) and under other settings, on an idle machine and beside one busy process (a core held
by other work).

    python benchmarks/bench_openmp_wait.py                          # 300,000 (libgomp's), 1,000 / 10,000 / 100,000 spins, PASSIVE
    python benchmarks/bench_openmp_wait.py --settings 300000,10000 --model digits_cnn

A setting is a spin count (GOMP_SPINCOUNT; libgomp's default is given as 300000, since ordercomp's CLI sets its own
when neither variable is set) or `PASSIVE` (OMP_WAIT_POLICY=PASSIVE: sleep at once). Per setting: the exploration's
wall time idle and beside the busy process, and the eager latency at batch 1 and 32 that `ordercomp measure` reports
(idle), each as a ratio to the first setting's. Figures are printed, never asserted: they depend on the machine and
its load (how long a spin takes differs between processors).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ordercomp.deploy.runtimes import cpu_description, cpu_text

ORDERCOMP = [sys.executable, "-m", "ordercomp.cli"]
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def environment(setting: str) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in WAIT_VARIABLES}
    if setting == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    else:
        env["GOMP_SPINCOUNT"] = setting
    return env


def timed_exploration(setting: str, model: str, busy: bool) -> float:
    """Wall seconds of a pairwise exploration of three methods on one seed, from an empty cache."""
    with tempfile.TemporaryDirectory() as folder:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            start = time.perf_counter()
            subprocess.run(ORDERCOMP + ["explore", "--model", model, "--methods", "prune,quantize,distill", "--seeds", "1",
                                        "--epochs", "0.5", "--search", "pairwise", "--device", "cpu", "--quiet",
                                        "--out", f"{folder}/out", "--cache", f"{folder}/cache"],
                           env=environment(setting), check=True, capture_output=True)
            return time.perf_counter() - start
        finally:
            if hog:
                hog.kill()


def eager_latency(setting: str, model: str) -> tuple[float, float]:
    """The eager latency at batch 1 and 32 (ms) that `ordercomp measure` reports."""
    printed = subprocess.run(ORDERCOMP + ["measure", "--model", model, "--device", "cpu"], env=environment(setting),
                             check=True, capture_output=True, text=True).stdout
    found = dict(re.findall(r"latency at batch (\d+): ([\d.]+) ms", printed))
    return float(found["1"]), float(found["32"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="300000,1000,10000,100000,PASSIVE")
    parser.add_argument("--model", default="digits_resnet")
    args = parser.parse_args()
    print(f"CPU: {cpu_text(cpu_description())}")
    print(f"{args.model}: pairwise exploration of prune, quantize, distill (one seed, half an epoch per step), "
          "and `ordercomp measure`, each in a fresh process")
    rows = []
    for setting in args.settings.split(","):
        rows.append((timed_exploration(setting, args.model, busy=False), timed_exploration(setting, args.model, busy=True),
                     *eager_latency(setting, args.model)))
        (idle, busy, b1, b32), base = rows[-1], rows[0]
        print(f"  {setting:>8}: exploration {idle:6.1f} s idle ({idle / base[0]:.2f}x the first's), {busy:6.1f} s beside a busy "
              f"process ({busy / base[1]:.2f}x); eager latency {b1:.3f} ms at batch 1 ({b1 / base[2]:.2f}x), "
              f"{b32:.3f} ms at batch 32 ({b32 / base[3]:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
