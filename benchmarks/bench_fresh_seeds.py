"""An exploration of your own setting checked on fresh seeds: is its recommended order the best, or was it lucky?

    .venv/bin/ordercomp explore --model digits_resnet --methods prune,sparsify,quantize,lowrank --exhaustive \\
        --cache CACHE --out RUN ...
    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_fresh_seeds.py RUN/exploration.json --cache CACHE --seeds 8

bench_search.py --fresh-seeds does this for its named settings; this does it for any exploration record. It reads
the exploration's spec, takes every order of its methods on the exploration's seeds from the step cache (an
exploration run with --exhaustive holds them all; the missing ones are run first), and runs the orders that ground
truth cannot tell from its best (bench_search.contenders) and the recommended order on --seeds fresh seeds (from
bench_search.FRESH_FROM, above every seed a search or its race uses). It prints each of them with its fresh mean and
standard error next to its ground-truth mean, and the recommended order's fresh regret against the best fresh order.
Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import FRESH_FROM, contenders, ground_truth, on_fresh_seeds  # noqa: E402

from ordercomp.exploration.explorer import Explorer, ExploreSpec  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path, help="an exploration's exploration.json")
    parser.add_argument("--cache", type=Path, required=True, help="the step cache the exploration used")
    parser.add_argument("--seeds", type=int, default=8, help="fresh seeds (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 beside another busy process)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = json.loads(args.record.read_text())
    spec = replace(ExploreSpec.from_dict(record["spec"]), device="cpu", exhaustive=False)
    explorer = Explorer(spec, cache_dir=args.cache)
    base, _ = explorer.load_base()
    truth, _ = ground_truth(explorer, base)
    recommended = tuple(record["chain"])
    fresh, _ = on_fresh_seeds(explorer, list(dict.fromkeys(contenders(truth) + [recommended])), args.seeds, base)
    before = {tuple(o["chain"]): o["score"] for o in truth}
    print(f"ground truth ({spec.seeds} seeds): best {' -> '.join(truth[0]['chain'])} {truth[0]['score']:.2f} ± "
          f"{truth[0]['se']:.2f}; recommended {' -> '.join(recommended)} {before[recommended]:.2f}")
    print(f"on {args.seeds} fresh seeds ({FRESH_FROM}-{FRESH_FROM + args.seeds - 1}):")
    for o in fresh:
        mark = "  <- recommended" if tuple(o["chain"]) == recommended else ""
        print(f"  {o['score']:7.2f} ± {o['se']:.2f}  (ground truth {before[tuple(o['chain'])]:.2f})  {' -> '.join(o['chain'])}{mark}")
    means = {tuple(o["chain"]): o["score"] for o in fresh}
    if recommended in means:
        print(f"the recommended order's fresh regret {abs(fresh[0]['score'] - means[recommended]):.2f} "
              f"(the best fresh order's se {fresh[0]['se']:.2f})")
    else:
        print("the recommended order did not apply on every fresh seed")


if __name__ == "__main__":
    main()
