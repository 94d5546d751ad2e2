"""Precedence graph of compression methods built from pairwise outcomes.

An edge u -> v means "apply u before v". Cycles (A before B before C before
A) are broken by dropping the weakest edge, and the remaining DAG is
topologically sorted into compression chains.
"""

from __future__ import annotations

from collections.abc import Iterator

import networkx as nx

from ordercomp.order.pairwise import PairOutcome


def precedence_graph(methods: list[str], outcomes: list[PairOutcome]) -> nx.DiGraph:
    """Graph with one node per method and an edge winner -> loser per decided pair.

    Edges carry `margin` (|mean paired difference|), `spread` and `weak`
    (the outcome's weak_evidence). Ties and incompatible pairs add no edge.
    """
    if not methods:
        raise ValueError("precedence_graph needs at least one method")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct, got {methods}")
    graph = nx.DiGraph()
    graph.add_nodes_from(methods)
    seen_pairs: set[frozenset[str]] = set()
    for outcome in outcomes:
        pair = _check_outcome_methods(outcome, graph)
        if pair in seen_pairs:
            raise ValueError(
                f"pair {outcome.first!r}/{outcome.second!r} appears in more than one outcome; "
                "pass exactly one outcome per pair"
            )
        seen_pairs.add(pair)
        if outcome.winner is not None:
            loser = outcome.second if outcome.winner == outcome.first else outcome.first
            graph.add_edge(
                outcome.winner,
                loser,
                margin=outcome.margin,
                spread=outcome.spread,
                weak=outcome.weak_evidence,
                forced=outcome.only_order is not None,
            )
    return graph


def break_cycles(graph: nx.DiGraph) -> tuple[nx.DiGraph, list[tuple[str, str, float]]]:
    """Return an acyclic copy of `graph` and the edges dropped to get it.

    While a cycle remains, the edge of that cycle with the smallest margin is
    dropped (ties broken by (margin, u, v)); forced edges are kept if possible. Each dropped edge is reported as
    (u, v, margin). The input graph is left untouched.
    """
    dag = graph.copy()
    dropped: list[tuple[str, str, float]] = []
    while True:
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            return dag, dropped
        u, v, margin = _weakest_edge(dag, cycle)
        dag.remove_edge(u, v)
        dropped.append((u, v, margin))


LISTED_ORDERS = 50  # the orders an exploration records as keeping every edge (the lexicographically first)


def valid_chains(dag: nx.DiGraph, limit: int = 1000) -> list[list[str]]:
    """All topological orders of `dag` in lexicographic order, at most `limit`.

    Orders are generated lexicographically, so a truncated list is always the
    `limit` lexicographically smallest chains.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if not nx.is_directed_acyclic_graph(dag):
        raise ValueError("the precedence graph has a cycle; call break_cycles() first")
    chains: list[list[str]] = []
    for chain in _lexicographic_topological_sorts(dag):
        chains.append(chain)
        if len(chains) == limit:
            break
    return chains


def recommended_chain(
    dag: nx.DiGraph, outcomes: list[PairOutcome], limit: int = 1000
) -> list[str]:
    """The valid chain that best agrees with the measured pairwise preferences.

    Each chain scores, for every non-incompatible outcome (ties included),
    +mean_diff when it puts `first` before `second` and -mean_diff
    otherwise. The highest score wins; equal scores go to the
    lexicographically smallest chain. Only the first `limit` valid chains
    (see valid_chains) are considered.
    """
    preferences = [outcome for outcome in outcomes if outcome.incompatible is None]
    for outcome in preferences:
        _check_outcome_methods(outcome, dag)
    best_chain: list[str] = []
    best_score = float("-inf")
    for chain in valid_chains(dag, limit):
        score = agreement(chain, preferences)
        if score > best_score:
            best_chain, best_score = chain, score
    return best_chain


def rank_of_chain(
    chain: list[str] | tuple[str, ...],
    scored_orders: dict[tuple[str, ...], float],
    higher_is_better: bool = True,
) -> int:
    """1-based rank of `chain` among exhaustively scored orders; ties share the best rank."""
    key = tuple(chain)
    if key not in scored_orders:
        raise ValueError(
            f"chain {list(key)} is not among the scored orders; "
            "score it in the exhaustive search before ranking it"
        )
    own = scored_orders[key]
    if higher_is_better:
        better = sum(1 for score in scored_orders.values() if score > own)
    else:
        better = sum(1 for score in scored_orders.values() if score < own)
    return better + 1


def _weakest_edge(dag: nx.DiGraph, cycle: list[tuple[str, str]]) -> tuple[str, str, float]:
    """Edge of `cycle` with the smallest (margin, u, v), as (u, v, margin); a forced edge
    (the only order that applies) goes only when the cycle has nothing else to drop."""
    _, margin, u, v = min((dag.edges[u, v].get("forced", False), dag.edges[u, v]["margin"], u, v) for u, v in cycle)
    return u, v, margin


def _lexicographic_topological_sorts(dag: nx.DiGraph) -> Iterator[list[str]]:
    """Yield every topological order, lexicographically smallest first."""
    in_degree = dict(dag.in_degree())
    chain: list[str] = []

    def extend() -> Iterator[list[str]]:
        if len(chain) == len(in_degree):
            yield list(chain)
            return
        ready = sorted(node for node, degree in in_degree.items() if degree == 0)
        for node in ready:
            in_degree[node] = -1
            for successor in dag.successors(node):
                in_degree[successor] -= 1
            chain.append(node)
            yield from extend()
            chain.pop()
            for successor in dag.successors(node):
                in_degree[successor] += 1
            in_degree[node] = 0

    yield from extend()


def agreement(chain: list[str], preferences: list[PairOutcome]) -> float:
    """Sum of mean_diff over outcomes the chain follows, minus those it reverses (a Kemeny-style score)."""
    position = {method: index for index, method in enumerate(chain)}
    total = 0.0
    for outcome in preferences:
        if position[outcome.first] < position[outcome.second]:
            total += outcome.mean_diff
        else:
            total -= outcome.mean_diff
    return total


def _check_outcome_methods(outcome: PairOutcome, graph: nx.DiGraph) -> frozenset[str]:
    """Raise if the outcome names a method absent from the graph; return its pair."""
    for name in (outcome.first, outcome.second):
        if name not in graph:
            raise ValueError(
                f"outcome names unknown method {name!r}; known methods: {sorted(graph.nodes)}"
            )
    return frozenset((outcome.first, outcome.second))
