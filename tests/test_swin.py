"""torchvision's Swin Transformer, a network from outside the benchmark: Torch-Pruning's graph walk never ends on it
(ordercomp.bounded stops it and the step fails in one line), and its attention reads its qkv and proj weights
itself (lowrank and quantize leave those layers as they are)."""
from __future__ import annotations

import threading
import time

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import SwinTransformer

from ordercomp.bounded import GIB, Overrun, bounded, resident_bytes
from ordercomp.exploration.pipeline import FAILED, OK, make_configs, run_step
from ordercomp.layers import bits_of
from ordercomp.methods import prune
from ordercomp.methods.base import Context
from ordercomp.methods.registry import get_method
from ordercomp.models.structure import StructureError, structure_of, with_structure
from ordercomp.train import Budget
from testkit import fewer


def no_watchdog_left(wait_for):
    """Wait until every bounded call's watchdog thread has ended: from then on nothing can be raised into this thread
    (a watchdog that ran on after its call would stop whatever the thread ran next)."""
    wait_for(lambda: not any(t.name == "ordercomp-bounded" and t.is_alive() for t in threading.enumerate()),
             "the bounded calls' watchdog threads to end", timeout=10)


def small_swin(width: int) -> nn.Module:
    """torchvision's class at its smallest for the 8-px digits: 2x2 patches of one channel, two stages of one block,
    2x2 windows."""
    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[2, 2], embed_dim=width, depths=[1, 1], num_heads=[2, 2], window_size=[2, 2], num_classes=10)
    model.features[0][0] = nn.Conv2d(1, width, 2, 2)
    return model


@pytest.fixture()
def swin(digits):
    """A small Swin of width 16, its classifier marked as a base's is."""
    return with_structure(small_swin(16), digits.example_input(2), digits.num_classes)


@pytest.mark.parametrize("width", [16, 4])
def test_a_swin_s_stage_ends_where_its_features_are_channels_first_again(width, digits):
    # before: its stages ended at (N, H, W, C) tensors, e.g. its patch merging's (N, 2, 2, 64), whose height early exits
    # took for channels; at width 4 its (N, H, W, C) after the patch embedding has the shape of the (N, C, H, W) before
    view = with_structure(small_swin(width), digits.example_input(2), digits.num_classes)
    assert (structure_of(view).stem, structure_of(view).stages) == ("features.0.0", ("permute",))
    with torch.no_grad():
        assert tuple(view.stages[0](view.stem(digits.example_input(2))).shape) == (2, 2 * width, 2, 2)


@pytest.mark.parametrize("stages", [("features.1", "features.3"), ("features.0", "features.2")])
def test_stages_named_where_a_swin_is_channels_last_are_refused_in_one_line(stages, digits):
    # before: the named stages ended at its (N, H, W, C) tensors and were taken as they were named, so early exits
    # pooled (W, C) as if H were channels; the one stage found without names ends where it is channels first again
    with pytest.raises(StructureError, match=rf"^--stages {stages[0]}: its output \(2, 4, 4, 16\) is 4-D but no feature map "
                                             r"\(N, C, H, W\): .+ name modules whose outputs are feature maps \(N, C, H, W\) or "
                                             r"tokens \(N, T, C\)$"):
        with_structure(small_swin(16), digits.example_input(2), digits.num_classes, stages=stages)


@pytest.mark.parametrize("name", ["prune", "distill"])
def test_torch_pruning_s_endless_walk_on_a_swin_is_stopped_and_fails_the_step_in_one_line(name, swin, digits, monkeypatch):
    # before: the walk's stack grew until the kernel killed the process (torchvision's swin_t at 32 px: past 8 GB in
    # a minute), the exploration with it
    monkeypatch.setattr(prune, "WALK_SECONDS", 3)  # the default bounds: 2 GiB, 120 s
    monkeypatch.setattr(prune, "_runaway_layouts", {})
    before = resident_bytes()
    _, result = run_step(swin, (name,), make_configs([name]), Context(fewer(digits, 32, 32), Budget(epochs=0), seed=0))
    assert result.status == FAILED and "\n" not in result.reason
    assert result.reason.startswith("PruningOverrun: Torch-Pruning's walk of this network's dependency graph ran for more than 3 s")
    assert resident_bytes() - before < 1 * GIB


def test_a_layout_whose_walk_ran_away_fails_its_later_steps_at_once(swin, digits, monkeypatch):
    # before: every step that pruned the same layout (each seed, each pair) waited out the whole bound again: a small
    # MaxViT's walk never ends, and at 300 s a step an exploration of it lost hours
    monkeypatch.setattr(prune, "WALK_SECONDS", 3)
    monkeypatch.setattr(prune, "_runaway_layouts", {})
    walks = []
    monkeypatch.setattr(prune, "bounded", lambda *args, **kwargs: walks.append(1) or bounded(*args, **kwargs))
    first, again = (run_step(swin, ("prune",), make_configs(["prune"]), Context(fewer(digits, 32, 32), Budget(epochs=0), seed=seed))[1]
                    for seed in (0, 1))
    assert len(walks) == 1
    assert again.status == FAILED and again.reason == f"{first.reason} (on an earlier step; not walked again)"


