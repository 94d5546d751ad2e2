"""The exploration procedure end to end on a tiny model: decisions, chain, cache and resume."""
from __future__ import annotations

import pytest
import torch

from ordercomp import order
from ordercomp.exploration.explorer import ExploreSpec, Explorer, compress, explore, keep_apart, left_out, no_order_reason
from ordercomp.exploration.results import print_summary
from ordercomp.exploration.pipeline import FAILED, INCOMPATIBLE, OK, StepResult, make_configs
from ordercomp.report.figures import applications
from ordercomp.report.verdict import choice_is_open, settle_suggestion
from ordercomp.train import Budget
from testkit import FAST


class Interrupt(Exception):
    pass


def test_pairwise_exploration_decides_every_pair_and_applies_the_chain(fast_cache):
    result = explore(ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=2, search="pairwise", **FAST), cache_dir=fast_cache)
    record = result.to_dict()
    assert len(record["steps"]) == 2 * (3 + 6)
    assert record["search"]["strategy"] == "pairwise" and record["search"]["applications_per_seed"] == 9
    assert len(record["outcomes"]) == 3
    assert sorted(record["chain"]) == ["early_exit", "prune", "quantize"]
    assert record["chain"] in record["valid_chains"]
    assert [s["status"] for s in record["chain_steps"]] == ["ok"] * 3
    for edge in record["edges"]:
        assert record["chain"].index(edge["before"]) < record["chain"].index(edge["after"])
    final = record["chain_steps"][-1]["metrics"]
    assert final["bitops"] < record["base_metrics"]["bitops"] / 16
    assert final["latency_ms_b1"] > 0
    assert record["applications"]["pairwise_per_seed"] == 9


def test_a_repeated_exploration_is_served_from_the_cache(fast_cache):
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, search="pairwise", **FAST)
    first = explore(spec, cache_dir=fast_cache).to_dict()
    second = explore(spec, cache_dir=fast_cache).to_dict()
    assert second["applications"]["cache_hits"] == len(second["steps"]) == 4
    assert [s["metrics"] for s in second["steps"]] == [s["metrics"] for s in first["steps"]]


def test_an_interrupted_exploration_resumes_without_redoing_finished_steps(fast_cache):
    spec = ExploreSpec(methods=("prune", "quantize", "sparsify"), seeds=1, search="pairwise", **FAST)
    finished = []

    def stop_after_four(event):
        if event["kind"] == "step":
            finished.append(tuple(event["result"]["chain"]))
            if len(finished) == 4:
                raise Interrupt

    with pytest.raises(Interrupt):
        Explorer(spec, cache_dir=fast_cache, events=stop_after_four).explore()
    computed = []
    resumed = Explorer(spec, cache_dir=fast_cache, events=lambda e: None)
    original = resumed.cache.put

    def spy(key, result):  # a computed step is stored; a step served from the cache is not
        computed.append(result.chain)
        original(key, result)

    resumed.cache.put = spy
    record = resumed.explore().to_dict()
    assert len(record["steps"]) == 9
    assert set(computed).isdisjoint(finished)
    assert len(computed) == 5


def test_exhaustive_mode_ranks_the_found_chain(fast_cache):
    record = explore(ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=1, exhaustive=True, **FAST),
                     cache_dir=fast_cache).to_dict()
    summary = record["exhaustive"]
    scores = {tuple(o["chain"]): o["score"] for o in summary["orders"]}
    assert summary["of"] == len(scores) == 6 and tuple(record["chain"]) in scores
    found = scores[tuple(record["chain"])]
    assert summary["rank"] == 1 + sum(score > found for score in scores.values())  # weighted: higher is better
    assert summary["regret"] == pytest.approx(max(scores.values()) - found)
    assert summary["applications_exhaustive"] == 15 and summary["applications_pairwise"] == 9
    assert len([s for s in record["steps"] if s["seed"] == 0]) == 15  # later seeds: the search's race
    assert summary["of"] == len({tuple(o["chain"]) for o in summary["orders"]}) and all(o["seeds"] == 1 for o in summary["orders"])


