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
worst rank of n!, applications per seed, and Kendall's tau between the pairwise-implied ranking
and the true ranking.
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics

from ordercomp.order import decide_pair, kendall_tau, pairwise_ranking, search_chains
from ordercomp.order.synthetic import Landscape, random_landscape

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


def run_landscape(landscape: Landscape, min_margin: float, search_seed: int) -> dict:
    """Regret, rank and applications of every strategy on one landscape, and the pairwise tau."""
    truth = {chain: landscape.true(chain) for chain in itertools.permutations(landscape.methods)}
    best = max(truth.values())
    outcomes = pair_outcomes(landscape, min_margin)
    evaluate = lambda chains: {chain: landscape.measure(chain, SEEDS) for chain in chains}
    best_chain = max(truth, key=truth.get)
    row = {"tau": kendall_tau(pairwise_ranking(landscape.methods, outcomes), truth),
           "best_se": landscape.noise(best_chain) / math.sqrt(SEEDS)}
    for strategy in STRATEGIES:
        result = search_chains(landscape.methods, strategy, evaluate, outcomes=outcomes, seed=search_seed)
        rank = 1 + sum(score > truth[result.chain] for score in truth.values())
        row[strategy] = (best - truth[result.chain], rank, result.applications_per_seed)
    return row


def summarise(rows: list[dict], n: int, kind: str) -> None:
    taus = [row["tau"] for row in rows]
    print(f"n={n} {kind:>8} ({len(rows)} landscapes, {math.factorial(n)} orders): "
          f"Kendall tau pairwise vs truth median {statistics.median(taus):+.2f}, worst {min(taus):+.2f}")
    for strategy in STRATEGIES:
        regrets, ranks, spent = zip(*(row[strategy] for row in rows))
        within = statistics.fmean(regret <= row["best_se"] for regret, row in zip(regrets, rows))
        print(f"  {strategy:>9}: regret median {statistics.median(regrets):5.2f} p90 {_quantile(regrets, 0.9):5.2f} "
              f"worst {max(regrets):5.2f} pts, within the best order's se {within:4.0%} | rank median "
              f"{statistics.median(ranks):4.1f} worst {max(ranks):3d} | applications/seed {max(spent)}")


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
    args = parser.parse_args()
    for n in map(int, args.sizes.split(",")):
        methods = [f"m{i}" for i in range(n)]
        for kind in args.kinds.split(","):
            rng = random.Random(f"{args.seed}-{n}-{kind}")
            rows = [run_landscape(draw(rng, methods, kind), args.min_margin, index) for index in range(args.landscapes)]
            summarise(rows, n, kind)


def draw(rng: random.Random, methods: list[str], kind: str) -> Landscape:
    trap, interaction, (low, high), spread = KINDS[kind]
    noise = low if low == high else rng.uniform(low, high)  # ordinary kinds draw nothing here: their landscapes stay as before
    return random_landscape(rng, methods, trap=trap, interaction=interaction, seed_noise=noise, noise_spread=spread)


if __name__ == "__main__":
    main()
