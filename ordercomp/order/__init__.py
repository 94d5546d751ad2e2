"""Pure order-finding core: pairwise decisions with intervals, precedence graph, exploration plans, chain search,
the race of the contenders and how sure the evidence is."""

from ordercomp.order.certainty import probability_best
from ordercomp.order.cover import covering_orders, uncoverable
from ordercomp.order.evidence import DifferenceInterval, difference_interval, t_quantile
from ordercomp.order.graph import (
    agreement,
    break_cycles,
    precedence_graph,
    rank_of_chain,
    recommended_chain,
    valid_chains,
)
from ordercomp.order.pairwise import (
    ACCURACY_OBJECTIVES,
    LATENCY_OBJECTIVES,
    OBJECTIVES,
    PairOutcome,
    decide_pair,
    incompatible_pair,
    only_order_pair,
    weighted_score,
)
from ordercomp.order.plan import (
    ARROW,
    MAX_EXHAUSTIVE_METHODS,
    chain_text,
    exhaustive_applications,
    exhaustive_plan,
    naive_exhaustive_applications,
    pairwise_applications,
    pairwise_plan,
)
from ordercomp.order.race import RaceResult, Trial, race
from ordercomp.order.recommend import Recommendation, recommend_order
from ordercomp.order.search import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    ChainScore,
    SearchResult,
    kendall_tau,
    pairwise_chain,
    pairwise_ranking,
    prefix_cost,
    prefixes,
    search_budget,
    search_chains,
)
from ordercomp.order.synthetic import PairEvidence, simulate_pair

__all__ = [
    "DEFAULT_STRATEGY",
    "MAX_EXHAUSTIVE_METHODS",
    "ACCURACY_OBJECTIVES",
    "ARROW",
    "LATENCY_OBJECTIVES",
    "OBJECTIVES",
    "STRATEGIES",
    "ChainScore",
    "DifferenceInterval",
    "PairEvidence",
    "PairOutcome",
    "RaceResult",
    "Recommendation",
    "SearchResult",
    "Trial",
    "agreement",
    "break_cycles",
    "chain_text",
    "covering_orders",
    "decide_pair",
    "difference_interval",
    "exhaustive_applications",
    "exhaustive_plan",
    "incompatible_pair",
    "kendall_tau",
    "only_order_pair",
    "naive_exhaustive_applications",
    "pairwise_applications",
    "pairwise_chain",
    "pairwise_plan",
    "pairwise_ranking",
    "prefix_cost",
    "probability_best",
    "race",
    "recommend_order",
    "prefixes",
    "precedence_graph",
    "rank_of_chain",
    "recommended_chain",
    "search_budget",
    "search_chains",
    "simulate_pair",
    "t_quantile",
    "uncoverable",
    "valid_chains",
]
