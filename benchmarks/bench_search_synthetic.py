"""Chain-search strategies on synthetic landscapes with exhaustive ground truth.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_search_synthetic.py --landscapes 200

For n = 4 and n = 5 methods, draws landscapes (ordercomp.order.synthetic.random_landscape) of five
kinds: ordinary; "trap", where one method hurts an already compressed model while every pair says
it should go last; "rugged", ordinary with 1.5 points of unexplained interaction per chain instead
of 0.3; "noisy" and "noisy-trap", where the seed-to-seed sd of an order is 1.5-3.5 points (drawn per
landscape) times a factor that varies from order to order (noise_spread 0.35), as on the strong
digits settings, instead of 0.4. Pair outcomes come from 3 noisy seeds of each ordered pair; each strategy then spends at most
its budget (2x the pairwise plan per seed for all but exhaustive). Prints per strategy and kind:
median and worst regret (best order's true score minus the chosen chain's, in points), median and
worst rank of n!, applications over all seeds (the race included), Kendall's tau between the
pairwise-implied ranking and the true ranking, the mean probability the search claims for its
order being the best of those it evaluated next to the share of landscapes where it truly is, and how often
its verdict is sure that no evaluated order is more than --min-margin better (separated, or a sound choice)
and how often one truly is. With --settle N, the default also runs allowed N applications to settle an
open choice (ordercomp.order.recommend, step 5):

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_search_synthetic.py --landscapes 100 --sizes 4 \
        --kinds noisy,noisy-trap,ordinary --min-margin 0.5 --settle 300

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_search_synthetic.py --aa 200

The A/A check of the race: every order equally good, measured per seed and per image
(ordercomp.order.synthetic.EqualOrders, 359 images, about 0.4 and about 2 points of seed sd);
prints the share of runs in which the race drops an order (a false elimination) and in which it
declares the recommended order separated from every other (a false winner); with --settle and --min-margin,
after settling.
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics

from dataclasses import dataclass

from ordercomp.order import decide_pair, kendall_tau, pairwise_ranking
from ordercomp.order.race import Trial
from ordercomp.order.recommend import recommend_order
from ordercomp.order.synthetic import EqualOrders, Landscape, equal_orders, random_landscape

STRATEGIES = ("pairwise", "surrogate", "random")
SEEDS = 3
KINDS = {  # name: (trap, interaction, seed noise range, noise spread)
    "ordinary": (False, 0.3, (0.4, 0.4), 0.0),
    "trap": (True, 0.3, (0.4, 0.4), 0.0),
    "rugged": (False, 1.5, (0.4, 0.4), 0.0),
    "noisy": (False, 0.3, (1.5, 3.5), 0.35),
    "noisy-trap": (True, 0.3, (1.5, 3.5), 0.35),
}


def pair_outcomes(landscape: Landscape, min_margin: float):
    """One outcome per pair, from SEEDS noisy measurements of both orders."""
    return [decide_pair(a, b, landscape.measure((a, b), SEEDS), landscape.measure((b, a), SEEDS), min_margin=min_margin)
            for a, b in itertools.combinations(landscape.methods, 2)]


def run_landscape(landscape: Landscape, min_margin: float, search_seed: int, settle: int = 0) -> dict:
    """Regret, rank, applications over all seeds and the claimed probability of every strategy (and, with `settle`,
    of the default allowed that many applications to settle an open choice) on one landscape, and the pairwise tau."""
    truth = {chain: landscape.true(chain) for chain in itertools.permutations(landscape.methods)}
    best = max(truth.values())
    outcomes = pair_outcomes(landscape, min_margin)
    best_chain = max(truth, key=truth.get)
    row = {"tau": kendall_tau(pairwise_ranking(landscape.methods, outcomes), truth),
           "best_se": landscape.noise(best_chain) / math.sqrt(SEEDS)}
    for label, strategy, allowed in variants(settle):
        found = recommend_order(landscape.methods, strategy, landscape_measure(landscape), outcomes=outcomes, seeds=SEEDS,
                                seed=search_seed, margin=min_margin, settle=allowed)
        rank = 1 + sum(score > truth[found.chain] for score in truth.values())
        evaluated = max(found.evidence, key=truth.get) if found.evidence else None
        claimed = found.probabilities.get(found.chain) if found.probabilities else None
        row[label] = Run(best - truth[found.chain], rank, found.applications["total"], claimed,
                         found.chain == evaluated, found.race is not None and found.race.separated,
                         *_sure_of_margin(found, truth, min_margin))
    return row


def variants(settle: int) -> list[tuple[str, str, int]]:
    """(label, strategy, settle budget): every strategy, and the default with `settle` when it is not 0."""
    return [(name, name, 0) for name in STRATEGIES] + ([(f"settle {settle}", "surrogate", settle)] if settle else [])


@dataclass(frozen=True)
class Run:
    regret: float
    rank: int
    applications: int  # all seeds, the race included
    claimed: float | None  # probability that the recommended order is the best of those evaluated
    best_of_evaluated: bool  # whether it truly is
    separated: bool  # the race found every other evaluated order significantly worse
    sure: bool  # the verdict says no evaluated order is more than the margin better (separated, or a sound choice)
    wrongly_sure: bool  # ... while one truly is


def _sure_of_margin(found, truth: dict, margin: float) -> tuple[bool, bool]:
    """(whether the verdict is sure no evaluated order beats the recommended one by more than `margin`, whether one
    truly does): the claim the 'sound choice' sentence makes."""
    if not found.evidence:
        return False, False
    behind = found.behind_at_most()
    sure = behind is None or (behind["points"] is not None and behind["points"] <= margin)
    return sure, sure and max(truth[chain] for chain in found.evidence) - truth[found.chain] > margin


def landscape_measure(landscape: Landscape):
    """recommend's measure: each chain's trial on each seed (the landscape has one fidelity)."""
    return lambda chains, seeds, fidelity: {chain: {s: Trial(landscape.score(chain, s)) for s in seeds} for chain in chains}


def summarise(rows: list[dict], n: int, kind: str, settle: int) -> None:
    taus = [row["tau"] for row in rows]
    print(f"n={n} {kind:>8} ({len(rows)} landscapes, {math.factorial(n)} orders): "
          f"Kendall tau pairwise vs truth median {statistics.median(taus):+.2f}, worst {min(taus):+.2f}")
    for strategy, _, _ in variants(settle):
        runs = [row[strategy] for row in rows]
        regrets = [run.regret for run in runs]
        within = statistics.fmean(run.regret <= row["best_se"] for run, row in zip(runs, rows))
        print(f"  {strategy:>9}: regret median {statistics.median(regrets):5.2f} p90 {_quantile(regrets, 0.9):5.2f} "
              f"worst {max(regrets):5.2f} pts, within the best order's se {within:4.0%} | rank median "
              f"{statistics.median(run.rank for run in runs):4.1f} worst {max(run.rank for run in runs):3d} | "
              f"applications (all {SEEDS} seeds) median {statistics.median(run.applications for run in runs):.0f} "
              f"max {max(run.applications for run in runs)}{_calibration(runs)}")


def _calibration(runs: list[Run]) -> str:
    claimed = [run for run in runs if run.claimed is not None]
    if not claimed:
        return ""
    sure = [run for run in runs if run.sure]
    wrong = f" ({statistics.fmean(run.wrongly_sure for run in sure):.1%} of those wrongly)" if sure else ""
    return (f" | claimed P(best of evaluated) {statistics.fmean(run.claimed for run in claimed):.2f}, truly best "
            f"{statistics.fmean(run.best_of_evaluated for run in claimed):.2f}; separated {statistics.fmean(run.separated for run in runs):.0%}"
            f"; sure that none is more than the margin better {len(sure) / len(runs):.0%}{wrong}")


def aa_check(runs: int, n: int = 4, min_margin: float = 0.0, settle: int = 0) -> None:
    """False eliminations and false winners of the race (and of the settling after it) when every order is equally good."""
    methods = [f"m{i}" for i in range(n)]
    for noise in (0.5, 2.0):
        rng = random.Random(f"aa-{noise}")
        dropped = winners = orders = 0
        for index in range(runs):
            world = equal_orders(rng, methods, noise=noise)
            found = recommend_order(methods, "surrogate", world_measure(world), outcomes=world_outcomes(world), seeds=SEEDS,
                                    seed=index, margin=min_margin, settle=settle)
            dropped += bool(found.race.dropped)
            winners += found.race.separated
            orders += len(found.evidence)
        print(f"A/A, {n} methods, training noise {noise} ({runs} runs, {orders / runs:.1f} orders evaluated per run): "
              f"an order dropped in {dropped / runs:.1%} of runs, a separated winner declared in {winners / runs:.1%}")


def world_measure(world: EqualOrders):
    def measure(chains, seeds, fidelity):
        return {chain: {s: Trial(*_scored(world.trial(chain, s))) for s in seeds} for chain in chains}
    return measure


def _scored(trial: tuple[float, list[int]]) -> tuple[float, tuple[int, ...]]:
    return trial[0], tuple(trial[1])


def world_outcomes(world: EqualOrders):
    """Pair outcomes with the per-image evidence, as the explorer decides them."""
    def side(chain):
        trials = [world.trial(chain, s) for s in range(SEEDS)]
        return [t[0] for t in trials], [t[1] for t in trials]
    outcomes = []
    for a, b in itertools.combinations(world.methods, 2):
        (ab, ab_hits), (ba, ba_hits) = side((a, b)), side((b, a))
        outcomes.append(decide_pair(a, b, ab, ba, images_first_then_second=ab_hits, images_second_then_first=ba_hits))
    return outcomes


def _quantile(values, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landscapes", type=int, default=200, help="landscapes per n and kind")
    parser.add_argument("--min-margin", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", default="4,5", help="numbers of methods, comma-separated")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"landscape kinds, from {','.join(KINDS)}")
    parser.add_argument("--aa", type=int, metavar="RUNS", help="only the A/A check of the race, with this many runs")
    parser.add_argument("--settle", type=int, default=0, help="also run the default allowed this many applications to "
                        "settle an open choice (the margin: --min-margin)")
    args = parser.parse_args()
    if args.aa:
        aa_check(args.aa, min_margin=args.min_margin, settle=args.settle)
        return
    for n in map(int, args.sizes.split(",")):
        methods = [f"m{i}" for i in range(n)]
        for kind in args.kinds.split(","):
            rng = random.Random(f"{args.seed}-{n}-{kind}")
            rows = [run_landscape(draw(rng, methods, kind), args.min_margin, index, args.settle)
                    for index in range(args.landscapes)]
            summarise(rows, n, kind, args.settle)


def draw(rng: random.Random, methods: list[str], kind: str) -> Landscape:
    trap, interaction, (low, high), spread = KINDS[kind]
    noise = low if low == high else rng.uniform(low, high)  # ordinary kinds draw nothing here: their landscapes stay as before
    return random_landscape(rng, methods, trap=trap, interaction=interaction, seed_noise=noise, noise_spread=spread)


if __name__ == "__main__":
    main()
