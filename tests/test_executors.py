"""Executors: a step's result does not depend on the process that runs it, the Ray executor finds the
same results, decisions and chain as the in-process one, survives a killed worker, and refuses bad
input (unknown executor, Ray missing, an unreachable cluster, a GPU the cluster lacks) with one line.

The Ray tests share one local cluster of 2 CPUs (no GPU): `ray_cluster` starts it when it is not
running and the module stops it at its end; `ray_stopped` gives a test the state of a fresh process
(Ray not connected), so the tests hold in any order.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from ordercomp import order
from ordercomp.dashboard import plan
from ordercomp.exploration.cache import StepCache
from ordercomp.models.checkpoints import state_fingerprint
from ordercomp.cli import main
from ordercomp.exploration.executors import InProcessExecutor, RayExecutor, StepFunction, Work, start_local_ray
from ordercomp.exploration.explorer import Explorer, ExploreSpec
from ordercomp.exploration.pipeline import OK, StepResult, make_configs, run_step
import testkit
from testkit import FAST, plan_work

# Ray workers cannot import this test module nor testkit; their step functions and keys travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(testkit)


def test_a_step_does_not_depend_on_what_ran_before_in_the_process(tiny_model, context):
    configs = make_configs(["early_exit"])
    fingerprints = set()
    for earlier in (0, 5):
        torch.manual_seed(earlier)  # stands for whatever random draws earlier steps in this worker made
        model, result = run_step(tiny_model, ("early_exit",), configs, context)
        assert result.status == OK
        fingerprints.add(state_fingerprint(model))
    assert len(fingerprints) == 1


@pytest.mark.parametrize("fields, message", [
    ({"executor": "dask"}, "unknown executor"),
    ({"ray_address": "auto"}, "needs the Ray executor"),
    ({"executor": "ray", "ray_address": "headnode"}, "auto or HOST:PORT"),
    ({"executor": "ray", "ray_address": "headnode:99999"}, "auto or HOST:PORT"),
])
def test_impossible_executor_settings_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ExploreSpec(methods=("prune", "quantize"), **fields)


def test_the_methods_page_choice_reaches_the_spec(monkeypatch):
    monkeypatch.setenv("ORDERCOMP_RAY_ADDRESSES", "10.0.0.5:6379, auto")  # the clusters this server's operator offers
    spec = plan.plan_from_state({"w_executor": "ray", "w_ray_address": " 10.0.0.5:6379 "})
    assert (spec.executor, spec.ray_address) == ("ray", "10.0.0.5:6379")
    assert (plan.plan_from_state({}).executor, plan.plan_from_state({}).ray_address) == ("inprocess", None)


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ordercomp: error:")
    return err


def test_ray_not_installed_is_one_line(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    out, cache = tmp_path / "out", tmp_path / "cache"
    err = one_line_error(capsys, ["explore", "--executor", "ray", "--methods", "prune,quantize", "--out", str(out), "--cache", str(cache)])
    assert "pip install 'ordercomp[ray]'" in err
    assert not out.exists() and not cache.exists()


@pytest.mark.parametrize("address, message", [("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1"),
                                              ("auto", "could not connect to the Ray cluster at auto")])
def test_an_unreachable_ray_address_is_one_line(ray_stopped, capsys, tmp_path, address, message):
    err = one_line_error(capsys, ["explore", "--executor", "ray", "--ray-address", address, "--methods", "prune,quantize",
                                  "--seeds", "1", "--epochs", "0.1", "--cache", "", "--out", str(tmp_path), "--quiet"])
    assert message in err
    assert not ray.is_initialized()


def test_an_exploration_starts_its_local_ray_cluster_once_and_stops_it_after(ray_stopped, monkeypatch, fast_cache):
    from ordercomp.exploration import executors

    starts = []
    monkeypatch.setattr(executors, "start_local_ray", lambda ray, cpus, **resources: starts.append(cpus) or start_local_ray(ray, 2, num_gpus=0))
    events = []
    spec = ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=1, executor="ray", **FAST)
    Explorer(spec, cache_dir=fast_cache, events=events.append).explore()
    plans = [e for e in events if e.get("stage") == "ray"]
    assert len(plans) > 1  # the default search ran plans after the pairwise one, all on the same cluster
    assert len(starts) == 1 and not ray.is_initialized()


@pytest.fixture(scope="module")
def ray_stopped_after_the_module():
    yield
    ray.shutdown()


@pytest.fixture
def ray_cluster(ray_stopped_after_the_module):
    """The module's local cluster (2 CPUs, no GPU), started here unless it is running already."""
    if not ray.is_initialized():
        start_local_ray(ray, 2, num_gpus=0)


