"""The step cache's keys where they are used: an exploration (`Explorer`) and the dashboard's job worker,
which shares one cache folder between all the jobs of a store.

A step is served from the cache only when nothing that decides its result changed: the base model's
weights, the data, the configs of the methods in its chain, its seed, the fine-tuning budget, what it
measured (latency, and in which runtime), the device type and the library versions. Changing any one
of them computes exactly the steps it affects again; changing only how results are judged (objective
weight, confidence, margin), or the file name of the same weights, reuses every step. A zoo base is
trained once per initial weights, data, training budget and library versions.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import pytest
import torch

from ordercomp import uploads
from ordercomp.exploration import cache
from ordercomp.exploration import explorer as explore
from ordercomp.deploy import runtimes
from ordercomp.exploration.cache import StepCache
from ordercomp.exploration.executors import InProcessExecutor
from ordercomp.exploration.explorer import Explorer, ExploreSpec, prepare_base
from ordercomp.jobs import BaselineSpec, JobStore
from ordercomp.jobs.worker import run_job
from ordercomp.train import Budget

METHODS = ("prune", "quantize")


@pytest.fixture(scope="module")
def weights(tmp_path_factory, tiny_model) -> dict:
    """The tiny model's weights in a file, the same weights in a second file, and one weight changed in a third."""
    folder = tmp_path_factory.mktemp("weights")
    state = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
    torch.save(state, folder / "tiny.pt")
    torch.save(state, folder / "copy.pt")
    first = next(name for name, tensor in state.items() if tensor.is_floating_point())
    state[first].view(-1)[0] += 0.01
    torch.save(state, folder / "changed.pt")
    return {name: str(folder / f"{name}.pt") for name in ("tiny", "copy", "changed")}


def spec_for(weights: dict, **changes) -> ExploreSpec:
    fields = dict(model=weights["tiny"], architecture="cnn_tiny", methods=METHODS, seeds=1, budget=Budget(epochs=0.0),
                  device="cpu", search="pairwise")
    return ExploreSpec(**(fields | {k: weights[v] if k == "model" else v for k, v in changes.items()}))


def explore_steps(spec: ExploreSpec, folder) -> list[dict]:
    """A single method and a pair through an Explorer with the step cache in `folder`."""
    explorer = Explorer(spec, cache_dir=folder / "cache")
    try:
        return [step.to_dict() for step in explorer.run_plan(explorer.load_base()[0], [("prune",), ("prune", "quantize")])]
    finally:
        explorer.close()


def worker_steps(spec: ExploreSpec, folder) -> list[dict]:
    """A whole exploration (pairwise plan: both singles, both pairs) as a job of the store in `folder`, run by the
    worker (in this process), its model file uploaded to that store as the Model & data page keeps it."""
    store = JobStore(folder / "jobs.sqlite")
    model = Path(spec.model)
    kept = uploads.keep_checkpoint(folder / uploads.CHECKPOINTS_FOLDER, model.name, model.read_bytes())
    job_id = store.create(replace(spec, model=str(kept)))
    assert run_job(store, job_id) == "done", store.log(job_id)
    return store.get(job_id)["result"]["steps"]


LEVELS = {"explorer": explore_steps, "worker": worker_steps}


def other_device(monkeypatch):
    monkeypatch.setattr(InProcessExecutor, "step_device", lambda self, device: "cuda")  # keyed as CUDA, run here


def other_torch(monkeypatch):
    versions = cache.library_versions() | {"torch": "0.0.1"}
    monkeypatch.setattr(cache, "library_versions", lambda: versions)


def next_cache_version(monkeypatch):
    monkeypatch.setattr(cache, "CACHE_VERSION", cache.CACHE_VERSION + 1)


def every_step(chain, seed) -> bool:
    return True


def no_step(chain, seed) -> bool:
    return False


