"""Search for the best chain by evaluating whole chains, at a bounded cost.

Every evaluated chain is a path in the tree of prefixes: its cost is the
number of its prefixes not applied before, since the step cache shares them
(so after the pairwise plan, a chain of 4 costs at most 2 applications).
`search_chains` is the driver: it asks a strategy for the next full chains,
lets the caller evaluate them (`evaluate(chains) -> {chain: per-seed
scores}`), counts the prefixes spent and never exceeds the budget. The
strategies (`STRATEGIES`):

- `pairwise`: the paper's procedure: the chain of the precedence graph of
  the pair outcomes; nothing beyond the pairwise plan.
- `surrogate` (the default): starts from the pair outcomes, evaluates the
  pairwise chain and orders that together put every method at every position
  it can take (cover.py: a Latin square of n orders when no pair is forced,
  each agreeing with the pairs as well as it can; a pair measured on the base
  cannot see what a method does to a model the others already compressed),
  then, while the budget lasts, the order that a least-squares model of the
  chains evaluated so far (agreement with the pairs + each method's place and
  place^2) predicts best; recommends the best evaluated chain. See
  benchmarks/bench_search_synthetic.py for how it was chosen.
- `random`: random orders until the budget is spent (a baseline).
- `exhaustive`: every order (budget: the whole prefix tree).
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ordercomp.order.cover import Cell, covering_orders, uncoverable
from ordercomp.order.graph import agreement, break_cycles, precedence_graph, recommended_chain
from ordercomp.order.pairwise import PairOutcome
from ordercomp.order.plan import exhaustive_applications, pairwise_applications, pairwise_plan

Chain = tuple[str, ...]
Evaluate = Callable[[list[Chain]], dict[Chain, Sequence[float]]]
BUDGET_FACTOR = 2


def prefixes(chain: Sequence[str]) -> list[Chain]:
    """(a,), (a, b), ... up to the chain itself."""
    return [tuple(chain[:length]) for length in range(1, len(chain) + 1)]


def prefix_cost(chains: Sequence[Sequence[str]], applied: set[Chain] | frozenset[Chain] = frozenset()) -> int:
    """Applications needed for `chains`: their distinct prefixes not in `applied`."""
    return len({prefix for chain in chains for prefix in prefixes(chain)} - set(applied))


def search_budget(n: int, strategy: str = "surrogate") -> int:
    """Default applications per seed: the prefix tree for exhaustive, else 2x the pairwise plan."""
    if strategy == "exhaustive":
        return exhaustive_applications(n)
    return BUDGET_FACTOR * pairwise_applications(n)


@dataclass
class SearchState:
    """What a strategy sees: the pair outcomes, every score so far and the prefixes applied."""

    methods: Chain
    higher_is_better: bool
    outcomes: list[PairOutcome]
    budget: int
    rng: random.Random
    applied: set[Chain] = field(default_factory=set)
    scores: dict[Chain, list[float]] = field(default_factory=dict)
    tried: set[Chain] = field(default_factory=set)

    @property
    def remaining(self) -> int:
        return self.budget - len(self.applied)

    def cost(self, chains: Sequence[Chain]) -> int:
        return prefix_cost(chains, self.applied)

    def value(self, chain: Chain) -> float:
        """Mean score over seeds, oriented so that higher is better."""
        mean = statistics.fmean(self.scores[chain])
        return mean if self.higher_is_better else -mean

    def full_chains(self) -> list[Chain]:
        """Evaluated full chains with scores, best first (ties: lexicographic)."""
        done = [chain for chain in self.tried if self.scores.get(chain)]
        return sorted(done, key=lambda chain: (-self.value(chain), chain))

    def allowed(self, chain: Chain) -> bool:
        """False when the chain puts a forced pair (only one order applies) the wrong way round."""
        position = {method: index for index, method in enumerate(chain)}
        for outcome in self.outcomes:
            if outcome.only_order is not None:
                loser = outcome.second if outcome.winner == outcome.first else outcome.first
                if position[outcome.winner] > position[loser]:
                    return False
        return True


@dataclass(frozen=True)
class ChainScore:
    """One evaluated full chain: mean and standard error over seeds, 1-based rank among those evaluated."""

    chain: Chain
    mean: float
    standard_error: float
    seeds: int
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"chain": list(self.chain), "mean": self.mean, "standard_error": self.standard_error,
                "seeds": self.seeds, "rank": self.rank}


@dataclass(frozen=True)
class SearchResult:
    """The recommended chain, every full chain evaluated, the applications spent per seed, and (for a
    strategy that covers every position) the (method, position) cells no allowed order reaches."""

    strategy: str
    chain: Chain
    evaluated: list[ChainScore]
    failed: list[Chain]
    applications_per_seed: int
    budget: int
    uncovered: list[Cell] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "chain": list(self.chain),
                "evaluated": [score.to_dict() for score in self.evaluated],
                "failed": [list(chain) for chain in self.failed],
                "applications_per_seed": self.applications_per_seed, "budget": self.budget,
                "uncovered": [list(cell) for cell in self.uncovered]}


def search_chains(
    methods: Sequence[str],
    strategy: str,
    evaluate: Evaluate,
    *,
    outcomes: Sequence[PairOutcome] = (),
    budget: int | None = None,
    higher_is_better: bool = True,
    seed: int = 0,
) -> SearchResult:
    """Run `strategy` (a name in STRATEGIES) until it stops or the budget is spent.

    `budget` is in applications per seed and includes the pairwise plan
    (n + n(n-1)) for strategies that start from the pair `outcomes`; those
    prefixes count as applied and are not asked for again. `evaluate`
    receives full chains whose prefixes the caller must apply (for all
    seeds) and returns per-seed scores; it may return shorter prefixes'
    scores too, and an empty list for a chain that could not be applied.
    """
    plan = _strategy(strategy)
    state = _start(tuple(methods), strategy, plan, list(outcomes), budget, higher_is_better, seed)
    while True:
        batch = _affordable([tuple(chain) for chain in plan.propose(state)], state)
        if not batch:
            break
        _record(state, batch, evaluate(batch))
    chain = plan.recommend(state)
    uncovered = uncoverable(state.methods, state.allowed) if plan.covers else []
    return SearchResult(strategy, chain, _ranked(state), sorted(state.tried - set(state.full_chains())),
                        len(state.applied), state.budget, uncovered)


def pairwise_chain(methods: Sequence[str], outcomes: Sequence[PairOutcome]) -> Chain:
    """The paper's chain: topological order of the precedence graph, cycles broken."""
    dag, _ = break_cycles(precedence_graph(list(methods), list(outcomes)))
    return tuple(recommended_chain(dag, list(outcomes)))


