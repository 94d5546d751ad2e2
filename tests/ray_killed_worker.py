"""A Ray worker killed in the middle of a step, run in a process of its own by test_executors.py.

Ray's driver can abort on an internal check when a worker dies mid-task (Ray 2.60: `task_manager.cc ... An unexpected
system state has occurred`, in TaskManager::CompletePendingTask); in the test process that ended the whole suite with
no summary. Here the scenario runs in a child process: it starts its own local cluster, runs the pairwise plan of
prune and quantize with a step function that kills its worker the first time it runs prune -> quantize, and prints
what came back as JSON (chains and statuses, the attempts logged as files, the steps cached).

    python tests/ray_killed_worker.py FOLDER
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray
import torch

from ordercomp import order
from ordercomp.exploration.cache import StepCache
from ordercomp.exploration.executors import RayExecutor, StepFunction, start_local_ray
from ordercomp.exploration.explorer import Explorer, ExploreSpec
from ordercomp.models.zoo import create_model

sys.path.insert(0, str(Path(__file__).parent))
import testkit  # noqa: E402
from testkit import FAST, plan_work  # noqa: E402

ray.cloudpickle.register_pickle_by_value(testkit)  # the workers cannot import it: its step keys travel by value

VICTIM = ("prune", "quantize")


class KillsItsWorkerOnce:
    """A step function that kills the worker process running `victim` the first time (a marker file
    says it happened) and logs every step it runs, attempt by attempt, as a file."""

    def __init__(self, step, victim, folder: Path):
        self.step, self.victim, self.folder = step, victim, folder

    def __call__(self, parent, chain, seed, data, device, progress=None):
        (self.folder / f"{'-'.join(chain)}.{seed}.{os.getpid()}.ran").touch()
        marker = self.folder / "killed"
        if chain == self.victim and not marker.exists():
            marker.touch()
            os._exit(1)
        return self.step(parent, chain, seed, data, device, progress)


def run(folder: Path) -> dict:
    explorer = Explorer(ExploreSpec(methods=("prune", "quantize"), seeds=1, **FAST))
    torch.manual_seed(0)
    base = create_model("cnn_tiny", explorer.data.num_classes, explorer.data.in_channels)
    step = KillsItsWorkerOnce(StepFunction(explorer.configs, explorer.spec.budget), VICTIM, folder)
    work = plan_work(explorer, base, step, StepCache(folder / "cache"), lambda event: None)
    start_local_ray(ray, 2, num_gpus=0)
    try:
        results = RayExecutor(max_retries=2).run(work, order.pairwise_plan(["prune", "quantize"]), [0])
    finally:
        ray.shutdown()
    return {"results": [["-".join(r.chain), r.status] for r in results],
            "ran": sorted(path.name.rsplit(".", 3)[0] for path in folder.glob("*.ran")),
            "cached": sorted(path.stem for path in (folder / "cache").glob("*.json"))}


if __name__ == "__main__":
    print(json.dumps(run(Path(sys.argv[1]))))
