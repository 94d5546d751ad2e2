"""The options the command line promises, end to end on the tiny model: what a user reads in the results
(exhaustive rank and regret, whether repeating a method helps, the chain an objective and a search pick)
is consistent with the steps that ran, and the method settings given as --set or as per-method flags are
the ones the compressed model was made with."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import statistics
from dataclasses import fields

import numpy as np
import pytest
import torch
from safetensors import safe_open

from ordercomp.deploy import export
from ordercomp.cli import _spec, build_parser, main
from ordercomp.exploration.explorer import Explorer
from ordercomp.methods.registry import METHODS
from ordercomp.order import exhaustive_plan
from ordercomp.deploy.packed import METADATA_KEY, unpack_codes
from ordercomp.exploration.pipeline import make_configs

THREE = "prune,quantize,early_exit"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> str:
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    return str(path)


def explore_args(checkpoint: str, folder, *options: str) -> list[str]:
    return ["explore", "--model", checkpoint, "--arch", "cnn_tiny", "--seeds", "1", "--epochs", "0.1", "--device", "cpu",
            "--out", str(folder / "out"), "--cache", str(folder / "cache"), "--quiet", *options]


def full_steps(record: dict, methods: int) -> dict[tuple, dict]:
    return {tuple(step["chain"]): step["metrics"] for step in record["steps"] if len(step["chain"]) == methods}


# --- explore: --exhaustive, --repeat, --objective, --search --------------------------------------------

QUICK_EXITS = ("--methods", THREE, "--early-exit-threshold", "0.2")  # exits taken after 0.1 epoch: the orders' BitOps differ


@pytest.fixture(scope="module")
def exhaustive_run(tmp_path_factory, checkpoint):
    """prune, quantize, early_exit with --exhaustive --objective accuracy --repeat prune: (args, folder, record, printed)."""
    folder = tmp_path_factory.mktemp("exhaustive")
    args = explore_args(checkpoint, folder, *QUICK_EXITS, "--exhaustive", "--objective", "accuracy", "--repeat", "prune",
                        "--search", "pairwise")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(args) == 0
    return args, folder, json.loads((folder / "out" / "exploration.json").read_text()), printed.getvalue()


def test_exhaustive_ranks_every_order_by_its_steps_and_reports_the_regret(exhaustive_run):
    _, _, record, _ = exhaustive_run
    summary, accuracy = record["exhaustive"], {chain: m["accuracy"] for chain, m in full_steps(record, 3).items()}
    assert summary["of"] == len(accuracy) == 6 and len(record["steps"]) == 15
    assert {tuple(o["chain"]): o["score"] for o in summary["orders"]} == accuracy  # the accuracy objective: one seed's accuracy
    scores = [o["score"] for o in summary["orders"]]
    assert scores == sorted(scores, reverse=True)
    chain_score = accuracy[tuple(record["chain"])]
    assert summary["regret"] == pytest.approx(max(scores) - chain_score)
    assert summary["rank"] == 1 + sum(score > chain_score for score in scores)


def test_the_regret_of_an_order_below_the_best_is_its_distance_to_the_best(exhaustive_run):
    """The recommended chain may be the best order (regret 0), so the regret is also asked for the worst order."""
    args, folder, record, _ = exhaustive_run
    explorer = Explorer(_spec(build_parser().parse_args(args)), cache_dir=folder / "cache")
    try:
        base, _ = explorer.load_base()
        explorer.measure_base(base)
        steps = explorer.run_plan(base, exhaustive_plan(explorer.spec.methods))
    finally:
        explorer.close()
    assert explorer.cache.hits == len(steps) == 15  # the CLI's steps, from its cache
    orders = record["exhaustive"]["orders"]
    worst = explorer.exhaustive_summary(steps, orders[-1]["chain"])
    assert worst["regret"] == pytest.approx(orders[0]["score"] - orders[-1]["score"]) and worst["regret"] > 0
    assert worst["rank"] == 1 + sum(o["score"] > orders[-1]["score"] for o in orders)


def test_repeat_reports_whether_applying_the_method_again_helps_with_the_figures_of_both_models(exhaustive_run):
    _, _, record, _ = exhaustive_run
    repeat, last = record["repeat"], record["chain_steps"][-1]["metrics"]
    before, after = repeat["before"], repeat["after"]
    assert repeat["method"] == "prune" and after["chain"] == record["chain"] + ["prune"] and after["status"] == "ok"
    assert (before["accuracy"], before["bitops"], before["params"]) == (last["accuracy"], last["bitops"], last["params"])
    assert after["metrics"]["params"] < before["params"]  # half the remaining channels went
    helps = after["metrics"]["bitops"] < before["bitops"] and after["metrics"]["accuracy"] >= before["accuracy"] - 1.0
    assert repeat["helps"] == helps


def test_the_printed_summary_states_the_rank_the_regret_and_the_repeat_verdict(exhaustive_run):
    _, _, record, printed = exhaustive_run
    summary, repeat = record["exhaustive"], record["repeat"]
    assert f"ranks {summary['rank']} of 6 orders, regret {summary['regret']:.3f}" in printed
    verdict = "helps" if repeat["helps"] else "does not help"
    assert (f"Repeating prune after the chain {verdict} (test split): accuracy {repeat['before']['accuracy']:.2f}% -> "
            f"{repeat['after']['metrics']['accuracy']:.2f}%") in printed


def order_found(checkpoint, exhaustive_run, tmp_path, *options: str):
    """The order the exploration of `options` finds (before the chain is applied on the test split), with every order's
    steps on the exploration's seed already in the cache (the exhaustive run's; a race's extra seeds are new):
    (the metrics of each whole order, seed by seed, the chain, the search summary)."""
    shutil.copytree(exhaustive_run[1] / "cache", tmp_path / "cache")
    args = explore_args(checkpoint, tmp_path, *QUICK_EXITS, *options)
    explorer = Explorer(_spec(build_parser().parse_args(args)), cache_dir=tmp_path / "cache")
    try:
        found = explorer.find_order(explorer.load_base()[0])
    finally:
        explorer.close()
    assert explorer.cache.hits == len([s for s in found.steps if s.seed == 0])
    metrics: dict[tuple, list[dict]] = {}
    for step in sorted((s for s in found.steps if len(s.chain) == 3), key=lambda s: s.seed):
        metrics.setdefault(step.chain, []).append(step.metrics)
    return metrics, found.chain, found.search


def test_objective_bitops_with_exhaustive_search_evaluates_every_order_and_picks_the_fewest_bitops(checkpoint, exhaustive_run, tmp_path):
    steps, chain, search = order_found(checkpoint, exhaustive_run, tmp_path, "--objective", "bitops", "--search", "exhaustive")
    bitops = {chain: metrics["bitops"] for chain, (metrics,) in steps.items()}  # exhaustive runs no extra seed
    assert search["strategy"] == "exhaustive" and search["applications_per_seed"] == 15
    assert {tuple(o["chain"]) for o in search["orders"]} == set(bitops) and len(bitops) == 6  # all 3! orders
    assert {tuple(o["chain"]): o["score"] for o in search["orders"]} == bitops
    assert len(set(bitops.values())) > 1  # the orders differ, so the choice below means something
    assert bitops[tuple(chain)] == min(bitops.values())


def test_random_search_stays_within_its_budget_and_picks_the_best_order_it_evaluated(checkpoint, exhaustive_run, tmp_path):
    steps, chain, search = order_found(checkpoint, exhaustive_run, tmp_path, "--objective", "accuracy", "--search", "random")
    assert search["strategy"] == "random" and search["applications_per_seed"] <= search["budget_per_seed"]
    assert search["applications"]["total"] <= 2.5 * 9  # the race's extra seeds included: 2.5 x the pairwise plan of 3 methods
    evaluated = {tuple(o["chain"]): o for o in search["orders"]}  # each order's mean over its seeds, the race's included
    assert evaluated and all(o["seeds"] == len(steps[c]) and o["score"] == pytest.approx(statistics.fmean(m["accuracy"] for m in steps[c]))
                             for c, o in evaluated.items())
    in_contention = {c: o["score"] for c, o in evaluated.items() if not o["status"].startswith("dropped")}
    assert in_contention[tuple(chain)] == max(in_contention.values())


@pytest.mark.parametrize("runtime", ["onnx_int8", "packed", "pt2", "torchscript"])
def test_a_latency_exploration_times_each_step_in_the_runtime_it_names(checkpoint, tmp_path, monkeypatch, runtime):
    calls, load_runner = [], export.load_runner

    def counting(fmt, path, *args, **kwargs):  # the real runner, with every call it makes noted
        run = load_runner(fmt, path, *args, **kwargs)
        return lambda images: calls.append((fmt, len(images))) or run(images)

    monkeypatch.setattr(export, "load_runner", counting)
    args = explore_args(checkpoint, tmp_path, "--methods", "prune,quantize", "--objective", "latency", "--runtime", runtime)
    explorer = Explorer(_spec(build_parser().parse_args(args)), cache_dir=tmp_path / "cache")
    try:
        (step,) = explorer.run_plan(explorer.load_base()[0], [("prune",)])
    finally:
        explorer.close()
    assert step.status == "ok" and step.metrics["latency_ms_b1"] > 0 and step.metrics["latency_ms_batch"] > 0
    assert {fmt for fmt, _ in calls} == {runtime} and {batch for _, batch in calls} == {1, 32}  # timed there, at batch 1 and 32


# --- apply: method settings, 2-bit codes, default formats, --no-measure ------------------------------------

def apply_args(checkpoint: str, out, chain: str, *options: str) -> list[str]:
    return ["apply", "--model", checkpoint, "--arch", "cnn_tiny", "--chain", chain, "--epochs", "0", "--device", "cpu",
            "--export", str(out), *options]


def exported(checkpoint: str, out, chain: str, *options: str) -> tuple[dict, dict]:
    """The manifest and the state dict of an `apply` run (state dict only, not measured, unless options say otherwise)."""
    assert main(apply_args(checkpoint, out, chain, *options)) == 0
    return json.loads((out / "manifest.json").read_text()), torch.load(out / "model.state_dict.pt", weights_only=True)


ONLY_STATE = ("--formats", "state_dict", "--no-measure")


@pytest.mark.parametrize("option", [["--set", "prune.ratio=0.3"], ["--prune-ratio", "0.3"]])
def test_a_method_setting_reaches_the_config_that_made_the_model(checkpoint, tiny_model, tmp_path, option):
    manifest, state = exported(checkpoint, tmp_path / "out", "prune", *ONLY_STATE, *option)
    assert manifest["configs"]["prune"]["ratio"] == 0.3
    widths = [t.shape[0] for name, t in tiny_model.state_dict().items() if name.endswith("weight") and t.dim() == 4]
    assert [t.shape[0] for name, t in state.items() if name.endswith("weight") and t.dim() == 4] == [int(w * (1 - 0.3)) for w in widths]


def another_value(config, name: str):
    """A valid value of a config field other than its default: another choice, or half the default."""
    default, choices = getattr(config, name), next(f for f in fields(config) if f.name == name).metadata.get("choices")
    return next(c for c in choices if c != default) if choices else type(default)(default / 2)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_s_strength_reaches_its_config_as_a_flag_and_as_set(method):
    strength, config = METHODS[method].strength, METHODS[method].default_config()
    value = another_value(config, strength)
    flag = f"--{method}-{strength}".replace("_", "-")
    for option in ([flag, str(value)], ["--set", f"{method}.{strength}={value}"]):
        spec = _spec(build_parser().parse_args(["explore", "--methods", f"{method},{'prune' if method != 'prune' else 'quantize'}", *option]))
        assert getattr(make_configs(spec.methods, spec.settings)[method], strength) == value != getattr(config, strength), option


def stage_blocks(state: dict) -> set[str]:
    return {".".join(name.split(".")[:3]) for name in state if name.startswith("stages.")}


def test_distill_depth_half_keeps_half_the_blocks_of_every_stage(checkpoint, tiny_model, tmp_path):
    manifest, state = exported(checkpoint, tmp_path / "out", "distill", *ONLY_STATE, "--set", "distill.depth=0.5",
                               "--set", "distill.width=1.0")
    assert manifest["configs"]["distill"]["depth"] == 0.5
    teacher = stage_blocks(tiny_model.state_dict())
    assert len(teacher) == 6 and stage_blocks(state) == {block for block in teacher if block.endswith(".0")}


def kept_filters(student: torch.Tensor, teacher: torch.Tensor) -> list[int]:
    """Which of the teacher's filters each of the student's is an exact copy of (-1: none)."""
    return [next((i for i, t in enumerate(teacher) if torch.equal(s, t)), -1) for s in student]


@pytest.mark.parametrize("init, copies", [("teacher", True), ("scratch", False)])
def test_distill_init_decides_whether_the_student_starts_from_the_teacher_s_weights(checkpoint, tiny_model, tmp_path, init, copies):
    manifest, state = exported(checkpoint, tmp_path / "out", "distill", *ONLY_STATE, "--set", f"distill.init={init}")
    assert manifest["configs"]["distill"]["init"] == init
    kept = kept_filters(state["stem.0.weight"], tiny_model.state_dict()["stem.0.weight"])
    assert len(kept) == int(8 * 0.6)
    assert all(i >= 0 for i in kept) if copies else all(i < 0 for i in kept)


@pytest.fixture(scope="module")
def crossed(tmp_path_factory, tiny_model) -> tuple[str, dict]:
    """The tiny model with its stem's BatchNorm scales made small and ordered against its filters' norms, so that
    the largest scales and the largest filters are different channels: (checkpoint, state)."""
    state = {name: tensor.clone() for name, tensor in tiny_model.state_dict().items()}
    rank = state["stem.0.weight"].flatten(1).norm(dim=1).argsort(descending=True).argsort()  # 0: the largest filter
    state["stem.1.weight"] = 0.01 * (1.0 + rank.float())
    path = tmp_path_factory.mktemp("crossed") / "crossed.pt"
    torch.save(state, path)
    return str(path), state


def stem_channels(checkpoint: str, teacher: dict, folder, importance: str) -> list[int]:
    _, state = exported(checkpoint, folder, "prune", *ONLY_STATE, "--set", f"prune.importance={importance}")
    return sorted(kept_filters(state["stem.0.weight"], teacher["stem.0.weight"]))


def test_prune_importance_chooses_which_channels_stay(crossed, tmp_path):
    checkpoint, teacher = crossed
    kept = {importance: stem_channels(checkpoint, teacher, tmp_path / importance, importance) for importance in ("bn_scale", "l2", "random")}
    assert kept["bn_scale"] == sorted(teacher["stem.1.weight"].argsort(descending=True)[:4].tolist())  # the largest scales stay
    assert len({tuple(channels) for channels in kept.values()}) == 3 and all(len(c) == 4 and -1 not in c for c in kept.values())


def packed_layers(node) -> list[dict]:
    """Every weight entry of a packed model's description."""
    if isinstance(node, dict):
        return ([node["w"]] if "w" in node else []) + [w for value in node.values() for w in packed_layers(value)]
    return [w for value in node for w in packed_layers(value)] if isinstance(node, list) else []


def test_apply_writes_every_default_format_untimed_with_no_measure_and_2_bit_codes(checkpoint, tmp_path):
    out = tmp_path / "out"
    assert main(apply_args(checkpoint, out, "quantize", "--set", "quantize.weight_bits=2", "--no-measure")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] == ["model.int8.onnx", "model.onnx", "model.packed.safetensors", "model.pt2", "model.state_dict.pt",
                                 "model.torchscript.pt"]
    assert all("error" not in entry and "measured" not in entry and "speedup" not in entry for entry in manifest["formats"])
    with safe_open(str(out / "model.packed.safetensors"), framework="np") as stream:
        description, blob = json.loads(stream.metadata()[METADATA_KEY]), stream.get_tensor("blob").tobytes()
    weights = packed_layers(description["arch"])
    assert weights and all(w["bits"] == 2 for w in weights)
    for weight in weights:
        count = int(np.prod(weight["shape"]))
        start, length = weight["values"]
        assert length == -(-count * 2 // 8)  # four codes a byte
        codes = unpack_codes(blob[start:start + length], 2, count)
        assert codes.max() <= 2 and len(np.unique(codes)) > 1  # the symmetric 2-bit grid: -1, 0, +1
