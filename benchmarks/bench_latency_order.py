"""Does the order that minimises BitOps also minimise latency where the model ships?

Every order of the default methods is applied on one seed (the step cache shares prefixes), each
step written in the chosen runtime's format and timed there on 1 thread (`--runtime`, as
`ordercomp explore --objective latency --runtime ...` does). Printed: the best orders by measured
latency and by BitOps, each with the other's figure, and Kendall's tau between the two rankings.

    .venv/bin/python benchmarks/bench_latency_order.py                        # onnx_int8, digits_cnn
    .venv/bin/python benchmarks/bench_latency_order.py --runtime packed --seeds 2
"""
from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from ordercomp import order
from ordercomp.exploration.explorer import RUNTIMES, Explorer, ExploreSpec


def full_orders(steps, n: int) -> dict[tuple, dict]:
    """Mean validation BitOps, batch-1 latency and accuracy of every order applied on all seeds."""
    by_chain: dict[tuple, list] = {}
    for step in steps:
        if len(step.chain) == n:
            by_chain.setdefault(step.chain, []).append(step)
    return {chain: {key: statistics.fmean(s.metrics[key] for s in group) for key in ("bitops", "latency_ms_b1", "accuracy")}
            for chain, group in by_chain.items() if all(s.status == "ok" for s in group)}


def show(title: str, orders: dict[tuple, dict], key: str, base: dict) -> None:
    print(f"\nbest orders by {title}:")
    for chain, row in sorted(orders.items(), key=lambda item: item[1][key])[:3]:
        print(f"  {' -> '.join(chain):45s} latency {row['latency_ms_b1']:.3f} ms ({base['latency_ms_b1'] / row['latency_ms_b1']:.2f}x base), "
              f"BitOps {base['bitops'] / row['bitops']:.0f}x fewer, accuracy {row['accuracy']:.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="onnx_int8", choices=RUNTIMES)
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(2)
    spec = ExploreSpec(model=args.model, objective="latency", runtime=args.runtime, seeds=args.seeds, device="cpu")
    with tempfile.TemporaryDirectory() as cache:
        explorer = Explorer(spec, cache_dir=cache)
        base, _ = explorer.load_base()
        explorer.measure_base(base)
        explorer._deepest = len(spec.methods)
        steps = explorer.run_plan(base, order.exhaustive_plan(spec.methods))
    orders = full_orders(steps, len(spec.methods))
    print(f"{args.model}, {len(orders)} orders of {', '.join(spec.methods)}, {args.seeds} seed(s); latency at batch 1 in "
          f"{args.runtime} on 1 thread; base {explorer._base['latency_ms_b1']:.3f} ms")
    show(f"measured latency in {args.runtime}", orders, "latency_ms_b1", explorer._base)
    show("BitOps", orders, "bitops", explorer._base)
    tau = order.kendall_tau({c: -r["latency_ms_b1"] for c, r in orders.items()}, {c: -r["bitops"] for c, r in orders.items()})
    print(f"\nKendall's tau between the latency and the BitOps rankings: {tau:+.2f}")
    latencies = sorted(row["latency_ms_b1"] for row in orders.values())
    print(f"latency over all {len(orders)} orders: {latencies[0]:.3f} to {latencies[-1]:.3f} ms "
          f"(median {statistics.median(latencies):.3f} ms): the spread the order choice decides")


if __name__ == "__main__":
    main()