def test_lowrank_and_quantize_leave_the_layers_a_swin_reads_itself_and_change_the_layers_it_calls(swin, digits):
    # before: lowrank failed ("'Sequential' object has no attribute 'weight'": the attention reads qkv.weight), and
    # quantize marked qkv and proj 4-bit while the attention went on reading their float weights
    context = Context(fewer(digits, 64, 64), Budget(epochs=0), seed=0)
    read_itself = [name for name, m in swin.named_modules() if name.endswith(("attn.qkv", "attn.proj"))]
    called = [name for name, m in swin.named_modules() if name.endswith(("mlp.0", "mlp.3"))]
    assert len(read_itself) == 4 and len(called) == 4
    factored = get_method("lowrank").apply(swin, get_method("lowrank").make_config(rank_ratio=0.25), context)
    assert all(isinstance(factored.get_submodule(n), nn.Linear) for n in read_itself)
    assert all(isinstance(factored.get_submodule(n), nn.Sequential) for n in called)
    quantised = get_method("quantize").apply(swin, get_method("quantize").default_config(), context)
    assert [bits_of(quantised.get_submodule(n)) for n in read_itself] == [(32, 32)] * 4
    assert [bits_of(quantised.get_submodule(n)) for n in called] == [(4, 4)] * 4
    for model in (factored, quantised):
        _, result = run_step(model, ("sparsify",), make_configs(["sparsify"]), context)
        assert result.status == OK


def test_a_bounded_call_past_its_memory_or_its_time_is_stopped_and_one_within_them_returns(wait_for):
    def hoard():
        kept = []
        while True:
            kept.append(bytearray(1 << 20))

    def spin():
        count = 0
        while True:
            count += 1

    start = time.monotonic()
    with pytest.raises(Overrun, match=r"^hoarding took more than 0\.1 GiB of memory \(0\.\d GiB after [\d.]+ s\) and was stopped$"):
        bounded(hoard, "hoarding", extra_bytes=GIB // 10)
    with pytest.raises(Overrun, match=r"^spinning ran for more than 1 s and was stopped$"):
        bounded(spin, "spinning", seconds=1)
    assert time.monotonic() - start < 60
    assert bounded(lambda: sum(range(1000)), "adding", seconds=1) == 499500
    no_watchdog_left(wait_for)  # the watchdog ends with a call that returned, with nothing left to raise


@pytest.mark.parametrize("bound", ["memory", "time"])
def test_a_stop_the_call_swallows_is_raised_again_until_the_call_ends(bound, wait_for):
    # before: the watchdog raised once and left; a stop met in a __del__, a weakref callback or a bare `except:` was
    # lost, and the call ran on with no bound at all
    def swallows_its_first_stop_then_runs_on():
        kept = []
        try:
            while True:
                kept.append(bytearray(1 << 20))
        except BaseException:  # a dependency's bare except
            kept.clear()
        end = time.monotonic() + 15
        while time.monotonic() < end:  # without a second stop: 0.5 GiB more, then it returns
            if len(kept) < 512:
                kept.append(bytearray(1 << 20))
        return "ran on"

    bounds = {"memory": {"extra_bytes": GIB // 10}, "time": {"seconds": 1, "extra_bytes": 2 * GIB}}[bound]
    start = time.monotonic()
    with pytest.raises(Overrun, match="was stopped$"):
        bounded(swallows_its_first_stop_then_runs_on, "swallowing", **bounds)
    assert time.monotonic() - start < 12  # stopped again 5 s or half the memory bound after the stop it swallowed
    no_watchdog_left(wait_for)  # nothing is raised into the test after the call has ended


class _Garbage:
    """Cyclic garbage whose finalizer runs Python code: the collector runs it in whichever thread allocates."""

    def __init__(self):
        self.me = self

    def __del__(self):
        sum(range(200))


def test_a_stop_lost_in_a_finalizer_is_raised_again_at_once():
    # before: most stops landed in a __del__ (where Python only reports them) and the call ran on unbounded
    def makes_garbage():
        end = time.monotonic() + 10
        while time.monotonic() < end:
            _Garbage()
        return "ran on"

    for _ in range(3):
        start = time.monotonic()
        with pytest.raises(Overrun, match=r"^making garbage ran for more than 0\.2 s and was stopped$"):
            bounded(makes_garbage, "making garbage", seconds=0.2)
        assert time.monotonic() - start < 5