def test_the_default_search_picks_the_best_whole_order_it_evaluated_within_twice_the_pairwise_cost(fast_cache):
    methods = ("prune", "quantize", "early_exit", "sparsify")
    events = []
    record = Explorer(ExploreSpec(methods=methods, seeds=1, **FAST), cache_dir=fast_cache, events=events.append).explore().to_dict()
    # progress counts against the total planned at the start (the search's budget of 32 a seed and the race's extra seeds,
    # 2.5 x 16 in all, + the chain's 4), so it only moves forward: each plan the search ran used to bring its own total
    # ("16 of 16", then "17 of 20") and the chain none
    progress = [(event["done"], event["total"]) for event in events if event["kind"] == "step"]
    assert {total for _, total in progress} == {40 + 4}
    assert [done for done, _ in progress] == list(range(1, len(progress) + 1))
    assert progress[-1][0] == applications(record) == len(record["steps"]) + 4
    search = record["search"]
    # twice the pairwise plan per seed; 2.5 x when its leader was already the best with probability 0.9 or more, so that a
    # race had little to decide (recommend._sure: which happens turns on the scores, and those on the CPU's kernels and
    # torch's thread count; with one thread it did here)
    budget = search["budget_per_seed"]
    assert search["strategy"] == "surrogate" and budget in (32, 40)
    assert search["applications_per_seed"] <= budget and len({tuple(s["chain"]) for s in record["steps"] if s["seed"] == 0}) <= budget
    assert search["applications"]["total"] <= 2.5 * 16 and len(record["steps"]) == search["applications"]["total"]
    whole = [o for o in search["orders"] if len(o["chain"]) == 4]
    assert len(whole) == len(search["orders"]) >= 4
    assert [o["chain"] for o in search["orders"] if o["status"] == "recommended"] == [record["chain"]]
    assert [o["score"] for o in search["orders"]] == sorted((o["score"] for o in search["orders"]), reverse=True)


def step_files(cache) -> list:
    """The step cache's files of single steps (the chain models export reuses are `chain-*` files)."""
    return [path for path in cache.glob("*.json") if not path.name.startswith("chain-")]


def test_the_race_runs_extra_seeds_through_the_step_cache_and_a_rerun_reuses_every_step(fast_cache):
    # two methods keep it small: both orders are whole orders, and the race has 2.5 x 4 - 4 = 6 applications for extra seeds
    spec, events = ExploreSpec(methods=("prune", "quantize"), seeds=1, **FAST), []
    first = Explorer(spec, cache_dir=fast_cache, events=events.append).explore().to_dict()
    search = first["search"]
    extra = search["verdict"]["extra_seeds"]
    assert extra and extra[0] == 1  # the spec's seed is 0; the race goes on with 1, 2, ...
    raced = {tuple(s["chain"]) for s in first["steps"] if s["seed"] in extra and len(s["chain"]) == 2}
    assert len(raced) == 2 and raced <= {tuple(o["chain"]) for o in search["orders"]}
    assert search["applications"]["total"] <= 2.5 * order.pairwise_applications(2) * spec.seeds
    # progress counts the race's seeds against the total planned at the start, which never moves: 10 + the chain's 2
    progress = [(event["done"], event["total"]) for event in events if event["kind"] == "step"]
    assert {total for _, total in progress} == {spec.planned_applications()["total"]} == {12}
    assert [done for done, _ in progress] == list(range(1, len(progress) + 1)) and progress[-1][0] == applications(first)
    assert len(step_files(fast_cache)) == len(first["steps"])  # one cache file per (chain, seed)
    rerun = explore(spec, cache_dir=fast_cache).to_dict()
    assert rerun["applications"]["cache_hits"] == len(rerun["steps"]) == len(first["steps"])
    assert rerun["search"] == search and rerun["chain"] == first["chain"]


