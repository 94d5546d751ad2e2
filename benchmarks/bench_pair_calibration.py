"""Calibration of pair-decision rules on synthetic pairs: false winners (A/A) and power.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_pair_calibration.py --simulations 400

Each simulated comparison draws both orders of a pair on the same 359 validation images
(ordercomp.order.synthetic.simulate_pair: ~97 % accuracy, ~0.4 points seed-to-seed, hard images
shared by both orders and all seeds). Rules compared, all at 95 % and min_margin 0:
  interval   decide_pair with per-image evidence (seed variance / k + image variance / N, Welch t)
  seeds      decide_pair without per-image evidence (t with k - 1 df; no decision with one seed)
  bootstrap  two-way percentile bootstrap over seeds and images (200 resamples, fixed RNG seed)
  old        the rule before intervals: |mean| > max(0.5, 2 standard errors over seeds)
Prints the share of comparisons that declare a winner for a true difference of 0 (A/A, should be
<= 5 %), 1 and 2 points, with 1, 3 and 5 seeds.
"""
from __future__ import annotations

import argparse
import math
import random
import statistics

from ordercomp.order import decide_pair, simulate_pair
from ordercomp.order.synthetic import PairEvidence


def interval_rule(evidence: PairEvidence) -> bool:
    return decide_pair("a", "b", evidence.scores_first_then_second, evidence.scores_second_then_first,
                       images_first_then_second=evidence.images_first_then_second,
                       images_second_then_first=evidence.images_second_then_first).winner is not None


def seeds_rule(evidence: PairEvidence) -> bool:
    if len(evidence.scores_first_then_second) < 2:
        return False
    return decide_pair("a", "b", evidence.scores_first_then_second, evidence.scores_second_then_first).winner is not None


def old_rule(evidence: PairEvidence) -> bool:
    diffs = _diffs(evidence)
    error = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return abs(statistics.fmean(diffs)) > max(0.5, 2 * error)


def bootstrap_rule(evidence: PairEvidence, rng: random.Random, resamples: int = 200) -> bool:
    """Percentile interval of the mean per-image difference, resampling seeds and images together."""
    rows = [[100 * (a - b) for a, b in zip(first, second)]
            for first, second in zip(evidence.images_first_then_second, evidence.images_second_then_first)]
    seeds, images = len(rows), len(rows[0])
    means = []
    for _ in range(resamples):
        picked = [rows[s] for s in rng.choices(range(seeds), k=seeds)]
        per_image = [sum(column) for column in zip(*picked)]
        means.append(sum(per_image[i] for i in rng.choices(range(images), k=images)) / (seeds * images))
    means.sort()
    low, high = means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]
    return low > 0 or high < 0


def _diffs(evidence: PairEvidence) -> list[float]:
    return [a - b for a, b in zip(evidence.scores_first_then_second, evidence.scores_second_then_first)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=400)
    args = parser.parse_args()
    print(f"share of {args.simulations} comparisons declaring a winner")
    print(f"{'seeds':>5} {'diff':>5} {'interval':>9} {'seeds':>6} {'bootstrap':>10} {'old':>6}")
    for seeds in (1, 3, 5):
        for difference in (0.0, 1.0, 2.0):
            rng, resampler = random.Random(f"{seeds}-{difference}"), random.Random(0)
            counts = [0, 0, 0, 0]
            for _ in range(args.simulations):
                evidence = simulate_pair(rng, seeds=seeds, difference=difference)
                decided = (interval_rule(evidence), seeds_rule(evidence), bootstrap_rule(evidence, resampler),
                           old_rule(evidence))
                counts = [count + flag for count, flag in zip(counts, decided)]
            shares = [f"{count / args.simulations:.3f}" for count in counts]
            print(f"{seeds:>5} {difference:>5.1f} {shares[0]:>9} {shares[1]:>6} {shares[2]:>10} {shares[3]:>6}")


if __name__ == "__main__":
    main()
