"""Tests for the precedence graph, cycle breaking and chain selection."""

import networkx as nx
import pytest

from ordercomp.order import (
    break_cycles,
    decide_pair,
    incompatible_pair,
    precedence_graph,
    rank_of_chain,
    recommended_chain,
    valid_chains,
)


def _win(first, second, gain):
    """Outcome where first -> second beats second -> first by `gain` on every seed."""
    return decide_pair(first, second, [70.0 + gain, 70.1 + gain], [70.0, 70.1])


def _tie(first, second, lean):
    """Tie outcome whose mean_diff leans by `lean` towards first -> second."""
    return decide_pair(first, second, [70.0 + lean + 3.0, 70.0 + lean - 3.0], [70.0, 70.0])


def test_edges_go_from_winner_to_loser_with_attributes():
    outcomes = [_win("prune", "quant", 2.0), _win("distill", "prune", 1.0)]
    graph = precedence_graph(["prune", "quant", "distill"], outcomes)
    assert set(graph.edges) == {("prune", "quant"), ("distill", "prune")}
    assert graph.edges["prune", "quant"]["margin"] == pytest.approx(2.0)
    assert graph.edges["prune", "quant"]["spread"] == pytest.approx(0.0, abs=1e-9)
    assert graph.edges["prune", "quant"]["weak"] is False


def test_second_winning_points_edge_from_second():
    outcome = decide_pair("a", "b", [60.0, 60.0], [65.0, 65.1])
    graph = precedence_graph(["a", "b"], [outcome])
    assert list(graph.edges) == [("b", "a")]


def test_ties_and_incompatible_pairs_add_no_edges():
    outcomes = [_tie("a", "b", 0.5), incompatible_pair("a", "c", "cannot prune quantized")]
    graph = precedence_graph(["a", "b", "c"], outcomes)
    assert graph.number_of_edges() == 0
    assert set(graph.nodes) == {"a", "b", "c"}


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="unknown method 'z'"):
        precedence_graph(["a", "b"], [_win("a", "z", 1.0)])


def test_duplicate_methods_or_pairs_raise():
    with pytest.raises(ValueError, match="distinct"):
        precedence_graph(["a", "a"], [])
    with pytest.raises(ValueError, match="more than one outcome"):
        precedence_graph(["a", "b"], [_win("a", "b", 1.0), _win("b", "a", 1.0)])


def test_three_cycle_drops_weakest_edge():
    outcomes = [_win("A", "B", 3.0), _win("B", "C", 2.0), _win("C", "A", 0.5)]
    graph = precedence_graph(["A", "B", "C"], outcomes)
    dag, dropped = break_cycles(graph)
    assert len(dropped) == 1
    u, v, margin = dropped[0]
    assert (u, v) == ("C", "A")
    assert margin == pytest.approx(0.5)
    assert nx.is_directed_acyclic_graph(dag)
    assert graph.has_edge("C", "A"), "input graph must be left untouched"
    assert valid_chains(dag) == [["A", "B", "C"]]


def test_equal_margins_break_deterministically():
    graph = nx.DiGraph()
    graph.add_edge("B", "C", margin=1.0)
    graph.add_edge("C", "A", margin=1.0)
    graph.add_edge("A", "B", margin=1.0)
    _, dropped = break_cycles(graph)
    assert dropped == [("A", "B", 1.0)]


def test_multiple_valid_orders_are_listed_sorted():
    graph = precedence_graph(["c", "a", "b"], [_win("a", "b", 1.0)])
    assert valid_chains(graph) == [["a", "b", "c"], ["a", "c", "b"], ["c", "a", "b"]]
    assert valid_chains(graph, limit=2) == [["a", "b", "c"], ["a", "c", "b"]]


def test_valid_chains_rejects_cycles_and_bad_limit():
    cycle = [_win("a", "b", 1.0), _win("b", "c", 1.0), _win("c", "a", 1.0)]
    cyclic = precedence_graph(["a", "b", "c"], cycle)
    with pytest.raises(ValueError, match="break_cycles"):
        valid_chains(cyclic)
    with pytest.raises(ValueError, match="limit"):
        valid_chains(precedence_graph(["a"], []), limit=0)


def test_recommended_chain_follows_weak_tie_preferences():
    outcomes = [_win("a", "b", 1.0), _tie("c", "a", 0.4), _tie("b", "c", -0.2)]
    dag = precedence_graph(["a", "b", "c"], outcomes)
    assert [outcome.tie for outcome in outcomes[1:]] == [True, True]
    assert recommended_chain(dag, outcomes) == ["c", "a", "b"]


def test_recommended_chain_without_preferences_is_lexicographic():
    dag = precedence_graph(["b", "a"], [incompatible_pair("a", "b", "no overlap")])
    assert recommended_chain(dag, [incompatible_pair("a", "b", "no overlap")]) == ["a", "b"]
    assert recommended_chain(precedence_graph(["solo"], []), []) == ["solo"]


def test_rank_of_chain_shares_rank_on_ties():
    scores = {("a", "b"): 70.0, ("b", "a"): 72.0, ("a",): 72.0, ("b",): 60.0}
    assert rank_of_chain(["b", "a"], scores) == 1
    assert rank_of_chain(("a",), scores) == 1
    assert rank_of_chain(["a", "b"], scores) == 3
    assert rank_of_chain(["b"], scores) == 4
    assert rank_of_chain(["b"], scores, higher_is_better=False) == 1
    assert rank_of_chain(["b", "a"], scores, higher_is_better=False) == 3


def test_rank_of_missing_chain_raises():
    with pytest.raises(ValueError, match="not among the scored orders"):
        rank_of_chain(["c"], {("a",): 1.0})


def test_the_only_order_that_applies_is_forced_and_survives_cycle_breaking():
    from ordercomp.order import PairOutcome, decide_pair, only_order_pair

    forced = only_order_pair("int8", "prune", "prune", "int8 weights cannot be pruned")
    assert forced.winner == "prune" and forced.only_order
    # prune->int8 forced; int8 beats early_exit and early_exit beats prune by small margins: a cycle.
    outcomes = [
        forced,
        decide_pair("early_exit", "int8", [90.0, 90.2], [91.0, 91.1]),
        decide_pair("early_exit", "prune", [91.0, 91.2], [90.0, 90.1]),
    ]
    graph = precedence_graph(["early_exit", "int8", "prune"], outcomes)
    dag, dropped = break_cycles(graph)
    assert dag.has_edge("prune", "int8")
    assert ("prune", "int8") not in [(u, v) for u, v, _ in dropped]
    assert PairOutcome.from_dict(forced.to_dict()) == forced