def pairwise_ranking(methods: Sequence[str], outcomes: Sequence[PairOutcome]) -> dict[Chain, float]:
    """Every order with its agreement with the pair outcomes (sum of +-mean_diff), the ranking they imply."""
    compatible = [outcome for outcome in outcomes if outcome.incompatible is None]
    return {chain: agreement(list(chain), compatible) for chain in itertools.permutations(methods)}


def kendall_tau(first: dict[Chain, float], second: dict[Chain, float]) -> float:
    """Kendall's tau-b between two scorings of the same chains (1: same ranking, -1: reversed)."""
    if set(first) != set(second) or len(first) < 2:
        raise ValueError("Kendall's tau needs two scorings of the same >= 2 chains")
    keys = sorted(first)
    concordant = discordant = tied_first = tied_second = 0
    for a, b in itertools.combinations(keys, 2):
        sign = _sign(first[a] - first[b]) * _sign(second[a] - second[b])
        concordant += sign > 0
        discordant += sign < 0
        tied_first += first[a] == first[b]
        tied_second += second[a] == second[b]
    pairs = len(keys) * (len(keys) - 1) // 2
    denominator = math.sqrt((pairs - tied_first) * (pairs - tied_second))
    return (concordant - discordant) / denominator if denominator else 0.0


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


class PairwiseSearch:
    """The paper's procedure: the pairwise chain, no full chain evaluated."""

    needs_pairwise = True
    races = False  # nothing evaluated to race
    covers = False

    def propose(self, state: SearchState) -> list[Chain]:
        return []

    def recommend(self, state: SearchState) -> Chain:
        return pairwise_chain(state.methods, state.outcomes)


class BestEvaluated:
    """Shared rule: recommend the best evaluated full chain, else the pairwise chain. Its orders are
    raced (recommend.py) with what the budget leaves."""

    needs_pairwise = True
    races = True
    covers = False  # whether it puts every method at every allowed position before any other order

    def recommend(self, state: SearchState) -> Chain:
        best = state.full_chains()
        if best:
            return best[0]
        if state.outcomes:
            return pairwise_chain(state.methods, state.outcomes)
        return state.methods


class SurrogateSearch(BestEvaluated):
    """The pairwise chain and a cover of every allowed (method, position), then, each round, the untried
    order that a least-squares model of the evaluated chains predicts best (cheapest on ties). The model:
    score ~ intercept + beta * agreement with the pairs + per method, a * place + b * place^2; the cover
    comes first so that the model never extrapolates a method into a position no evaluated order put it."""

    covers = True

    def propose(self, state: SearchState) -> list[Chain]:
        ranking = pairwise_ranking(state.methods, state.outcomes)
        if not state.tried:
            start = [pairwise_chain(state.methods, state.outcomes)]
            return covering_orders(state.methods, state.allowed, ranking, start)
        predict = _fit_surrogate(state, ranking) if state.full_chains() else ranking.__getitem__
        candidates = [chain for chain in _affordable_untried(state) if state.allowed(chain)]
        return sorted(candidates, key=lambda chain: (-predict(chain), state.cost([chain]), chain))[:1]


class RandomSearch(BestEvaluated):
    """Random orders until the budget runs out: the baseline any strategy must beat."""

    needs_pairwise = False

    def propose(self, state: SearchState) -> list[Chain]:
        candidates = _affordable_untried(state)
        state.rng.shuffle(candidates)
        return candidates[:1]


