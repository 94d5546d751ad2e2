"""Race the contenders: extra seeds only for the whole orders still in contention.

After the search has evaluated whole orders (recommend.py: with two seeds or more, the best of those
it ran on the first seed, measured on the others), the evidence for the best
of them may not separate it from the next: seed-to-seed noise of 2-6 points per order is common on
strongly compressed models. `race` (F-Race style) compares the leader (the highest mean) with every
other contender, paired per seed and, for accuracy objectives, per validation image
(`evidence.difference_interval`, the interval the pair decisions use, with the seeds' k - 1 degrees
of freedom): an order is dropped once the interval of leader minus it lies above 0. While more than one contender is left and the extra-seed
budget allows, the better half of the contenders (by mean, at least two; successive halving) is
run on the next seed (k, k+1, ... beyond the exploration's seeds) through the caller's
`run(chains, seed)`, as far as the budget affords them together (fewer than two: the race ends).
Halving puts the seeds where the choice is made: on noisy synthetic landscapes (4 methods, 1.5-3.5
points of seed sd) it cut the median regret from 0.50 to 0.06 points against running every
contender on each extra seed.

The leader is the maximum of m noisy means, so it beats an equal order by chance more often than a
fixed pair would, and the test is repeated every round: `benchmarks/bench_search_synthetic.py --aa`
measures how often a race drops one of several equally good orders. With Welch's degrees of freedom
(which lean on the per-image part) it did in 20 % of races at 2 points of seed noise even with a
Bonferroni correction; with the seeds' degrees of freedom, uncorrected, in 3 %.

Settling an open choice (recommend.py, `focus`) asks another question: not which order is best, but whether any
contender could be more than the margin that counts better than the leader (`unsettled`, from the far end of the
same paired interval, `shortfall`). Each new seed then goes to the leader and those orders only, and the orders
significantly worse than the leader are dropped once, at the end.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from ordercomp.order.evidence import DifferenceInterval, difference_interval
from ordercomp.order.search import prefix_cost

Chain = tuple[str, ...]


@dataclass(frozen=True)
class Trial:
    """A whole order measured on one seed: its score and, for accuracy objectives, its 0/1 correctness
    on each validation image (the same images, in the same order, for every order and seed)."""

    score: float
    hits: tuple[int, ...] | None = None


Evidence = dict[Chain, dict[int, Trial]]  # per order, per seed
RunSeed = Callable[[list[Chain], int], Mapping[Chain, Trial | None]]  # None: the order could not be applied on that seed


def oriented(score: float, higher_is_better: bool) -> float:
    return score if higher_is_better else -score


def mean_score(trials: Mapping[int, Trial]) -> float:
    return statistics.fmean(trial.score for trial in trials.values())


def standing(evidence: Mapping[Chain, Mapping[int, Trial]], higher_is_better: bool) -> list[Chain]:
    """Orders best first by their mean over their own seeds (ties: lexicographic)."""
    return sorted(evidence, key=lambda chain: (-oriented(mean_score(evidence[chain]), higher_is_better), chain))


def paired_interval(leader: Mapping[int, Trial], other: Mapping[int, Trial], higher_is_better: bool,
                    confidence: float) -> DifferenceInterval:
    """Interval of leader minus other (oriented: positive when the leader is better) over their common
    seeds, with the per-image evidence when both have it on every common seed."""
    seeds = sorted(set(leader) & set(other))
    if not seeds:
        raise ValueError("two orders can only be compared on seeds both were measured on")
    diffs = [oriented(leader[s].score - other[s].score, higher_is_better) for s in seeds]
    images = all(leader[s].hits is not None and other[s].hits is not None for s in seeds)
    first = [leader[s].hits for s in seeds] if images else None
    second = [other[s].hits for s in seeds] if images else None
    return difference_interval(diffs, first, second, confidence=confidence, seed_df=True)


def eliminated(evidence: Mapping[Chain, Mapping[int, Trial]], contenders: Sequence[Chain], higher_is_better: bool,
               confidence: float) -> list[Chain]:
    """The contenders significantly worse than the leader (the first of `standing`)."""
    if len(contenders) < 2:
        return []
    ranked = standing({chain: evidence[chain] for chain in contenders}, higher_is_better)
    leader, others = ranked[0], ranked[1:]
    return [chain for chain in others
            if _below(paired_interval(evidence[leader], evidence[chain], higher_is_better, confidence))]


def _below(interval: DifferenceInterval) -> bool:
    return interval.low is not None and interval.low > 0


def shortfall(evidence: Mapping[Chain, Mapping[int, Trial]], leader: Chain, other: Chain, higher_is_better: bool,
              confidence: float) -> tuple[float, DifferenceInterval]:
    """How many points better than `leader` `other` could be (the far end of the paired interval of leader minus
    other, 0 when it lies above 0, inf when none can be drawn), and that interval."""
    interval = paired_interval(evidence[leader], evidence[other], higher_is_better, confidence)
    return (math.inf if interval.low is None else max(0.0, -interval.low)), interval


def unsettled(evidence: Mapping[Chain, Mapping[int, Trial]], contenders: Sequence[Chain], higher_is_better: bool,
              confidence: float, margin: float) -> list[Chain]:
    """The contenders after the first (the leader) that could be more than `margin` better than it; with none, any
    of them is a sound choice and more seeds would not change what counts."""
    return [other for other in contenders[1:]
            if shortfall(evidence, contenders[0], other, higher_is_better, confidence)[0] > margin]


@dataclass
class RaceResult:
    """What the race left: the contenders still in (leader first), the orders it dropped with the
    seeds they had then, those that failed on an extra seed, and the applications it spent."""

    contenders: list[Chain]
    dropped: dict[Chain, int] = field(default_factory=dict)
    failed: list[Chain] = field(default_factory=list)
    applications: int = 0
    seeds_run: list[int] = field(default_factory=list)

    @property
    def leader(self) -> Chain:
        return self.contenders[0]

    @property
    def separated(self) -> bool:
        """True when every other order was found significantly worse than the leader."""
        return len(self.contenders) == 1

    def then(self, more: "RaceResult") -> "RaceResult":
        """This race followed by `more`, a race of its contenders on later seeds."""
        return RaceResult(more.contenders, self.dropped | more.dropped, self.failed + more.failed,
                          self.applications + more.applications, self.seeds_run + more.seeds_run)


def race(evidence: Evidence, run: RunSeed, *, next_seed: int, budget: int, higher_is_better: bool = True,
         confidence: float = 0.95, max_seeds: int = 50,
         focus: Callable[[list[Chain]], list[Chain]] | None = None) -> RaceResult:
    """Race the orders of `evidence` (updated in place with the extra seeds' trials) within `budget`
    applications over the extra seeds; no order gets more than `max_seeds` seeds in all. `focus(contenders)`
    (leader first), when given, names the contenders still in question: each new seed then goes to the leader and
    those (not the better half), the race ends when none is left, and it drops the orders significantly worse than the
    leader only then, once (one is out of question anyway; testing for drops again on every seed of a long race
    dropped one of four equally good orders in 10 % of A/A runs, benchmarks/bench_search_synthetic.py --aa)."""
    if not evidence:
        raise ValueError("a race needs at least one evaluated order")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ValueError(f"the race's budget must be a whole number of applications >= 0, got {budget!r}")
    result = RaceResult(standing(evidence, higher_is_better))
    seed = next_seed
    while True:
        _drop(result, evidence, higher_is_better, confidence, drop=focus is None)
        if focus is None:
            wanted = result.contenders[: max(2, math.ceil(len(result.contenders) / 2))]
        else:
            wanted = result.contenders[:1] + focus(result.contenders) if len(result.contenders) > 1 else []
        batch = _affordable(wanted, evidence, budget - result.applications, max_seeds)
        if len(batch) < 2:
            if focus is not None:
                _drop(result, evidence, higher_is_better, confidence)
            return result
        trials = run(batch, seed)
        result.applications += prefix_cost(batch)
        result.seeds_run.append(seed)
        for chain in batch:
            trial = trials.get(chain)
            if trial is None:
                result.failed.append(chain)
                result.contenders.remove(chain)
            else:
                evidence[chain][seed] = trial
        if not result.contenders:  # every order left failed on this seed: no seed can go on, they stay in
            result.contenders = standing({chain: evidence[chain] for chain in batch}, higher_is_better)
            return result
        seed += 1


def _drop(result: RaceResult, evidence: Evidence, higher_is_better: bool, confidence: float, drop: bool = True) -> None:
    """Drop the contenders significantly worse than the leader (with `drop`); the rest stay in, best first."""
    out = set(eliminated(evidence, result.contenders, higher_is_better, confidence)) if drop else set()
    result.dropped.update({chain: len(evidence[chain]) for chain in out})
    result.contenders = standing({c: evidence[c] for c in result.contenders if c not in out}, higher_is_better)


def _affordable(wanted: list[Chain], evidence: Evidence, remaining: int, max_seeds: int) -> list[Chain]:
    """The wanted contenders, best first, as far as one more seed affords them together (each prefix runs once on
    it) and none has `max_seeds` seeds already."""
    batch: list[Chain] = []
    for chain in wanted:
        if len(evidence[chain]) >= max_seeds or prefix_cost(batch + [chain]) > remaining:
            break
        batch.append(chain)
    return batch
