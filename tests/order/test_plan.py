"""Tests for exploration plans and application counts."""

import pytest

from ordercomp.order import (
    chain_text,
    exhaustive_applications,
    exhaustive_plan,
    naive_exhaustive_applications,
    pairwise_applications,
    pairwise_plan,
)

METHODS = ["prune", "quant", "distill", "lowrank"]


def test_counts_for_four_methods():
    assert pairwise_applications(4) == 16
    assert exhaustive_applications(4) == 64
    assert naive_exhaustive_applications(4) == 96


def test_counts_for_one_method_are_one_application():
    assert pairwise_applications(1) == exhaustive_applications(1) == naive_exhaustive_applications(1) == 1


def test_a_chain_reads_with_arrows():
    assert chain_text(("prune", "quantize", "int8")) == "prune → quantize → int8"


def test_pairwise_plan_singles_then_ordered_pairs():
    plan = pairwise_plan(["a", "b", "c"])
    singles = [("a",), ("b",), ("c",)]
    pairs = [("a", "b"), ("a", "c"), ("b", "a"), ("b", "c"), ("c", "a"), ("c", "b")]
    assert plan == singles + pairs
    assert len(pairwise_plan(METHODS)) == pairwise_applications(4)


def test_exhaustive_plan_shares_prefixes_shortest_first():
    plan = exhaustive_plan(METHODS)
    assert len(plan) == len(set(plan)) == exhaustive_applications(4)
    assert [len(chain) for chain in plan] == sorted(len(chain) for chain in plan)
    scheduled = set()
    for chain in plan:
        assert len(chain) == 1 or chain[:-1] in scheduled
        scheduled.add(chain)
    assert exhaustive_plan(METHODS) == plan


@pytest.mark.parametrize("plan", [pairwise_plan, exhaustive_plan])
@pytest.mark.parametrize(
    ("methods", "message"),
    [(["a", "b", "a"], r"distinct; duplicated: \['a'\]$"), (["a"], "at least 2"), (["a", ""], "non-empty"),
     (["a", 3], "non-empty strings, got 3"), (["a", None], "non-empty strings, got None")],
)
def test_plans_reject_bad_method_lists(plan, methods, message):
    with pytest.raises(ValueError, match=message):
        plan(methods)


def test_exhaustive_plan_refuses_more_than_six_methods():
    assert len(exhaustive_plan(list("abcdef"))) == exhaustive_applications(6)
    with pytest.raises(ValueError, match="at most 6"):
        exhaustive_plan(list("abcdefg"))


@pytest.mark.parametrize(
    "count", [pairwise_applications, exhaustive_applications, naive_exhaustive_applications]
)
@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_counts_reject_non_positive_integers(count, n):
    with pytest.raises(ValueError, match="positive integer"):
        count(n)
