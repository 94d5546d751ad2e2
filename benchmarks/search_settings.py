"""The settings `bench_search.py` validates order search on, each with exhaustive ground truth.

Both sample models, mild and strong strengths, shorter fine-tuning budgets than the default (less
recovery, and affordable ground truth on 2 cores), method sets with sparsify, lowrank and int8, one
with five methods (int8 among them: it can only come last, which keeps its exhaustive ground truth
affordable on 2 cores), two where training noise is large (a seed-to-seed sd of 2 points or more for
a typical order: harsh strengths and one epoch of fine-tuning, so that recovery depends on the seed),
one with six methods (720 orders; 1,956 applications a seed for its ground truth, so 2 seeds), and two on the
Vision Transformer sample (its default, with token merging; token merging beside pruning and low rank).
The default setting is whatever `ordercomp explore` runs with no options.
"""
from __future__ import annotations

from ordercomp.exploration.explorer import DEFAULT_METHODS, ExploreSpec
from ordercomp.train import Budget

SETTINGS: dict[str, dict] = {
    "default": {},
    "resnet-mild": {"model": "digits_resnet", "methods": DEFAULT_METHODS,
                    "settings": {"prune": {"ratio": 0.3}, "distill": {"width": 0.8},
                                 "quantize": {"weight_bits": 8, "act_bits": 8}, "early_exit": {"threshold": 0.95}},
                    "budget": {"epochs": 3}},
    "cnn-strong": {"methods": DEFAULT_METHODS,
                   "settings": {"prune": {"ratio": 0.7}, "distill": {"width": 0.4},
                                "quantize": {"weight_bits": 4, "act_bits": 4}, "early_exit": {"threshold": 0.8}},
                   "budget": {"epochs": 3}},
    # the structural set runs on the CNN (int8 failed on digits_resnet's residual stages until int8 gave each call of
    # a reused ReLU its own partition; the other settings already cover digits_resnet)
    "cnn-structure": {"methods": ("prune", "sparsify", "lowrank", "int8"),
                         "settings": {"prune": {"ratio": 0.5}, "sparsify": {"sparsity": 0.8}, "lowrank": {"rank_ratio": 0.25}},
                         "budget": {"epochs": 3}},
    # 2 seeds: its 325 applications per seed (int8 in every position) are the dearest ground truth here
    "cnn-five": {"methods": DEFAULT_METHODS + ("int8",), "settings": {"quantize": {"weight_bits": 8, "act_bits": 8}},
                 "budget": {"epochs": 2}, "seeds": 2},
    # high noise: 2-bit weights and a quarter of the channels after pruning, fine-tuned for one epoch
    "cnn-noisy-lowbit": {"methods": ("prune", "sparsify", "quantize", "lowrank"),
                         "settings": {"prune": {"ratio": 0.75}, "sparsify": {"sparsity": 0.85},
                                      "quantize": {"weight_bits": 2, "act_bits": 4}, "lowrank": {"rank_ratio": 0.2}},
                         "budget": {"epochs": 1}},
    # high noise on the ResNet: a thin student, 2-bit weights, a low exit threshold, one epoch
    "resnet-noisy-exit": {"model": "digits_resnet", "methods": ("distill", "sparsify", "quantize", "early_exit"),
                          "settings": {"distill": {"width": 0.35}, "sparsify": {"sparsity": 0.9},
                                       "quantize": {"weight_bits": 2, "act_bits": 8}, "early_exit": {"threshold": 0.7}},
                          "budget": {"epochs": 1}},
    # the ViT sample as its exploration runs by default (its card's methods and settings: token merging among them)
    "vit-default": {"model": "digits32_vit"},
    # the ViT with pruning and low rank beside token merging and 4-bit QAT, one epoch (merging and pruning both thin
    # what the later blocks see)
    "vit-merge-prune": {"model": "digits32_vit", "methods": ("prune", "token_merge", "quantize", "lowrank"),
                        "settings": {"prune": {"ratio": 0.5}, "token_merge": {"r": 24}, "lowrank": {"rank_ratio": 0.5}},
                        "budget": {"epochs": 1, "lr": 2e-4}},
    # 2 seeds: 1,956 applications a seed (720 orders, no forced pair) are the dearest ground truth here
    "cnn-six": {"methods": ("distill", "prune", "sparsify", "quantize", "early_exit", "lowrank"),
                "settings": {"quantize": {"weight_bits": 8, "act_bits": 8}}, "budget": {"epochs": 1}, "seeds": 2},
}


def setting_spec(name: str, **overrides) -> ExploreSpec:
    """The ExploreSpec of a named setting (3 seeds unless it says otherwise, CPU), with `overrides` such as search=..."""
    setting = dict(SETTINGS[name])
    budget = setting.pop("budget", None)
    if budget:
        setting["budget"] = Budget(**budget)
    return ExploreSpec(device="cpu", **setting, **overrides)