def test_settling_an_open_choice_reruns_from_the_cache_and_races_on_the_seeds_after_the_race(fast_cache, capsys):
    """The verdict says the choice is open and the CLI suggests a settle budget; the rerun with it repeats no step, runs
    both orders on the seeds after the race's until neither could be more than the margin better, and says what it spent."""
    spec = dict(methods=("prune", "quantize"), seeds=1, **FAST)
    exploration = explore(ExploreSpec(**spec), cache_dir=fast_cache)
    first = exploration.to_dict()
    assert choice_is_open(first["search"]["verdict"]) and settle_suggestion(first["search"]) == 8 * 4
    print_summary(exploration)
    assert "To settle it: run the same command again with --settle 32 (up to 8 more seeds" in capsys.readouterr().out
    settled = explore(ExploreSpec(**spec, settle=settle_suggestion(first["search"])), cache_dir=fast_cache).to_dict()
    assert settled["applications"]["cache_hits"] == len(first["steps"])  # nothing already run is repeated
    raced, verdict = first["search"]["verdict"]["extra_seeds"], settled["search"]["verdict"]
    later = verdict["extra_seeds"][len(raced):]
    assert verdict["extra_seeds"][: len(raced)] == raced and later == list(range(raced[-1] + 1, raced[-1] + 1 + len(later)))
    new_steps = [s for s in settled["steps"] if s["seed"] in later]
    assert verdict["settle"] == {"budget": 32, "spent": len(new_steps), "seeds": len(later)} and later
    assert settled["search"]["applications"]["settle"] == len(new_steps)
    assert not choice_is_open(verdict) or len(new_steps) > 32 - 4  # settled, or nothing left for one more seed


def test_a_screen_trains_the_search_for_a_fraction_of_the_epochs_and_confirms_the_best_at_the_full_budget(fast_cache):
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, screen=0.5, **FAST)
    record = explore(spec, cache_dir=fast_cache).to_dict()
    screened = [s for s in record["steps"] if s["fidelity"] == 0.5]
    full = [s for s in record["steps"] if s["fidelity"] == 1.0]
    assert {tuple(s["chain"]) for s in screened} >= set(order.pairwise_plan(list(spec.methods)))
    assert full and {tuple(s["chain"]) for s in full if len(s["chain"]) == 2} == {tuple(o["chain"]) for o in record["search"]["orders"]}
    search = record["search"]
    assert search["screen"] == 0.5 and len(search["screened_orders"]) >= len(search["orders"]) >= 1
    assert record["chain"] == search["verdict"]["chain"]
    assert search["applications"]["cost"] < search["applications"]["total"]  # a screened application costs half
    assert len(step_files(fast_cache)) == len(record["steps"])  # the budget is in the key: nothing shared


def test_pair_decisions_use_the_per_image_evidence_and_report_an_interval(fast_cache):
    record = explore(ExploreSpec(methods=("prune", "quantize"), seeds=2, search="pairwise", **FAST), cache_dir=fast_cache).to_dict()
    (outcome,) = record["outcomes"]
    assert outcome["images"] == 359 and outcome["confidence"] == 0.95
    assert outcome["low"] <= outcome["mean_diff"] <= outcome["high"]
    assert outcome["tie"] == (outcome["low"] <= 0 <= outcome["high"] or abs(outcome["mean_diff"]) <= 0.5)


def test_one_way_incompatibility_forces_the_order_that_applies(fast_cache):
    record = explore(ExploreSpec(methods=("int8", "prune"), seeds=1, **FAST), cache_dir=fast_cache).to_dict()
    (outcome,) = record["outcomes"]
    assert outcome["winner"] == "prune" and "int8" in outcome["only_order"]
    assert record["chain"] == ["prune", "int8"]


def test_compress_applies_a_chain_and_measures_every_step():
    outcome = compress(chain=["prune", "quantize"], model=FAST["model"], budget=FAST["budget"], device=FAST["device"])
    assert [s.status for s in outcome.steps] == ["ok", "ok"]
    assert outcome.steps[-1].metrics["bitops"] < outcome.base_metrics["bitops"]


