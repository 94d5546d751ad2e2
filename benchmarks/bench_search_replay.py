"""Replay the whole-order search on bench_search.py's cached ground truth: a search model checked in seconds.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_search_replay.py --cache /tmp/bench-search-cache
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_search_replay.py --settings cnn-noisy-lowbit --trace

bench_search.py runs every order of each setting on the same seeds and keeps the steps in its cache (38 min for nine
settings on 2 cores). A strategy's first phase (search.py's `search_chains`: the orders it evaluates on the
exploration's seeds) reads only those seeds' scores, so this replays it exactly from the cache, without training:
per setting and strategy, the regret of the best order it evaluated (what it recommends before the race), whether the
best order was among those evaluated, and how many it evaluated. `surrogate, one seed` is the default as `explore` runs
it (recommend.py): the search on the first seed only, with its share of the total, then the best screened orders on
the other seeds while half of what is left affords them; its regret is that of the confirmed order with the best mean
over those other seeds (the first chose them, and recommend.py leaves it out unless every order was confirmed). The race's extra
seeds are not in the ground truth, so its effect is not replayed (bench_search.py measures it). Run bench_search.py first with the same --cache: a setting
whose ground truth is not cached is trained first, as bench_search.py would. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import CACHE, exhaustive_steps  # noqa: E402
from search_settings import SETTINGS, setting_spec  # noqa: E402

from ordercomp.exploration.explorer import Explorer  # noqa: E402
from ordercomp.order import OBJECTIVES, pairwise_plan, prefix_cost, search_chains  # noqa: E402
from ordercomp.order.recommend import full_budget_allowance, search_budget_per_seed  # noqa: E402

STRATEGIES = ("pairwise", "surrogate", "random")


def replay(name: str, cache: Path, trace: bool) -> None:
    explorer = Explorer(setting_spec(name), cache_dir=cache)
    methods = tuple(explorer.spec.methods)
    steps = exhaustive_steps(explorer)
    higher = OBJECTIVES[explorer.spec.objective][0]
    sign = 1.0 if higher else -1.0
    scores = {chain: [t.score for t in trials.values()] for chain, trials in _trials(explorer, steps).items()}
    means = {chain: sign * statistics.fmean(values) for chain, values in scores.items() if len(chain) == len(methods)}
    best = max(means, key=means.get)
    print(f"\n{name}: best {' -> '.join(best)} {sign * means[best]:.2f} (of {len(means)} orders)")
    outcomes = explorer.decide(steps)
    for strategy in STRATEGIES:
        def evaluate(chains):
            if trace:
                print("    " + "\n    ".join(f"{' -> '.join(c)}: {sign * means[c]:.2f}" for c in chains if c in means))
            return {chain: scores.get(chain, []) for chain in chains}
        found = search_chains(methods, strategy, evaluate, outcomes=outcomes, higher_is_better=higher)
        _print(strategy if strategy == "pairwise" else f"{strategy}, every seed", [s.chain for s in found.evaluated],
               found.chain, means, best)
    seeds = explorer.spec.seeds
    budget = search_budget_per_seed(len(methods), seeds, "surrogate")
    found = search_chains(methods, "surrogate", lambda chains: {c: scores.get(c, [])[:1] for c in chains},
                          outcomes=outcomes, higher_is_better=higher, budget=budget)
    allowance = full_budget_allowance(len(methods), seeds, "surrogate", search_per_seed=found.applications_per_seed) // 2
    confirmed: list[tuple] = []
    for chain in (s.chain for s in found.evaluated):  # best first on the first seed
        if prefix_cost(confirmed + [chain], set(pairwise_plan(list(methods)))) * (seeds - 1) > allowance:
            break
        confirmed.append(chain)
    kept = 0 if len(confirmed) == len(found.evaluated) else 1  # recommend.py leaves out the seed that chose them
    judged = {c: sign * statistics.fmean(scores[c][kept:]) for c in confirmed}
    _print("surrogate, one seed", confirmed, found.chain, means, best, searched=len(found.evaluated), judged=judged)


def _print(label: str, evaluated: list, fallback: tuple, means: dict, best: tuple, searched: int | None = None,
           judged: dict | None = None) -> None:
    chosen = max(evaluated, key=(judged or means).get, default=fallback)
    screened = "" if searched is None else f" (of {searched} searched on the first seed)"
    print(f"  {label:<21} regret {means[best] - means[chosen]:6.2f}  best order evaluated: "
          f"{'yes' if best in evaluated else 'no ':<3}  orders evaluated {len(evaluated):>3}{screened}  {' -> '.join(chosen)}")


def _trials(explorer: Explorer, steps) -> dict:
    by_chain: dict[tuple, list] = {}
    for step in steps:
        by_chain.setdefault(tuple(step.chain), []).append(step)
    return {chain: trials for chain, group in by_chain.items() if (trials := explorer._trials(group))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"bench_search.py's step cache (default {CACHE})")
    parser.add_argument("--trace", action="store_true", help="print every order each strategy evaluates, in turn")
    args = parser.parse_args()
    for name in args.settings.split(","):
        replay(name, args.cache, args.trace)


if __name__ == "__main__":
    main()
