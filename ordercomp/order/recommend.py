"""From pair outcomes to a recommended order and how sure the evidence is: screen, confirm, race, assess.

`recommend_order` is the whole procedure after the pairwise plan; it decides which orders get which
seeds at which budget, and the caller measures them (`measure(chains, seeds, fidelity)`, fidelity
being the fraction of the fine-tuning budget). Its phases:

1. screen: the search strategy (search.py) evaluates whole orders. A racing strategy with two
   seeds or more and no `screen` searches on the first seed only, with SEARCH_SHARE of the
   applications the total allows beyond the pairwise plan: on one seed it sees about three times
   as many orders as on three (`searches_one_seed`). Otherwise it searches on every seed, at most
   BUDGET_FACTOR x the pairwise plan's applications per seed (including it); with `screen`, at that
   fraction of the fine-tuning budget;
2. confirm (after a one-seed search or a `screen`): the screened orders, best first (with a screen:
   those still in contention), are measured at the full budget while they fit in half of what is
   left (with `screen`: of SCREEN_FULL_FACTOR x the pairwise plan's applications over all seeds),
   on every seed after a screen, on the other seeds after a one-seed search: the first seed chose
   them, so its scores favour them (the best of many noisy scores is high by luck too), and the
   evidence leaves it out unless every order it ran was confirmed. On noisy synthetic landscapes the claimed probability then matched the
   share of truly best orders within 0.02 on average, against 0.06 with the first seed kept;
3. race (race.py): extra seeds for the orders in contention at the full budget, with what the
   total allows: TOTAL_FACTOR x the pairwise plan's applications over all seeds, minus what the
   screen and the confirmation spent (with `screen`: the rest of the full-budget allowance);
4. assess (certainty.py): the probability that each order measured at the full budget is the best
   of them, the orders the recommended one could not be separated from, and how far behind the best of
   those it could be (the far end of their paired interval): within `margin`, the smallest difference
   that counts, the recommended order is a sound choice, and any of them is if none could be more than
   `margin` worse either (`gaps`); beyond it, the choice is open;
5. settle (opt-in, `settle` applications): while the choice is open, the race goes on over the orders still in
   contention, each new seed for the leader and the orders that could still be more than `margin` better than it
   (race.py), until none could or those applications are spent; its tests, after every seed, use a stricter interval
   (SETTLE_LOOKS), and so does the verdict after it: at the end, the orders significantly worse than the leader by it
   are dropped once (by the 95% interval, 14.5% of A/A runs at 2 points of seed noise dropped one of four equal
   orders: the leader is the highest of several means), and the bound on how far behind the leader could be is its.
   The exploration's seeds chose the contenders, so the best of them is high partly by luck, and more seeds are what
   tells it from luck (stop 33: on a held-out setting the recommended order, chosen on 4 seeds, scored 13.8 points
   below another contender on 8 fresh seeds).

The pairwise strategy evaluates no whole order (the paper's chain is recommended as it is), and
exhaustive evaluates every order, so neither races.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ordercomp.order.certainty import probability_best
from ordercomp.order.pairwise import PairOutcome
from ordercomp.order.plan import exhaustive_applications, pairwise_applications, pairwise_plan
from ordercomp.order.race import Evidence, RaceResult, Trial, eliminated, race, shortfall, standing, unsettled
from ordercomp.order.search import STRATEGIES, SearchResult, prefix_cost, search_budget, search_chains

Chain = tuple[str, ...]
Measure = Callable[[list[Chain], Sequence[int], float], Mapping[Chain, Mapping[int, Trial] | None]]
TOTAL_FACTOR = 2.5  # all applications, every seed and the race included, at most this x the pairwise plan's
SCREEN_FULL_FACTOR = 1.0  # with a screen: full-budget applications (confirmation and race) at most this x the pairwise plan's
SEARCH_SHARE = 0.5  # a one-seed search: its share of the applications the total allows beyond the pairwise plan
SURE = 0.9  # a screen whose leader is the best of its orders with this probability explores on instead of racing
SETTLE_LOOKS = 5  # settling tests after every seed: each test spends the interval's error over this many (95% -> 99%)


@dataclass(frozen=True)
class Recommendation:
    """The recommended order, the evidence at the full budget (and the screen's, if any), and the cost."""

    chain: Chain
    search: SearchResult
    evidence: Evidence
    screened: Evidence
    screen: float | None
    race: RaceResult | None
    probabilities: dict[Chain, float] | None
    applications: dict[str, float]
    confidence: float
    higher_is_better: bool
    margin: float = 0.0
    settle: dict[str, int] | None = None  # with `settle`: its budget, the applications it spent and on how many seeds

    @property
    def verdict_confidence(self) -> float:
        """The confidence of the intervals the verdict rests on: after settling (which tested after every seed), the
        stricter one it stopped on; else the race's."""
        return settle_confidence(self.confidence) if self.settle and self.settle["spent"] else self.confidence

    @property
    def inseparable(self) -> list[Chain]:
        """The orders the recommended one could not be separated from (the race's other contenders)."""
        return [chain for chain in self.race.contenders if chain != self.chain] if self.race else []

    def gaps(self) -> list[dict[str, Any]]:
        """For each order the recommended one could not be separated from: how far behind it scored on their common
        seeds (`lower`: worse, whichever way the objective points; negative when it scored ahead), on how many, and how
        much better (`better_at_most`) or worse (`worse_at_most`) the paired interval over seeds and images lets it be
        (None when no interval can be drawn)."""
        gaps = []
        for chain in self.inseparable:
            points, interval = shortfall(self.evidence, self.chain, chain, self.higher_is_better, self.verdict_confidence)
            gaps.append({"chain": list(chain), "lower": interval.mean, "better_at_most": None if points == math.inf else points,
                         "worse_at_most": interval.high, "seeds": len(set(self.evidence[self.chain]) & set(self.evidence[chain]))})
        return gaps

    def behind_at_most(self) -> dict[str, Any] | None:
        """The inseparable order the recommended one could trail by the most: its chain, by how many points (the far end
        of the paired interval, seeds and images, of recommended minus it; None when no interval can be drawn), how
        far behind the recommended one it scored on their common seeds (`lower`), and on how many."""
        gaps = self.gaps()
        if not gaps:
            return None
        far = lambda gap: math.inf if gap["better_at_most"] is None else gap["better_at_most"]
        gap = max(gaps, key=lambda gap: (far(gap), gap["chain"]))
        return {"chain": gap["chain"], "points": gap["better_at_most"], "lower": gap["lower"], "seeds": gap["seeds"]}

    def to_dict(self) -> dict[str, Any]:
        """The search's record: what every consumer (CLI, pages, report) reads."""
        probability = self.probabilities.get(self.chain) if self.probabilities else None
        record = {"strategy": self.search.strategy, "applications_per_seed": self.search.applications_per_seed,
                  "budget_per_seed": self.search.budget, "orders": self._orders(self.evidence, self.probabilities),
                  "failed": [list(c) for c in self.search.failed + (self.race.failed if self.race else [])],
                  "screen": self.screen, "applications": self.applications, "confidence": self.confidence,
                  "positions_not_allowed": [[method, place + 1] for method, place in self.search.uncovered]}
        if self.screened is not self.evidence:  # a screen or a one-seed search, then a confirmation
            record["screened_orders"] = self._orders(self.screened, None)
        if self.evidence:
            record["verdict"] = {"chain": list(self.chain), "evaluated": len(self.evidence), "probability": probability,
                                 "inseparable": [list(c) for c in self.inseparable],
                                 "behind_at_most": self.behind_at_most(), "gaps": self.gaps(), "margin": self.margin,
                                 "separated": bool(self.race and self.race.separated),
                                 "extra_seeds": list(self.race.seeds_run) if self.race else [], "settle": self.settle,
                                 "confidence": self.verdict_confidence}
        return record

    def _orders(self, evidence: Evidence, probabilities: dict[Chain, float] | None) -> list[dict[str, Any]]:
        """Orders best first with mean, standard error and seeds; at the full budget also P(best) and status."""
        rows = []
        for chain in standing(evidence, self.higher_is_better):
            scores = [trial.score for trial in evidence[chain].values()]
            se = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else 0.0
            row = {"chain": list(chain), "score": statistics.fmean(scores), "se": se, "seeds": len(scores)}
            if evidence is self.evidence:
                row |= {"probability": probabilities.get(chain) if probabilities else None, "status": self._status(chain)}
            rows.append(row)
        return rows

    def _status(self, chain: Chain) -> str:
        if chain == self.chain:
            return "recommended"
        if self.race and chain in self.race.dropped:
            return f"dropped after {self.race.dropped[chain]} seeds"
        return "not separated"


def recommend_order(methods: Sequence[str], strategy: str, measure: Measure, *, outcomes: Sequence[PairOutcome] = (),
              seeds: int, higher_is_better: bool = True, confidence: float = 0.95, screen: float | None = None,
              seed: int = 0, margin: float = 0.0, settle: int = 0) -> Recommendation:
    """Screen, confirm, race, assess and settle (module docstring); `seeds` is the exploration's seed count, `margin`
    the smallest difference in score that counts (the pair decisions' min_margin), `settle` the applications that
    may go on more seeds while the choice is open."""
    _check(seeds, screen, strategy, settle)
    methods = tuple(methods)
    fidelity = 1.0 if screen is None else screen
    one_seed = searches_one_seed(strategy, seeds, screen)
    screened: Evidence = {}
    evaluate = _evaluator(measure, 1 if one_seed else seeds, fidelity, screened)
    search = lambda budget: search_chains(methods, strategy, evaluate, outcomes=outcomes, budget=budget,
                                          higher_is_better=higher_is_better, seed=seed)
    result = search(search_budget_per_seed(len(methods), seeds, strategy, screen))
    if screen is None and not one_seed and STRATEGIES[strategy].races and _sure(screened, higher_is_better, seed):
        result = search(int(TOTAL_FACTOR * pairwise_applications(len(methods))))  # nothing to race: explore on
    allowance = full_budget_allowance(len(methods), seeds, strategy, screen, search_per_seed=result.applications_per_seed)
    confirming = allowance // 2 if STRATEGIES[strategy].races else allowance  # a racing strategy keeps half for the race
    if one_seed:  # the other seeds, which have the pairwise plan's prefixes; the first chose the orders, so it is left out
        cost = lambda chains: prefix_cost(chains, set(pairwise_plan(list(methods)))) * (seeds - 1)
        evidence, confirmed = _confirm(screened, measure, range(1, seeds), confirming, cost, higher_is_better, confidence)
        if set(evidence) == set(screened):  # every order it ran goes on: nothing was chosen, the first seed counts too
            evidence = {chain: screened[chain] | trials for chain, trials in evidence.items()}
    elif screen is None:
        evidence, confirmed = screened, 0
    else:
        cost = lambda chains: prefix_cost(chains) * seeds
        evidence, confirmed = _confirm(screened, measure, range(seeds), confirming, cost, higher_is_better, confidence)
    raced = _race(evidence, measure, seeds, allowance - confirmed, strategy, higher_is_better, confidence)
    settling = _settle(raced, evidence, measure, settle, higher_is_better, confidence, margin) if raced and settle else None
    applications = _applications(len(methods), seeds, fidelity, result.applications_per_seed, confirmed, raced, one_seed,
                                 settling)
    raced = raced.then(settling) if settling else raced
    chain = raced.leader if raced else result.chain
    return Recommendation(chain, result, evidence, screened, screen, raced,
                          probability_best(evidence, higher_is_better, seed=seed) if evidence else None,
                          applications, confidence, higher_is_better, margin,
                          {"budget": settle, "spent": settling.applications if settling else 0,
                           "seeds": len(settling.seeds_run) if settling else 0} if settle else None)


def searches_one_seed(strategy: str, seeds: int, screen: float | None) -> bool:
    """Whether the search evaluates its orders on the first seed only (then confirms the best on the others):
    a racing strategy at the full budget with seeds to spare. Replayed on bench_search.py's ground truth
    (benchmarks/bench_search_replay.py), the one-seed search found the best order, or one within its standard
    error, on every 4- and 5-method setting, where the 3-seed search missed one by 8.4 points."""
    return screen is None and STRATEGIES[strategy].races and seeds > 1


def search_budget_per_seed(n: int, seeds: int, strategy: str, screen: float | None = None) -> int:
    """The search's budget in applications per seed it runs on (the pairwise plan included)."""
    if searches_one_seed(strategy, seeds, screen):
        beyond = (TOTAL_FACTOR - 1) * pairwise_applications(n) * seeds
        return min(pairwise_applications(n) + int(SEARCH_SHARE * beyond), exhaustive_applications(n))
    return search_budget(n, strategy)


def full_budget_allowance(n: int, seeds: int, strategy: str, screen: float | None = None, *,
                          search_per_seed: int | None = None) -> int:
    """At most how many applications `recommend_order` spends at the full budget after the search, over all seeds:
    a screen's confirmation and the race's extra seeds. `search_per_seed` is what the search spent per seed
    (before it runs: the least it can spend, the pairwise plan, which makes this a bound known at the start)."""
    if screen is not None:
        allowance = int(SCREEN_FULL_FACTOR * pairwise_applications(n) * seeds)
        return allowance if STRATEGIES[strategy].races else allowance // 2  # exhaustive confirms, runs no extra seed
    if not STRATEGIES[strategy].races:
        return 0
    spent = pairwise_applications(n) if search_per_seed is None else search_per_seed
    searched = search_applications(n, seeds, spent, searches_one_seed(strategy, seeds, screen))
    return max(0, int(TOTAL_FACTOR * pairwise_applications(n) * seeds) - searched)


def search_applications(n: int, seeds: int, per_seed: int, one_seed: bool) -> int:
    """The search's applications over all seeds, the pairwise plan included: `per_seed` on every seed, or on the
    first only (a one-seed search), the others then getting the pairwise plan."""
    return per_seed + pairwise_applications(n) * (seeds - 1) if one_seed else per_seed * seeds


def _check(seeds: int, screen: float | None, strategy: str, settle: int) -> None:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    if screen is not None and not 0 < screen < 1:
        raise ValueError(f"screen must be a fraction of the fine-tuning budget in (0, 1), e.g. 0.25, got {screen!r}")
    if screen is not None and strategy == "pairwise":
        raise ValueError("screening needs a search that evaluates whole orders (surrogate, random or exhaustive), not pairwise")
    check_settle(settle, strategy)


def check_settle(settle: int, strategy: str) -> None:
    """Refuse a settle budget that is not a whole number of applications >= 0, or one with the pairwise procedure."""
    if isinstance(settle, bool) or not isinstance(settle, int) or settle < 0:
        raise ValueError(f"settle must be a whole number of method applications >= 0 (0: never), got {settle!r}")
    if settle and strategy == "pairwise":
        raise ValueError("settling races whole orders on more seeds: choose a search that evaluates them (surrogate, random "
                         "or exhaustive), not pairwise")


def _evaluator(measure: Measure, seeds: int, fidelity: float, screened: Evidence):
    """search_chains' evaluate: per-seed scores on the exploration's seeds, keeping each order's trials; an
    order asked for again (a search resumed with a larger budget repeats its proposals) is not measured again."""
    known: dict[Chain, list[float]] = {}

    def evaluate(chains: list[Chain]) -> dict[Chain, list[float]]:
        fresh = [chain for chain in chains if chain not in known]
        trials = measure(fresh, range(seeds), fidelity) if fresh else {}
        for chain in fresh:
            got = trials.get(chain)
            if got:
                screened[chain] = dict(got)
            known[chain] = [got[s].score for s in sorted(got)] if got else []
        return {chain: known[chain] for chain in chains}
    return evaluate


def _sure(screened: Evidence, higher_is_better: bool, seed: int) -> bool:
    """Whether the screen's leader is the best of its orders with probability SURE or more (then a race has
    little to decide, and the rest of the budget goes to exploring more orders)."""
    probabilities = probability_best(screened, higher_is_better, seed=seed) if len(screened) > 1 else None
    return bool(probabilities) and max(probabilities.values()) >= SURE


def _confirm(screened: Evidence, measure: Measure, seeds: Sequence[int], allowance: int, cost: Callable[[list[Chain]], int],
             higher_is_better: bool, confidence: float) -> tuple[Evidence, int]:
    """The screened contenders (one seed: every screened order), best first, measured at the full budget on
    `seeds` while `allowance` affords their `cost`; (their evidence, applications spent)."""
    out = set(eliminated(screened, standing(screened, higher_is_better), higher_is_better, confidence))
    chosen: list[Chain] = []
    for chain in (c for c in standing(screened, higher_is_better) if c not in out):
        if cost(chosen + [chain]) > allowance:
            break
        chosen.append(chain)
    if not chosen:
        return {}, 0
    trials = measure(chosen, seeds, 1.0)
    return {chain: dict(trials[chain]) for chain in chosen if trials.get(chain)}, cost(chosen)


def _race(evidence: Evidence, measure: Measure, seeds: int, budget: int, strategy: str, higher_is_better: bool,
          confidence: float) -> RaceResult | None:
    """The race over the full-budget evidence (no extra seed for strategies that do not race)."""
    if not evidence:
        return None
    return race(evidence, _on_seed(measure), next_seed=seeds, budget=budget if STRATEGIES[strategy].races else 0,
                higher_is_better=higher_is_better, confidence=confidence)


def settle_confidence(confidence: float) -> float:
    """The stricter confidence settling tests with: it looks after every seed, and stopping at the first seed that looks
    settled would often stop on a lucky one (95% -> 99%)."""
    return 1 - (1 - confidence) / SETTLE_LOOKS


def _settle(raced: RaceResult, evidence: Evidence, measure: Measure, budget: int, higher_is_better: bool,
            confidence: float, margin: float) -> RaceResult | None:
    """The race's contenders on more seeds, after every seed used so far, while one of them could be more than
    `margin` better than the leader (each new seed for the leader and those), within `budget` applications; None when
    the choice is not open."""
    strict = settle_confidence(confidence)
    focus = lambda contenders: unsettled(evidence, contenders, higher_is_better, strict, margin)
    if not focus(raced.contenders):
        return None
    after = max(seed for trials in evidence.values() for seed in trials) + 1
    return race({chain: evidence[chain] for chain in raced.contenders}, _on_seed(measure), next_seed=after, budget=budget,
                higher_is_better=higher_is_better, confidence=strict, focus=focus)


def _on_seed(measure: Measure):
    """The race's run(chains, seed): each chain's trial on that seed at the full budget, None where it failed."""
    return lambda chains, seed: {chain: (trials or {}).get(seed) for chain, trials in measure(chains, [seed], 1.0).items()}


def _applications(n: int, seeds: int, fidelity: float, screen_per_seed: int, confirmed: int, raced: RaceResult | None,
                  one_seed: bool, settling: RaceResult | None) -> dict:
    """Applications spent: the screen (per seed it ran on, and over all seeds with the pairwise plan), the
    confirmation, the race and the settling; `cost` counts a screened application as its fraction of the budget;
    `exhaustive` every order on every seed."""
    screen_total = search_applications(n, seeds, screen_per_seed, one_seed)
    race_total = raced.applications if raced else 0
    settle_total = settling.applications if settling else 0
    total = screen_total + confirmed + race_total + settle_total
    cost = fidelity * screen_total + confirmed + race_total + settle_total
    exhaustive = exhaustive_applications(n) * seeds
    return {"per_seed": screen_per_seed, "search_seeds": 1 if one_seed else seeds, "screen": screen_total, "confirm": confirmed, "race": race_total, "settle": settle_total,
            "total": total, "cost": cost, "pairwise": pairwise_applications(n) * seeds, "exhaustive": exhaustive,
            "share_of_exhaustive": cost / exhaustive}
