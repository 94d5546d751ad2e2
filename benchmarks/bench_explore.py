"""Benchmark of the embedded default: exploration wall time, application counts, and the chain's
BitOps and measured-latency ratios against the base model, all from one run.

    .venv/bin/python benchmarks/bench_explore.py              # the default search
    .venv/bin/python benchmarks/bench_explore.py --exhaustive # also every permutation

Latency is the median of repeated batch-1 and batch-32 forward passes on 1 thread. The chain as
explored uses fake-quantised (QAT) layers, which simulate low bits but run float kernels; the
deployable variant replaces `quantize` by `int8` (torchao pt2e, compiled with Inductor freezing)
so that real int8 kernels run, and is timed the same way. Freed memory is kept for reuse, as the CLI keeps it.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ordercomp.allocator import keep_freed_memory
from ordercomp.deploy.runtimes import inductor_compiled
from ordercomp.exploration.explorer import ExploreSpec, compress, explore
from ordercomp.metrics import latency_ms, measure


def ratio(base: float, other: float) -> str:
    return f"{base / other:8.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exhaustive", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()  # as `ordercomp explore` does
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        spec = ExploreSpec(seeds=args.seeds, exhaustive=args.exhaustive)
        result = explore(spec, cache_dir=cache).to_dict()
        wall = time.perf_counter() - start
    base, final = result["base_metrics"], result["chain_steps"][-1]["metrics"]
    counts = result["applications"]
    print(f"exploration wall time (2 threads, {args.seeds} seeds, {spec.search} search{' + exhaustive' if args.exhaustive else ''}): {wall:.1f} s")
    print(f"method applications per seed: pairwise {counts['pairwise_per_seed']}, exhaustive {counts['exhaustive_per_seed']} "
          f"(no prefix sharing {counts['naive_exhaustive_per_seed']}); ratio {counts['exhaustive_per_seed'] / counts['pairwise_per_seed']:.1f}x")
    if result["exhaustive"]:
        print(f"found chain ranks {result['exhaustive']['rank']} of {result['exhaustive']['of']} orders")
    print(f"chain: {' -> '.join(result['chain'])}")
    print(f"accuracy: base {base['accuracy']:.2f} %, chain {final['accuracy']:.2f} % ({final['accuracy'] - base['accuracy']:+.2f} points)")
    print(f"BitOps:   base {base['bitops']:.3g}, chain {final['bitops']:.3g}  -> {ratio(base['bitops'], final['bitops'])} fewer")
    print(f"size:     base {base['size_bytes'] / 1024:.1f} KiB, chain {final['size_bytes'] / 1024:.1f} KiB -> {ratio(base['size_bytes'], final['size_bytes'])} smaller")
    print(f"latency (fake-quant chain, eager) b=1: base {base['latency_ms_b1']:.3f} ms, chain {final['latency_ms_b1']:.3f} ms -> {ratio(base['latency_ms_b1'], final['latency_ms_b1'])}")
    deployable(result["chain"], base)


def deployable(chain: list[str], base: dict) -> None:
    """The chain with real int8 kernels: quantize replaced by int8 at the end (int8 weights cannot
    be trained further), compiled with Inductor freezing."""
    int8_chain = [name for name in chain if name != "quantize"] + ["int8"]
    outcome = compress(chain=int8_chain)
    data = outcome.data
    metrics = measure(outcome.model, data, "test", latency=False)
    model = inductor_compiled(outcome.model.eval())
    for batch in (1, 32):
        chain_ms = latency_ms(model, data, torch.device("cpu"), batch, 50, 1)
        base_ms = base["latency_ms_b1"] if batch == 1 else base["latency_ms_batch"]
        print(f"latency (int8 kernels, {' -> '.join(int8_chain)}) b={batch}: base {base_ms:.3f} ms, chain {chain_ms:.3f} ms -> {ratio(base_ms, chain_ms)}")
    print(f"int8 chain accuracy {metrics.accuracy:.2f} %, BitOps {ratio(base['bitops'], metrics.bitops)} fewer")


if __name__ == "__main__":
    main()
