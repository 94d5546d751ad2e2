"""Some orders of one bench_search.py setting on more seeds: is a regret the orders' or the ground truth's noise?

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_order_seeds.py vit-merge-prune \\
        prune,token_merge,lowrank,quantize prune,lowrank,token_merge,quantize --seeds 10 --fresh-from 6 --cache CACHE

bench_search.py's ground truth has 3 seeds a setting (2 for the largest), so a regret is measured against means that
move by their standard error. This runs the given orders of a setting (their prefixes shared, through the same step
cache, so seeds already run are read back) on seeds 0..N-1 and prints per order its score on each seed, the mean of
the ground truth's seeds, the mean and standard error over all, and the mean over the seeds from --fresh-from on
(seeds neither the ground truth nor a search's race used, when chosen above both). Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import CACHE, run_orders  # noqa: E402
from search_settings import SETTINGS, setting_spec  # noqa: E402

from ordercomp import order  # noqa: E402
from ordercomp.exploration.explorer import Explorer  # noqa: E402
from ordercomp.exploration.pipeline import OK  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("setting", choices=list(SETTINGS))
    parser.add_argument("orders", nargs="+", help="comma-separated methods, each an order of the setting's methods")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--fresh-from", type=int, default=6, help="the first seed no search used (for the last column)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"bench_search.py's step cache (default {CACHE})")
    args = parser.parse_args()
    torch.set_num_threads(2)
    explorer = Explorer(setting_spec(args.setting), cache_dir=args.cache)
    chains = [tuple(text.split(",")) for text in args.orders]
    if any(sorted(chain) != sorted(explorer.spec.methods) for chain in chains):
        parser.error(f"each order must hold every method of {args.setting} once: {', '.join(explorer.spec.methods)}")
    plan = list(dict.fromkeys(prefix for chain in chains for prefix in order.search.prefixes(chain)))
    steps = run_orders(explorer, plan, seeds=list(range(args.seeds)))
    truth_seeds = explorer.spec.seeds
    print(f"{args.setting}: {args.seeds} seeds; the ground truth's are 0-{truth_seeds - 1}; fresh from {args.fresh_from}")
    for chain in chains:
        scores = {s.seed: explorer._score_of(s) for s in steps if s.chain == chain and s.status == OK}
        values = [scores[seed] for seed in sorted(scores)]
        fresh = [scores[seed] for seed in sorted(scores) if seed >= args.fresh_from]
        line = (f"  {' -> '.join(chain)}: ground truth's seeds {statistics.fmean(values[:truth_seeds]):.2f}; all {len(values)} "
                f"{statistics.fmean(values):.2f} ± {statistics.stdev(values) / len(values) ** 0.5:.2f}")
        print(line + (f"; seeds {args.fresh_from}+ {statistics.fmean(fresh):.2f}" if fresh else "")
              + f"  [{' '.join(f'{value:.1f}' for value in values)}]")


if __name__ == "__main__":
    main()