class ExhaustiveSearch(BestEvaluated):
    """Every order; the budget must cover the whole prefix tree (and leaves nothing to race)."""

    needs_pairwise = False
    races = False

    def propose(self, state: SearchState) -> list[Chain]:
        return [chain for chain in itertools.permutations(state.methods) if chain not in state.tried]


STRATEGIES: dict[str, type] = {
    "pairwise": PairwiseSearch,
    "surrogate": SurrogateSearch,
    "random": RandomSearch,
    "exhaustive": ExhaustiveSearch,
}
DEFAULT_STRATEGY = "surrogate"


def _affordable_untried(state: SearchState) -> list[Chain]:
    """Orders not tried yet that fit in the remaining budget, in permutation order."""
    return [chain for chain in itertools.permutations(state.methods)
            if chain not in state.tried and state.cost([chain]) <= state.remaining]


def _features(chain: Chain, methods: Chain, ranking: dict[Chain, float]) -> list[float]:
    """Intercept, agreement with the pairs, each method's place scaled to 0..1, and its square
    (a method that hurts a compressed model costs more the later it comes)."""
    place = {method: index / (len(chain) - 1) for index, method in enumerate(chain)}
    return [1.0, ranking[chain]] + [place[method] for method in methods] + [place[method] ** 2 for method in methods]


def _fit_surrogate(state: SearchState, ranking: dict[Chain, float], ridge: float = 1e-3) -> Callable[[Chain], float]:
    """Ridge least squares of the evaluated chains' mean values on _features; returns the predictor."""
    rows = [(_features(chain, state.methods, ranking), state.value(chain)) for chain in state.full_chains()]
    size = len(rows[0][0])
    normal = [[sum(x[i] * x[j] for x, _ in rows) + (ridge if i == j else 0.0) for j in range(size)] for i in range(size)]
    target = [sum(x[i] * y for x, y in rows) for i in range(size)]
    weights = _solve(normal, target)
    return lambda chain: sum(w * x for w, x in zip(weights, _features(chain, state.methods, ranking)))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting for a small symmetric positive definite system."""
    size = len(vector)
    rows = [row[:] + [value] for row, value in zip(matrix, vector)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / rows[col][col]
            rows[r] = [a - factor * b for a, b in zip(rows[r], rows[col])]
    solution = [0.0] * size
    for r in reversed(range(size)):
        solution[r] = (rows[r][size] - sum(rows[r][c] * solution[c] for c in range(r + 1, size))) / rows[r][r]
    return solution


def _strategy(name: str):
    """A fresh strategy object for `name`, or a one-line error listing the known names."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown search strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]()


def _start(methods: Chain, name: str, plan, outcomes: list[PairOutcome], budget: int | None,
           higher_is_better: bool, seed: int) -> SearchState:
    """Check the inputs and count the pairwise plan as applied when the strategy builds on it."""
    if len(methods) < 2 or len(set(methods)) != len(methods):
        raise ValueError(f"a chain search needs at least 2 distinct methods, got {list(methods)}")
    budget = search_budget(len(methods), name) if budget is None else budget
    floor = exhaustive_applications(len(methods)) if name == "exhaustive" else pairwise_applications(len(methods))
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < floor:
        raise ValueError(f"the {name} search needs a budget of at least {floor} applications per seed, got {budget!r}")
    if plan.needs_pairwise and {frozenset((o.first, o.second)) for o in outcomes} != {
            frozenset(pair) for pair in itertools.combinations(methods, 2)}:
        raise ValueError(f"the {name} search needs one pair outcome for every pair of {list(methods)}")
    state = SearchState(methods, higher_is_better, outcomes, budget, random.Random(seed))
    if plan.needs_pairwise:
        state.applied.update(pairwise_plan(list(methods)))
    return state


def _affordable(proposal: list[Chain], state: SearchState) -> list[Chain]:
    """The proposed chains, in order, that fit in the remaining budget together; untried ones only."""
    batch: list[Chain] = []
    for chain in proposal:
        if sorted(chain) != sorted(state.methods):
            raise ValueError(f"strategy proposed {list(chain)}, which is not an order of {list(state.methods)}")
        if chain not in state.tried and chain not in batch and state.cost(batch + [chain]) <= state.remaining:
            batch.append(chain)
    return batch


def _record(state: SearchState, batch: list[Chain], scores: dict[Chain, Sequence[float]]) -> None:
    """Count the batch's prefixes as applied and keep every score returned."""
    state.applied.update(prefix for chain in batch for prefix in prefixes(chain))
    state.tried.update(batch)
    for chain, values in scores.items():
        state.scores[tuple(chain)] = [float(value) for value in values]


def _ranked(state: SearchState) -> list[ChainScore]:
    """Evaluated full chains, best first, with mean, standard error over seeds and rank."""
    ranked = []
    for rank, chain in enumerate(state.full_chains(), start=1):
        values = state.scores[chain]
        error = statistics.stdev(values) / math.sqrt(len(values)) if len(values) >= 2 else 0.0
        ranked.append(ChainScore(chain, statistics.fmean(values), error, len(values), rank))
    return ranked