@pytest.mark.parametrize("fields, per_seed, beyond, total, cost", [
    # the default: the search's 52 on the first seed (16 + half of 2.5 x 16 x 3 - 48), the pairwise plan's 16 on the two
    # others, then the best orders on those and the race's extra seeds, 2.5 x 16 x 3 in all, + the chain's 4
    ({}, 52, 120 - 52 - 32, 124, 124),
    ({"search": "pairwise"}, 16, 0, 52, 52),  # the paper's procedure runs no race
    ({"search": "exhaustive"}, 64, 0, 196, 196),
    # every order on the 3 seeds; the race gets 2.5 x 16 x 3 less what the search spent, at least the pairwise plan
    ({"exhaustive": True}, 64, 120 - 48, 192 + 72 + 4, 268),
    # the search at a quarter of the epochs; confirming and racing at the full budget within 1 x 16 x 3
    ({"screen": 0.25}, 32, 48, 96 + 48 + 4, 24 + 48 + 4),
    ({"settle": 100}, 52, 120 - 52 - 32, 224, 224),  # at most that many more on seeds after the race's
])
def test_the_planned_applications_bound_the_search_and_its_race_before_either_runs(fields, per_seed, beyond, total, cost):
    """The one count of an exploration's applications (Methods page, time estimate, progress): the race's extra seeds are
    known only as it runs, so the plan counts as many as the budget allows, and the total never has to grow."""
    planned = ExploreSpec(**fields).planned_applications()
    assert (planned["per_seed"], planned["beyond"], planned["total"], planned["cost"]) == (per_seed, beyond, total, cost)


@pytest.mark.parametrize("fields, message", [
    ({"methods": ("prune",)}, "at least two"),
    ({"objective": "speed"}, "unknown objective"),
    ({"search": "greedy"}, "unknown search strategy"),
    ({"confidence": 1.0}, "confidence"),
    ({"confidence": float("nan")}, "confidence"),
    ({"seeds": 0}, "seeds"),
    ({"repeat": "lowrank"}, "repeat"),
    ({"settings": {"prune": {"ratio": 1.5}}}, "prune ratio"),
    ({"settings": {"lowrank": {"rank_ratio": 0.5}}}, "not among the chosen"),
    ({"weight": float("nan")}, "weight must be a finite number"),
    ({"min_margin": float("inf")}, "min_margin must be a finite number"),
    ({"seeds": 2.5}, "seeds must be a whole number"),
    ({"seeds": "3"}, "seeds must be a number"),
    ({"input_size": float("nan")}, "input_size must be a finite number"),
    ({"exhaustive": "yes"}, "exhaustive must be true or false"),
    ({"trust_torchscript": 1}, "trust_torchscript must be true or false"),
    ({"budget": {"epochs": 1}}, "budget must be a Budget"),
    ({"screen": 1.5}, "screen must be a fraction of the fine-tuning epochs between 0 and 1"),
    ({"screen": 0.0}, "screen must be a fraction"),
    ({"screen": float("nan")}, "screen must be a finite number"),
    ({"screen": 0.25, "search": "pairwise"}, "screening needs a search that evaluates whole orders"),
    ({"settle": -1}, "settle must be a whole number of method applications >= 0"),
    ({"settle": 2.5}, "settle must be a whole number"),
    ({"settle": 50, "search": "pairwise"}, "settling races whole orders on more seeds"),
])
def test_impossible_specs_are_refused_before_any_work(fields, message):
    with pytest.raises(ValueError, match=message):
        ExploreSpec(**{"methods": ("prune", "quantize"), **fields})