@dataclass
class Variant:
    """A change to the first run's spec (`then`, possibly after another run, `first`) or to what the spec cannot say
    (`patch(monkeypatch)`: device, libraries), which (chain, seed) steps it `affects`, and what a computed step shows."""

    then: dict = field(default_factory=dict)
    affects: Callable[[tuple, int], bool] = no_step
    first: dict | None = None
    patch: Callable | None = None
    shows: Callable[[dict, dict], bool] = lambda step, before: True  # a computed step against the first run's step
    worker: bool = True  # also through the worker (its spec carries the change)


VARIANTS = {
    "the same spec": Variant(),
    "the same weights in another file": Variant({"model": "copy"}),
    "only how results are judged": Variant({"weight": 2.0, "confidence": 0.9, "min_margin": 1.0, "objective": "accuracy"}),
    "weights": Variant({"model": "changed"}, every_step),
    "data (input size)": Variant({"input_size": 10}, every_step, worker=False),
    "prune's config": Variant({"settings": {"prune": {"ratio": 0.3}}}, lambda chain, seed: "prune" in chain,
                              shows=lambda step, before: step["metrics"]["params"] > before["metrics"]["params"]),
    "quantize's config": Variant({"settings": {"quantize": {"weight_bits": 8}}}, lambda chain, seed: "quantize" in chain, worker=False),
    "a second seed": Variant({"seeds": 2}, lambda chain, seed: seed == 1, shows=lambda step, before: step["seed"] == 1),
    "budget": Variant({"budget": Budget(epochs=0.0, lr=1e-3)}, every_step, worker=False),
    "latency measured": Variant({"objective": "latency"}, every_step, worker=False,
                                shows=lambda step, before: step["metrics"]["latency_ms_b1"] > 0 and before["metrics"]["latency_ms_b1"] is None),
    "latency runtime": Variant({"objective": "latency", "runtime": "packed"}, every_step, first={"objective": "latency"}, worker=False),
    "device": Variant(affects=every_step, patch=other_device, worker=False),
    "library versions": Variant(affects=every_step, patch=other_torch, worker=False),
    "cache version": Variant(affects=every_step, patch=next_cache_version, worker=False),
}
# The worker builds no key of its own: it runs an Explorer on the store's shared cache folder. Through it, jobs must
# share that cache (the first three) and a changed input must compute exactly its steps; every input is varied above.
CASES = [(level, name) for name, variant in VARIANTS.items() for level in LEVELS if level == "explorer" or variant.worker]


@pytest.fixture(scope="module")
def first_runs(tmp_path_factory, weights) -> dict:
    """Per level, a folder whose cache holds the first run of the unchanged spec, and that run's steps."""
    runs = {}
    for level, run in LEVELS.items():
        folder = tmp_path_factory.mktemp(f"first-{level}")
        runs[level] = folder, run(spec_for(weights), folder)
    return runs


@pytest.fixture
def computed(monkeypatch) -> list:
    """The (chain, seed) of every step computed (and so stored) from now on; a step from the cache is not stored."""
    stored = []
    put = StepCache.put

    def spy(self, key, result):
        stored.append((result.chain, result.seed))
        put(self, key, result)

    monkeypatch.setattr(StepCache, "put", spy)
    return stored


@pytest.fixture(autouse=True)
def quick_timing(monkeypatch):
    """Latency in an export runtime is timed for at least 0.7 s a model; what is timed matters here, not how well."""
    monkeypatch.setattr(runtimes, "WARMUP_S", 0.0)
    monkeypatch.setattr(runtimes, "MIN_TIMED_S", 0.0)