@pytest.fixture
def ray_stopped():
    """Ray not connected in this process, as a fresh command line finds it (the module's cluster is stopped;
    the next test that needs it starts it again)."""
    ray.shutdown()
    assert not ray.is_initialized()


@pytest.fixture()
def one_thread():
    """In-process steps with the thread count of a Ray task of 1 CPU, so the numbers match bit for bit."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_the_local_cluster_runs_its_steps_at_normal_priority(ray_cluster):
    # Ray's default nice 15 starved the steps whenever anything else used the CPU
    assert ray.get(ray.remote(lambda: os.nice(0)).remote()) == 0


def test_ray_finds_the_same_results_decisions_and_chain(ray_cluster, one_thread, tmp_path, fast_base):
    spec = dict(methods=("prune", "quantize", "early_exit"), seeds=2, **FAST)  # the default search: pairs, then whole chains
    local_events, remote_events = [], []
    caches = {name: testkit.holding(fast_base, tmp_path / name) for name in ("local", "ray")}  # one trained base for both, trained once
    local = Explorer(ExploreSpec(**spec), cache_dir=caches["local"], events=local_events.append).explore().to_dict()
    remote = Explorer(ExploreSpec(**spec, executor="ray"), cache_dir=caches["ray"], events=remote_events.append).explore().to_dict()
    assert [s["metrics"] for s in remote["steps"]] == [s["metrics"] for s in local["steps"]]
    assert [(s["chain"], s["seed"], s["status"]) for s in remote["steps"]] == [(s["chain"], s["seed"], s["status"]) for s in local["steps"]]
    assert remote["outcomes"] == local["outcomes"] and remote["chain"] == local["chain"]
    assert remote["search"] == local["search"]
    extra = local["search"]["verdict"]["extra_seeds"]  # the race's seeds, beyond the spec's 0 and 1
    assert extra and extra[0] == 2 and {s["seed"] for s in remote["steps"]} >= set(extra)
    progress = [[(e["done"], e["total"]) for e in events if e["kind"] == "step"] for events in (local_events, remote_events)]
    assert progress[0] == progress[1] and len(progress[0]) >= 18  # the pairwise plan alone is 9 steps a seed
    assert len(list((tmp_path / "ray").glob("*.json"))) == len(list((tmp_path / "local").glob("*.json"))) >= 18


class Recording:
    """A step that builds nothing: it records (chain, seed, tag) and hands its parent on."""

    def __init__(self, tag, calls):
        self.tag, self.calls = tag, calls

    def __call__(self, parent, chain, seed, data, device, progress=None):
        self.calls.append((chain, seed, self.tag))
        return parent, StepResult(chain, OK, seed=seed)


def test_in_process_a_step_at_another_budget_never_builds_on_a_model_of_the_first(tiny_model, digits):
    """Issue 17: a screened prefix (a fraction of the epochs) must not serve a full-budget step, nor seed 0's one seed 3's."""
    calls, executor = [], InProcessExecutor()
    for tag, seeds in (("screen", [0]), ("full", [0]), ("full", [3])):
        key = lambda chain, seed, tag=tag: f"{tag}:{'-'.join(chain)}.{seed}"
        work = Work(tiny_model, digits, Recording(tag, calls), key, StepCache(None), torch.device("cpu"), lambda e: None, keep_below=2)
        executor.run(work, [("prune",), ("prune", "quantize")], seeds)
    assert calls == [(("prune",), 0, "screen"), (("prune", "quantize"), 0, "screen"), (("prune",), 0, "full"),
                     (("prune", "quantize"), 0, "full"), (("prune",), 3, "full"), (("prune", "quantize"), 3, "full")]


# Ray's driver can abort when a worker dies mid-task (a Ray bug: its internal check in TaskManager::CompletePendingTask)
RAY_DRIVER_ABORT = "An unexpected system state has occurred"


def test_a_killed_worker_is_retried_without_losing_finished_steps(ray_stopped, tmp_path):
    """In a process of its own (ray_killed_worker.py), so that Ray's driver aborting there fails this test alone; that
    abort is Ray's, not the behaviour under test, so the scenario gets one more try after it, and only after it."""
    for attempt in (1, 2):
        folder = tmp_path / f"attempt{attempt}"
        folder.mkdir()
        child = subprocess.run([sys.executable, str(Path(__file__).parent / "ray_killed_worker.py"), str(folder)],
                               capture_output=True, text=True, timeout=600)
        if child.returncode == 0 or RAY_DRIVER_ABORT not in child.stderr:
            break
    assert child.returncode == 0, child.stderr[-3000:]
    outcome = json.loads(child.stdout.strip().splitlines()[-1])
    plan = ["prune", "quantize", "prune-quantize", "quantize-prune"]
    assert outcome["results"] == [[chain, OK] for chain in plan]
    assert outcome["ran"] == ["prune", "prune-quantize", "prune-quantize", "quantize", "quantize-prune"]
    assert outcome["cached"] == sorted(f"{chain}.0" for chain in plan)


