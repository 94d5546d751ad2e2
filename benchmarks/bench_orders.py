"""Apply given orders by hand over several seeds and print accuracy change and BitOps reduction per step.

    .venv/bin/python benchmarks/bench_orders.py distill,prune,quantize,early_exit quantize,prune,distill,early_exit

Uses the embedded default (digits, digits_cnn) and the default method settings and budget, so its
figures can be set beside what `ordercomp explore` recommends.
"""
from __future__ import annotations

import argparse

import torch

from ordercomp.exploration.explorer import compress


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("orders", nargs="+", help="comma-separated chains")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for text in args.orders:
        chain = text.split(",")
        losses = []
        for seed in range(args.seeds):
            outcome = compress(chain=chain, seed=seed, device="cpu")
            base = outcome.base_metrics
            steps = [(s.chain[-1], s.metrics["accuracy"] - base["accuracy"], base["bitops"] / s.metrics["bitops"]) for s in outcome.steps]
            print(f"{' -> '.join(chain)} seed {seed}: " + ", ".join(f"{m} {d:+.2f} pts {r:.0f}x" for m, d, r in steps), flush=True)
            losses.append(steps[-1][1])
        print(f"  final accuracy change over {args.seeds} seeds: {min(losses):+.2f} .. {max(losses):+.2f} points")


if __name__ == "__main__":
    main()
