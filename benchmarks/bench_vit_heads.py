"""The ViT student's attention heads: the sample's default chain with distillation keeping all heads, or fewer.

    python benchmarks/bench_vit_heads.py                       # heads 1.0 and 0.5, seeds 0-2, the default chain
    python benchmarks/bench_vit_heads.py --heads 1,0.75,0.5 --seeds 5 --threads 1

It prints the CPU first (fine-tuned accuracy moves with the CPU's kernels about as much as with the seed), then, per
seed and heads fraction, the chain's test accuracy and BitOps reduction (the sample card's budget and settings, the
student's `heads` alone changed), and over the seeds the mean accuracy, the loss against the base and, paired per seed,
the difference to keeping every head with its standard error. Figures are printed, never asserted.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from ordercomp.deploy.runtimes import cpu_description, cpu_text
from ordercomp.exploration.explorer import compress, default_settings

MODEL = "digits32_vit"
CHAIN = ("distill", "quantize", "token_merge", "early_exit")


def run(chain: list[str], heads: float, seed: int, cache: str) -> tuple[float, float, float]:
    """(chain's test accuracy, base's, BitOps reduction) with the student keeping `heads` of its heads."""
    settings = default_settings(MODEL, chain, None)
    settings["distill"] = {**settings.get("distill", {}), "heads": heads}
    outcome = compress(MODEL, chain=chain, settings=settings, seed=seed, device="cpu", cache_dir=cache)
    last, base = outcome.steps[-1].metrics, outcome.base_metrics
    return last["accuracy"], base["accuracy"], base["bitops"] / last["bitops"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default="1,0.5", help="comma-separated fractions of heads the student keeps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--chain", default=",".join(CHAIN), help="comma-separated methods, distill among them")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    chain, fractions = args.chain.split(","), [float(h) for h in args.heads.split(",")]
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_text(cpu_description())}; {args.threads} thread(s)")
    print(f"{MODEL}, chain {' → '.join(chain)}, the card's budget and settings; test accuracy %")
    accuracy = {h: [] for h in fractions}
    reduction = {h: [] for h in fractions}
    with tempfile.TemporaryDirectory() as cache:
        for seed in range(args.seeds):
            for heads in fractions:
                chain_accuracy, base_accuracy, fewer = run(chain, heads, seed, cache)
                accuracy[heads].append(chain_accuracy)
                reduction[heads].append(fewer)
                print(f"  seed {seed}, heads {heads:g}: {chain_accuracy:.2f} % (base {base_accuracy:.2f}), "
                      f"{fewer:.1f}x fewer BitOps", flush=True)
    for heads in fractions:
        line = (f"heads {heads:g}: mean {statistics.mean(accuracy[heads]):.2f} % ({statistics.mean(accuracy[heads]) - base_accuracy:+.2f} "
                f"points against the base), {statistics.mean(reduction[heads]):.1f}x fewer BitOps")
        differences = [a - b for a, b in zip(accuracy[heads], accuracy[fractions[0]])]
        if heads != fractions[0] and len(differences) > 1:
            se = statistics.stdev(differences) / len(differences) ** 0.5
            line += f"; against heads {fractions[0]:g}, paired: {statistics.mean(differences):+.2f} points (standard error {se:.2f})"
        print(line)


if __name__ == "__main__":
    main()
