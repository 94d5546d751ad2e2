"""The exploration procedure end to end on a tiny model: decisions, chain, cache and resume."""
from __future__ import annotations

import pytest

from ordercomp.explore import ExploreSpec, Explorer, compress, explore
from ordercomp.train import Budget

FAST = dict(model="cnn_tiny", budget=Budget(epochs=0.2), device="cpu")


class Interrupt(Exception):
    pass


def test_pairwise_exploration_decides_every_pair_and_applies_the_chain(tmp_path):
    result = explore(ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=2, **FAST), cache_dir=tmp_path)
    record = result.to_dict()
    assert len(record["steps"]) == 2 * (3 + 6)
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


def test_a_repeated_exploration_is_served_from_the_cache(tmp_path):
    spec = ExploreSpec(methods=("prune", "quantize"), seeds=1, **FAST)
    first = explore(spec, cache_dir=tmp_path).to_dict()
    second = explore(spec, cache_dir=tmp_path).to_dict()
    assert second["applications"]["cache_hits"] == len(second["steps"]) == 4
    assert [s["metrics"] for s in second["steps"]] == [s["metrics"] for s in first["steps"]]


def test_an_interrupted_exploration_resumes_without_redoing_finished_steps(tmp_path):
    spec = ExploreSpec(methods=("prune", "quantize", "sparsify"), seeds=1, **FAST)
    finished = []

    def stop_after_four(event):
        if event["kind"] == "step":
            finished.append(tuple(event["result"]["chain"]))
            if len(finished) == 4:
                raise Interrupt

    with pytest.raises(Interrupt):
        Explorer(spec, cache_dir=tmp_path, events=stop_after_four).explore()
    computed = []
    resumed = Explorer(spec, cache_dir=tmp_path, events=lambda e: None)
    original = resumed.cache.put

    def spy(key, result):  # a computed step is stored; a step served from the cache is not
        computed.append(result.chain)
        original(key, result)

    resumed.cache.put = spy
    record = resumed.explore().to_dict()
    assert len(record["steps"]) == 9
    assert set(computed).isdisjoint(finished)
    assert len(computed) == 5


def test_exhaustive_mode_ranks_the_found_chain(tmp_path):
    record = explore(ExploreSpec(methods=("prune", "quantize", "early_exit"), seeds=1, exhaustive=True, **FAST),
                     cache_dir=tmp_path).to_dict()
    summary = record["exhaustive"]
    assert summary["of"] == 6 and 1 <= summary["rank"] <= 6
    assert summary["applications_exhaustive"] == 15 and summary["applications_pairwise"] == 9
    assert len(record["steps"]) == 15


def test_one_way_incompatibility_forces_the_order_that_applies(tmp_path):
    record = explore(ExploreSpec(methods=("int8", "prune"), seeds=1, **FAST), cache_dir=tmp_path).to_dict()
    (outcome,) = record["outcomes"]
    assert outcome["winner"] == "prune" and "int8" in outcome["only_order"]
    assert record["chain"] == ["prune", "int8"]


def test_compress_applies_a_chain_and_measures_every_step():
    outcome = compress(chain=["prune", "quantize"], **FAST)
    assert [s.status for s in outcome.steps] == ["ok", "ok"]
    assert outcome.steps[-1].metrics["bitops"] < outcome.base_metrics["bitops"]


@pytest.mark.parametrize("fields, message", [
    ({"methods": ("prune",)}, "at least two"),
    ({"objective": "speed"}, "unknown objective"),
    ({"seeds": 0}, "seeds"),
    ({"repeat": "lowrank"}, "repeat"),
    ({"settings": {"prune": {"ratio": 1.5}}}, "prune ratio"),
    ({"settings": {"lowrank": {"rank_ratio": 0.5}}}, "not among the chosen"),
])
def test_impossible_specs_are_refused_before_any_work(fields, message):
    with pytest.raises(ValueError, match=message):
        ExploreSpec(**{"methods": ("prune", "quantize"), **fields})
