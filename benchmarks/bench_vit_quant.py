"""The ViT's 4-bit attention probabilities: a log-sqrt(2) grid (what quantize uses) against a uniform grid.

    python benchmarks/bench_vit_quant.py                 # quantize 4/4 alone on digits32_vit, seeds 0-5, one thread
    python benchmarks/bench_vit_quant.py --seeds 3 --chain distill,quantize,token_merge,early_exit

It prints the CPU first (fine-tuned accuracy moves with the CPU's kernels about as much as with the seed), then, per
seed, the test accuracy of the chain with each grid (the sample card's budget: 3 epochs at 2e-4), and over the seeds
the means and the paired difference with its standard error. The uniform grid is the one quantize used before the
log grid (step 1/15 on [0, 1] at 4 bits); the benchmark swaps it in for its own runs, each grid with its own step
cache. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

import ordercomp.layers as layers
from ordercomp.deploy.runtimes import cpu_description, cpu_text
from ordercomp.exploration.explorer import compress

MODEL = "digits32_vit"
LOG_GRID = layers.fake_quant_probabilities


def uniform_grid(p: torch.Tensor, bits: int) -> torch.Tensor:
    """Probabilities on [0, 1] rounded to 2^bits evenly spaced levels (straight through)."""
    return layers.fake_quant_activation(p, p.new_zeros(()), p.new_ones(()), bits)


GRIDS = {"log-sqrt2": LOG_GRID, "uniform": uniform_grid}


def accuracy(chain: list[str], seed: int, grid: str, cache: Path) -> tuple[float, float, float]:
    """(test accuracy of the chain, of the base, BitOps reduction) with the given probability grid."""
    layers.fake_quant_probabilities = GRIDS[grid]
    try:
        outcome = compress(MODEL, chain=chain, seed=seed, device="cpu", cache_dir=cache / grid)
    finally:
        layers.fake_quant_probabilities = LOG_GRID
    last, base = outcome.steps[-1].metrics, outcome.base_metrics
    return last["accuracy"], base["accuracy"], base["bitops"] / last["bitops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--chain", default="quantize", help="comma-separated methods (quantize among them)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    chain = args.chain.split(",")
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_text(cpu_description())}; {args.threads} thread(s)")
    print(f"{MODEL}, chain {' -> '.join(chain)}, the card's budget; test accuracy %")
    results = {grid: [] for grid in GRIDS}
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for grid in GRIDS:
                chain_accuracy, base_accuracy, reduction = accuracy(chain, seed, grid, Path(folder))
                results[grid].append(chain_accuracy)
            print(f"  seed {seed}: " + ", ".join(f"{grid} {values[-1]:.2f}" for grid, values in results.items())
                  + f" (base {base_accuracy:.2f}, {reduction:.1f}x fewer BitOps)", flush=True)
    summary(results)


def summary(results: dict[str, list[float]]) -> None:
    for grid, values in results.items():
        print(f"{grid}: mean {statistics.mean(values):.2f} %")
    differences = [a - b for a, b in zip(results["log-sqrt2"], results["uniform"])]
    if len(differences) > 1:
        se = statistics.stdev(differences) / len(differences) ** 0.5
        print(f"log-sqrt2 - uniform, paired over {len(differences)} seeds: {statistics.mean(differences):+.2f} points "
              f"(standard error {se:.2f})")


if __name__ == "__main__":
    main()