class Cancel(Exception):
    pass


def test_a_cancel_stops_ray_and_the_in_process_executor_resumes_from_the_cache(ray_cluster, tiny_model, tmp_path):
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, **FAST)
    finished = []

    def cancel_after_first_step(event):
        if event["kind"] == "step":
            finished.append(tuple(event["result"]["chain"]))
            raise Cancel

    explorer = Explorer(spec, cache_dir=tmp_path)
    plan = order.pairwise_plan(["prune", "quantize"])
    step = StepFunction(explorer.configs, spec.budget)
    with pytest.raises(Cancel):
        RayExecutor().run(plan_work(explorer, tiny_model, step, explorer.cache, cancel_after_first_step), plan, [0])
    computed = []
    resumed = StepCache(tmp_path)
    resumed.put = lambda key, result: computed.append(result.chain)
    results = InProcessExecutor().run(plan_work(explorer, tiny_model, step, resumed, lambda e: None), plan, [0])
    assert len(finished) == 1 and resumed.hits == 1
    assert set(computed) == set(plan) - set(finished) and all(r.status == OK for r in results)


def test_a_gpu_the_cluster_lacks_is_one_line(ray_cluster, capsys, tmp_path):
    err = one_line_error(capsys, ["explore", "--executor", "ray", "--device", "cuda", "--methods", "prune,quantize",
                                  "--seeds", "1", "--epochs", "0.1", "--cache", "", "--out", str(tmp_path), "--quiet"])
    assert "the Ray cluster has no GPU" in err
    assert ray.is_initialized()


def test_a_users_class_from_a_file_reaches_the_ray_workers(ray_cluster, digits, tmp_path):
    """Ray workers cannot import a user's FILE.py (imported here under a module name of ordercomp's making):
    its classes travel with the model."""
    from ordercomp.models.checkpoints import resolve_model
    from ordercomp.models.structure import with_structure

    (tmp_path / "net.py").write_text("from torch import nn\nclass Net(nn.Module):\n    def __init__(self, num_classes):\n"
                                     "        super().__init__()\n        self.conv = nn.Conv2d(1, 8, 3, padding=1)\n"
                                     "        self.fc = nn.Linear(8 * 64, num_classes)\n\n"  # fc is the classifier: sparsify works on conv
                                     "    def forward(self, x):\n        return self.fc(self.conv(x).flatten(1))\n")
    base, _ = resolve_model(f"{tmp_path / 'net.py'}:Net", digits)
    base = with_structure(base, digits.example_input(2), digits.num_classes)  # as prepare_base does: fc marked as the classifier
    explorer = Explorer(ExploreSpec(methods=("sparsify", "quantize"), seeds=1, **FAST))
    step = StepFunction(explorer.configs, explorer.spec.budget)
    plan = [("sparsify",), ("sparsify", "quantize")]
    results = RayExecutor().run(plan_work(explorer, base, step, StepCache(None), lambda e: None), plan, [0])
    assert [(r.chain, r.status) for r in results] == [(chain, OK) for chain in plan], [r.reason for r in results]