@pytest.mark.parametrize("level, name", CASES)
def test_a_step_is_computed_again_exactly_when_something_that_decides_it_changed(level, name, first_runs, weights, tmp_path,
                                                                                computed, monkeypatch):
    variant, (first_folder, first_steps) = VARIANTS[name], first_runs[level]
    folder = shutil.copytree(first_folder, tmp_path / "copy")
    run = LEVELS[level]
    if variant.first is not None:
        run(spec_for(weights, **variant.first), folder)
        computed.clear()
    if variant.patch:
        variant.patch(monkeypatch)
    steps = run(spec_for(weights, **variant.then), folder)
    # every seed's own result: a key that forgets the seed serves seed 0's record for seed 1
    assert {step["seed"] for step in steps} == set(range(variant.then.get("seeds", 1)))
    expected = {(tuple(step["chain"]), step["seed"]) for step in steps if variant.affects(tuple(step["chain"]), step["seed"])}
    assert sorted(computed) == sorted(expected)  # each affected step once, no other
    before = {tuple(step["chain"]): step for step in first_steps}
    for step in steps:
        if (tuple(step["chain"]), step["seed"]) in expected:
            assert variant.shows(step, before[tuple(step["chain"])]), step
        elif variant.first is None:
            assert step == before[tuple(step["chain"])]  # a reused step is the first run's result, record for record


# --- the trained base --------------------------------------------------------------------------------

def prepare_by_explorer(folder, architecture: str, input_size: int | None) -> None:
    prepare_base(architecture, "digits", input_size=input_size, device="cpu", cache_dir=folder / "cache")


def prepare_by_worker(folder, architecture: str, input_size: int | None) -> None:
    store = JobStore(folder / "jobs.sqlite")
    job_id = store.create(BaselineSpec(model=architecture, input_size=input_size, device="cpu"), "baseline")
    assert run_job(store, job_id) == "done", store.log(job_id)


BASE_LEVELS = {"explorer": prepare_by_explorer, "worker": prepare_by_worker}
QUICK_BASE = Budget(epochs=0.05, lr=3e-3)


@pytest.mark.parametrize("level, change, trains", [
    *[(level, change, trains) for level in BASE_LEVELS
      for change, trains in (({}, False), ({"input_size": 10}, True), ({"architecture": "cnn_small"}, True))],
    ("explorer", {"budget": Budget(epochs=0.1)}, True), ("explorer", {"patch": other_torch}, True),
])
def test_a_zoo_base_is_trained_again_exactly_when_its_start_data_budget_or_libraries_changed(level, change, trains, tmp_path,
                                                                                           monkeypatch):
    monkeypatch.setattr(explore, "BASE_BUDGET", QUICK_BASE)  # seconds, not the 20 epochs a real base gets
    prepare = BASE_LEVELS[level]
    prepare(tmp_path, "cnn_tiny", None)
    trained = lambda: sorted(path.name for path in (tmp_path / "cache").glob("base-*.safetensors"))
    before = trained()
    monkeypatch.setattr(explore, "BASE_BUDGET", change.get("budget", QUICK_BASE))
    if "patch" in change:
        change["patch"](monkeypatch)
    prepare(tmp_path, change.get("architecture", "cnn_tiny"), change.get("input_size"))
    assert len(before) == 1 and len(trained()) == (2 if trains else 1)


