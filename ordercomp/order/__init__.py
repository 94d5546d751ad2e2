"""Pure order-finding core: pairwise decisions, precedence graph and exploration plans."""

from ordercomp.order.graph import (
    break_cycles,
    precedence_graph,
    rank_of_chain,
    recommended_chain,
    valid_chains,
)
from ordercomp.order.pairwise import (
    OBJECTIVES,
    PairOutcome,
    decide_pair,
    incompatible_pair,
    only_order_pair,
    weighted_score,
)
from ordercomp.order.plan import (
    MAX_EXHAUSTIVE_METHODS,
    exhaustive_applications,
    exhaustive_plan,
    naive_exhaustive_applications,
    pairwise_applications,
    pairwise_plan,
)

__all__ = [
    "MAX_EXHAUSTIVE_METHODS",
    "OBJECTIVES",
    "PairOutcome",
    "break_cycles",
    "decide_pair",
    "exhaustive_applications",
    "exhaustive_plan",
    "incompatible_pair",
    "only_order_pair",
    "naive_exhaustive_applications",
    "pairwise_applications",
    "pairwise_plan",
    "precedence_graph",
    "rank_of_chain",
    "recommended_chain",
    "valid_chains",
]