@pytest.mark.parametrize("fields, message", [
    ({"epochs": float("nan")}, "epochs must be a finite number"), ({"lr": float("inf")}, "lr must be a finite number"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"), ({"weight_decay": float("nan")}, "weight_decay must be a finite"),
    ({"weight_decay": float("inf")}, "weight_decay must be a finite"), ({"epochs": "5"}, "epochs must be a number"),
])
def test_impossible_budgets_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        Budget(**fields)
    assert Budget(batch_size=32.0).batch_size == 32 and isinstance(Budget(batch_size=32.0).batch_size, int)


def test_a_sample_trained_at_32_px_gets_its_data_at_32_px_unless_told_otherwise(tmp_path):
    explorer = Explorer(ExploreSpec(model="digits32_resnet18", methods=("prune", "quantize"), seeds=1, device="cpu"),
                        cache_dir=tmp_path)
    assert explorer.data.input_size == 32
    told = Explorer(ExploreSpec(model="digits32_resnet18", methods=("prune", "quantize"), input_size=16, device="cpu"),
                    cache_dir=tmp_path)
    assert told.data.input_size == 16


def test_of_two_methods_that_share_no_chain_the_lower_scoring_one_is_left_out_with_why():
    """quantize at 4 bits and int8 each refuse to follow the other: every chain holding both failed at its last step,
    and the recommended chain was one of them (prune -> int8 -> quantize, 'incompatible' on the test split)."""
    steps = [StepResult(("prune",), OK, metrics={"s": 50.0}), StepResult(("quantize",), OK, metrics={"s": 60.0}),
             StepResult(("int8",), OK, metrics={"s": 55.0}), StepResult(("prune", "int8"), OK, metrics={}),
             StepResult(("int8", "prune"), INCOMPATIBLE, "prune cannot change a model already converted to int8 kernels"),
             StepResult(("quantize", "int8"), INCOMPATIBLE, "the model is already quantised below 8 bits (4)"),
             StepResult(("int8", "quantize"), INCOMPATIBLE, "quantize cannot change a model already converted to int8 kernels")]
    score = lambda step: step.metrics["s"]
    kept, apart = keep_apart(["prune", "quantize", "int8"], steps, score, higher_is_better=True)
    assert kept == ["prune", "quantize"]  # prune and int8 share a chain in one order: both stay
    assert [(a["method"], a["with"]) for a in apart] == [("int8", "quantize")]
    assert "already quantised below 8 bits" in apart[0]["reason"] and "scored lower" in apart[0]["reason"]
    assert keep_apart(["prune", "quantize", "int8"], steps, score, higher_is_better=False)[0] == ["prune", "int8"]


def test_an_exploration_never_recommends_a_chain_that_cannot_apply(fast_cache, capsys):
    spec = ExploreSpec(methods=("prune", "quantize", "int8"), seeds=1, **FAST)
    result = Explorer(spec, cache_dir=fast_cache).explore()
    assert len(result.chain) == 2 and "prune" in result.chain
    assert all(step["status"] == OK for step in result.chain_steps)
    assert [entry["method"] for entry in result.left_out] == sorted({"quantize", "int8"} - set(result.chain))


def test_there_is_no_order_to_recommend_when_no_method_applies_or_no_pair_can_follow_each_other():
    singles = [StepResult(("prune",), OK, metrics={}), StepResult(("int8",), INCOMPATIBLE, "not a float model")]
    assert no_order_reason(("prune", "int8"), singles, []) is None  # int8 is left out; prune alone is the chain
    assert left_out(("prune", "int8"), singles) == [{"method": "int8", "status": INCOMPATIBLE, "reason": "not a float model"}]
    nothing = [StepResult(("prune",), FAILED, "IndexError: out of range"), StepResult(("int8",), INCOMPATIBLE, "not a float model")]
    assert no_order_reason(("prune", "int8"), nothing, []) == \
        "prune, int8 cannot be applied to this model (prune: IndexError: out of range): no method is left to order"
    both_ok = [StepResult(("prune",), OK, metrics={}), StepResult(("lowrank",), OK, metrics={})]
    blocked = [order.incompatible_pair("prune", "lowrank", "no layer gets cheaper", higher_is_better=True)]
    assert "no two of the methods can follow each other" in no_order_reason(("prune", "lowrank"), both_ok, blocked)
    decided = [order.only_order_pair("prune", "lowrank", "prune", "lowrank first leaves nothing to prune", higher_is_better=True)]
    assert no_order_reason(("prune", "lowrank"), both_ok, decided) is None


def test_a_latency_exploration_times_every_step_even_where_an_untimed_run_cached_it(fast_cache, quick_timing):
    spec = dict(methods=("prune", "quantize"), seeds=1, search="pairwise", **FAST)
    explore(ExploreSpec(**spec), cache_dir=fast_cache)  # weighted: steps cached without latency
    timed = explore(ExploreSpec(**spec, objective="latency"), cache_dir=fast_cache).to_dict()
    assert all(s["metrics"]["latency_ms_b1"] > 0 for s in timed["steps"])


def test_a_timed_step_keeps_the_load_it_was_timed_under_through_the_step_cache(monkeypatch, tiny_model, digits, tmp_path):
    """The latency objectives' step latencies were kept without the load they were timed under, so no page could say
    that a step's milliseconds came from a busy machine, as it says of the shipped file's."""
    import json
    import os
    from ordercomp.exploration import executors
    from ordercomp.exploration.cache import StepCache

    readings = iter([7.6, 7.8, 7.5, 7.9])  # before and after each timing: eager, then onnx
    monkeypatch.setattr(os, "getloadavg", lambda: (next(readings), 0.0, 0.0))
    monkeypatch.setattr(executors, "deployed_latency", lambda model, data, runtime: {"latency_ms_b1": 0.5, "latency_ms_batch": 4.0})
    configs, cpu = make_configs(["prune"]), torch.device("cpu")
    _, eager = executors.StepFunction(configs, Budget(epochs=0), latency=True)(tiny_model, ("prune",), 0, digits, cpu)
    _, onnx = executors.StepFunction(configs, Budget(epochs=0), latency=True, runtime="onnx")(tiny_model, ("prune",), 0, digits, cpu)
    _, untimed = executors.StepFunction(configs, Budget(epochs=0))(tiny_model, ("prune",), 0, digits, cpu)
    cores = os.cpu_count()
    assert eager.load == {"start": 7.6, "end": 7.8, "logical_cores": cores} and eager.metrics["latency_ms_b1"] > 0
    assert onnx.load == {"start": 7.5, "end": 7.9, "logical_cores": cores} and untimed.load is None
    cache = StepCache(tmp_path)
    cache.put("timed", eager)
    assert cache.get("timed") == eager and StepResult.from_dict(eager.to_dict()) == eager
    (tmp_path / "old.json").write_text(json.dumps({k: v for k, v in eager.to_dict().items() if k != "load"}))  # cached before loads were kept
    assert cache.get("old") == StepResult(**vars(eager) | {"load": None})


class TimedRunners:
    """Spies on the files written for timing: the format each was loaded as, and the calls made to each runner."""

    def __init__(self, monkeypatch):
        from ordercomp.deploy import export

        self.formats, self.calls, real = [], [], export.load_runner

        def load_runner(fmt, path, *args, **kwargs):
            run, index = real(fmt, path, *args, **kwargs), len(self.formats)
            self.formats.append(fmt)
            self.calls.append(0)

            def counted(x):
                self.calls[index] += 1
                return run(x)
            return counted

        monkeypatch.setattr(export, "load_runner", load_runner)


def test_the_latency_objectives_time_each_step_in_the_runtime_it_will_ship_in(fast_cache, monkeypatch, quick_timing):
    timed = TimedRunners(monkeypatch)
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, search="pairwise", objective="weighted_latency", runtime="onnx", **FAST)
    record = Explorer(spec, cache_dir=fast_cache).explore().to_dict()
    steps = [s for s in record["steps"] if s["status"] == "ok"]
    assert len(steps) == 4
    # the base and each of the 4 steps: written as ONNX, loaded into onnxruntime and timed there at batch 1 and 32
    assert timed.formats == ["onnx"] * 5 and all(calls >= 2 * 20 for calls in timed.calls)
    assert all(s["metrics"]["latency_ms_b1"] > 0 and s["metrics"]["latency_ms_batch"] > 0 for s in steps)
    assert not (fast_cache / "files").exists()  # a file per step is not kept in the cache: a large network's would fill a disk
    eager = explore(ExploreSpec(**{**vars(spec), "runtime": "eager"}), cache_dir=fast_cache).to_dict()
    assert timed.formats == ["onnx"] * 5  # eager timing runs no exported file
    assert all(s["metrics"]["latency_ms_b1"] > 0 for s in eager["steps"] if s["status"] == "ok")


def test_a_step_that_cannot_be_built_for_the_runtime_is_incompatible_with_it(monkeypatch, tiny_model, digits):
    from ordercomp.exploration import executors
    from ordercomp.deploy.onnx_int8 import CannotBuild

    def refuse(model, data, runtime):
        raise CannotBuild("cannot be built as onnx_int8: 2-bit weights have no int8 kernel")

    monkeypatch.setattr(executors, "deployed_latency", refuse)
    step = executors.StepFunction(make_configs(["prune"]), Budget(epochs=0), latency=True, runtime="onnx_int8")
    model, result = step(tiny_model, ("prune",), 0, digits, torch.device("cpu"))
    assert result.status == INCOMPATIBLE and result.reason == "cannot be built as onnx_int8: 2-bit weights have no int8 kernel"
    # later steps still build on the pruned model
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in tiny_model.parameters())