def test_a_step_cache_write_cut_short_leaves_neither_a_record_nor_a_temporary_file(tmp_path, tiny_model, monkeypatch):
    def interrupted(obj, path):
        open(path, "wb").write(b"half a model")
        raise KeyboardInterrupt  # Ctrl-C, or the dashboard's cancel, while the chain's model is being kept

    monkeypatch.setattr(cache.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        StepCache(tmp_path).put_chain("key", tiny_model, [])
    assert list(tmp_path.iterdir()) == []


def test_steps_are_keyed_by_the_library_versions_installed_here():
    # `other_torch` stands in for an upgrade above; this checks that the versions it changes are the installed ones
    libraries = cache.environment("cpu")["libraries"]
    assert set(libraries) == set(cache.LIBRARIES)
    assert libraries["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert cache.installed_version("ordercomp-no-such-library") is None  # the runtimes say what to install themselves


CHAIN_INPUTS = {"base": "weights:0123", "data": "digits:8px", "chain": ("prune", "quantize"),
                "configs": {"prune": {"ratio": 0.5}, "quantize": {"weight_bits": 4}}, "seed": 0, "budget": {"epochs": 1.0},
                "environment": {"device": "cpu", "libraries": {"torch": "2.0"}}}
CHAIN_CHANGES = {"base": {"base": "weights:4567"}, "data": {"data": "digits:32px"}, "order": {"chain": ("quantize", "prune")},
                 "prefix": {"chain": ("prune",)}, "config": {"configs": {"prune": {"ratio": 0.3}, "quantize": {"weight_bits": 4}}},
                 "seed": {"seed": 1}, "budget": {"budget": {"epochs": 2.0}},
                 "device": {"environment": {"device": "cuda", "libraries": {"torch": "2.0"}}}}


@pytest.mark.parametrize("change", CHAIN_CHANGES.values(), ids=CHAIN_CHANGES)
def test_a_kept_chain_model_is_found_only_under_the_inputs_that_made_it(tmp_path, tiny_model, change):
    """An export ships the model an exploration kept for its chain (`put_chain`) only when it was made from the same base,
    data, chain, configs, seed, budget and environment; anything else applies the chain again."""
    store = StepCache(tmp_path)
    store.put_chain(cache.chain_key(**CHAIN_INPUTS), tiny_model, [])
    assert store.get_chain(cache.chain_key(**CHAIN_INPUTS)) is not None
    assert store.get_chain(cache.chain_key(**CHAIN_INPUTS | change)) is None
    step = {name: CHAIN_INPUTS[name] for name in ("base", "data", "chain", "configs", "seed", "budget", "environment")}
    assert store.get_chain(cache.step_key(**step, split="test")) is None  # a step's key never names a kept chain


def test_a_step_cache_whose_folder_fails_stops_being_written_says_why_and_raises_every_other_error(tmp_path):
    """The unit under `explore`'s full-disk test (tests/test_cli.py): what stops the writing, what does not, and what is kept."""
    import errno

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    def unwritten():
        pytest.fail("written after the folder failed")

    store = StepCache(tmp_path / "cache")
    assert store.folder == tmp_path / "cache" and store.folder.is_dir()
    assert store.stopped is None and store.keep(lambda: None) is True
    assert store.keep(full) is False and store.stopped == "No space left on device"
    assert store.keep(unwritten) is False and store.stopped == "No space left on device"  # every later write is skipped
    with pytest.raises(OSError, match="Is a directory"):  # an error of what is written, not of the folder
        StepCache(tmp_path / "other").keep(lambda: (_ for _ in ()).throw(OSError(errno.EISDIR, "Is a directory")))
    assert StepCache(None).keep(unwritten) is False and StepCache(None).stopped is None  # no cache: nothing is written


def test_a_step_kept_in_the_cache_reads_back_whole_and_counts_as_a_hit(tmp_path):
    from ordercomp.exploration.pipeline import StepResult

    step = StepResult(("prune", "quantize"), "ok", metrics={"accuracy": 97.5, "bitops": 1.5e6}, seconds=2.0, seed=1,
                      fidelity=0.25, load={"busy": 0.1})
    store = StepCache(tmp_path)
    store.put("key", step)
    assert store.get("other key") is None and store.hits == 0
    assert store.get("key") == step and store.hits == 1
    (tmp_path / "cut.json").write_text('{"chain": ["prune"], "stat')  # a record from an interrupted older version
    assert store.get("cut") is None and store.hits == 1
    assert StepCache(None).get("key") is None  # no cache folder: nothing is ever found


@pytest.mark.parametrize("change", ["swapped", "removed"])
def test_a_kept_chain_model_whose_file_changed_is_not_loaded(tmp_path, tiny_model, change):
    """The file is unpickled only with the SHA-256 recorded beside it (the module's docstring): a file swapped for
    another model, or gone, makes the export apply the chain again."""
    store = StepCache(tmp_path)
    store.put_chain("key", tiny_model, [])
    model_file = tmp_path / "chain-key.pt"
    if change == "swapped":
        torch.save(torch.nn.Linear(2, 2), model_file)
    else:
        model_file.unlink()
    assert store.get_chain("key") is None
    assert StepCache(None).get_chain("key") is None  # no cache folder: nothing is kept
