"""Order search checked against exhaustive ground truth, on the settings of `search_settings.py`.

For every setting, every order of its methods is run on the same seeds (prefixes shared, results
cached in .ordercomp/bench-search-cache, so a rerun only re-reads them); then each search strategy
is run on the same cache and judged against that ground truth. Printed per setting and strategy:
the chain, its rank among the orders, its regret (the best order's mean score minus the chain's,
in the objective's points), Kendall's tau between the ranking the pair decisions imply and the
exhaustive ranking, and the method applications per seed the strategy spent.

Last, a real A/A run: every pair order of the default setting on seeds 0-2 against the same order
on seeds 3-5; a calibrated decision rule declares (almost) no winner.

    .venv/bin/python benchmarks/bench_search.py                       # every setting
    .venv/bin/python benchmarks/bench_search.py --settings default    # some of them
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from search_settings import SETTINGS, setting_spec  # noqa: E402

from ordercomp import order  # noqa: E402
from ordercomp.exploration.explorer import SEARCHES, Explorer, ranked_orders  # noqa: E402
from ordercomp.order import OBJECTIVES  # noqa: E402

CACHE = Path(".ordercomp/bench-search-cache")


def ground_truth(explorer: Explorer, base) -> tuple[list[dict], list]:
    """Every full order with its mean score over the seeds, best first, and the full orders' step results."""
    explorer.measure_base(base)
    explorer._deepest = len(explorer.spec.methods)
    steps = explorer.run_plan(base, order.exhaustive_plan(explorer.spec.methods))
    full = [s for s in steps if len(s.chain) == len(explorer.spec.methods)]
    return ranked_orders(full, explorer._score_of, OBJECTIVES[explorer.spec.objective][0]), full


def describe_orders(explorer: Explorer, truth: list[dict], full: list) -> str:
    """The orders' BitOps reduction and accuracy ranges, and where ranking by accuracy alone would go."""
    def mean(chain, key):
        return statistics.fmean(s.metrics[key] for s in full if list(s.chain) == chain)
    reduction = [explorer._base["bitops"] / mean(o["chain"], "bitops") for o in truth]
    accuracy = [mean(o["chain"], "accuracy") for o in truth]
    by_accuracy = max(range(len(truth)), key=accuracy.__getitem__)
    return (f"BitOps {min(reduction):.0f}x-{max(reduction):.0f}x fewer, validation accuracy {min(accuracy):.2f}-{max(accuracy):.2f} %; "
            f"accuracy alone picks {' -> '.join(truth[by_accuracy]['chain'])} ({accuracy[by_accuracy]:.2f} % at "
            f"{reduction[by_accuracy]:.0f}x), rank {by_accuracy + 1} by {explorer.spec.objective}")


def judge(name: str, strategy: str, truth: list[dict]) -> dict:
    """Run `strategy` on the cached steps of setting `name` and compare its chain with the truth."""
    explorer = Explorer(setting_spec(name, search=strategy), cache_dir=CACHE)
    base, _ = explorer.load_base()
    found = explorer.find_order(base)
    scores = {tuple(o["chain"]): o["score"] for o in truth}
    chosen = scores.get(tuple(found.chain))
    rank = [tuple(o["chain"]) for o in truth].index(tuple(found.chain)) + 1 if chosen is not None else None
    implied = order.pairwise_ranking(list(explorer.spec.methods), found.outcomes)
    tau = order.kendall_tau({c: implied[c] for c in scores}, scores) if len(scores) > 1 else None
    return {"setting": name, "strategy": strategy, "chain": " -> ".join(found.chain), "rank": rank, "of": len(truth),
            "regret": None if chosen is None else abs(truth[0]["score"] - chosen), "best_se": truth[0]["se"],
            "tau": tau, "applications": found.search["applications_per_seed"]}


def aa_run(seeds: int = 3) -> tuple[int, int]:
    """(winners declared, comparisons): each pair order on seeds 0..k-1 against itself on seeds k..2k-1."""
    spec = setting_spec("default", seeds=2 * seeds)
    explorer = Explorer(spec, cache_dir=CACHE)
    base, _ = explorer.load_base()
    explorer.measure_base(base)
    steps = explorer.run_plan(base, order.pairwise_plan(spec.methods))
    winners, total = 0, 0
    for chain in {s.chain for s in steps if len(s.chain) == 2}:
        runs = sorted((s for s in steps if s.chain == chain), key=lambda s: s.seed)
        first, second = runs[:seeds], runs[seeds:]
        outcome = order.decide_pair("A", "A2", explorer._scores(first), explorer._scores(second),
                                    min_margin=spec.min_margin, confidence=spec.confidence,
                                    images_first_then_second=explorer._hits(first), images_second_then_first=explorer._hits(second))
        winners += outcome.winner is not None
        total += 1
    return winners, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--no-aa", action="store_true", help="skip the real A/A run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for name in args.settings.split(","):
        start = time.perf_counter()
        explorer = Explorer(setting_spec(name), cache_dir=CACHE)
        base, _ = explorer.load_base()
        truth, full = ground_truth(explorer, base)
        if not truth:
            print(f"\n{name}: no order applied on every seed; see the failed steps in the cache")
            continue
        print(f"\n{name}: {len(truth)} orders, best {' -> '.join(truth[0]['chain'])} {truth[0]['score']:.2f} ± {truth[0]['se']:.2f}, "
              f"worst {truth[-1]['score']:.2f}; mean seed-to-seed sd of one order "
              f"{statistics.fmean(o['se'] * o['seeds'] ** 0.5 for o in truth):.2f} ({time.perf_counter() - start:.0f} s)")
        print(f"  {describe_orders(explorer, truth, full)}")
        for strategy in SEARCHES:
            row = judge(name, strategy, truth)
            rows.append(row)
            print(f"  {strategy:10s} rank {row['rank']}/{row['of']}  regret {row['regret']:.2f}  tau {row['tau'] or 0:+.2f}  "
                  f"applications/seed {row['applications']:3d}  {row['chain']}")
    summarize(rows)
    if not args.no_aa:
        winners, total = aa_run()
        print(f"\nreal A/A run (default setting, seeds 0-2 vs 3-5): {winners} winner(s) declared in {total} comparisons")


def summarize(rows: list[dict]) -> None:
    print("\n| strategy | median regret | worst regret | median rank | applications per seed |")
    print("|---|---|---|---|---|")
    for strategy in SEARCHES:
        mine = [r for r in rows if r["strategy"] == strategy and r["regret"] is not None]
        if mine:
            print(f"| {strategy} | {statistics.median(r['regret'] for r in mine):.2f} | {max(r['regret'] for r in mine):.2f} | "
                  f"{statistics.median(r['rank'] for r in mine):.0f} | {', '.join(str(r['applications']) for r in mine)} |")


if __name__ == "__main__":
    main()
