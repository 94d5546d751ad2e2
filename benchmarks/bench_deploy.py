"""Deployment benchmark: is what ships as small and as fast as the dashboard says?

    python benchmarks/bench_deploy.py                          # both parts, 3 seeds, 2 threads
    python benchmarks/bench_deploy.py --seeds 1 --epochs 1     # a quick try of the whole path
    python benchmarks/bench_deploy.py --chain distill,prune    # the other order of the 32-px chain

It first prints the CPU (model, logical cores, AVX2 / AVX-512 / VNNI / AMX flags): onnxruntime picks
its kernels by them, and fine-tuned accuracy moves with the CPU's kernels about as much as with the seed.
1. The 32-px sample (digits32_resnet18, digits upscaled to 32 px): the chain (default prune, then
   distill into a student of half the width and half the depth, 8 fine-tuning epochs per step) is
   applied once per seed and exported as float ONNX and as int8 ONNX; each file and the base (float
   ONNX) run in onnxruntime with the same threads at batch 1 and 32, after warm-up, in alternating
   rounds. Per file: the mean and the range over the seeds of the speed-up at each batch size and of
   the accuracy change. Target: a file >= 5x faster than the base at both batch sizes and within 1
   point, as means over the seeds.
2. The default sample (digits_cnn, chain distill,prune,quantize,early_exit): every artifact is
   written; the smallest file against the storage the metrics report. Target: <= 1.25x.
Figures and ratios are printed, never asserted: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from ordercomp.cli import parse_settings
from ordercomp.deploy.export import DEFAULT_FORMATS, export_compressed
from ordercomp.deploy.runtimes import cpu_description, cpu_text
from ordercomp.exploration.explorer import compress
from ordercomp.train import Budget

SPEED_FORMATS = ("onnx", "onnx_int8")
TARGET_SPEEDUP, TARGET_POINTS = 5.0, 1.0


def exported(outcome, chain, out: Path, formats, threads: int, measure: bool) -> dict:
    return export_compressed(outcome.model, out, formats=formats, chain=chain, configs=outcome.configs,
                             metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                             base_model=outcome.base, measure=measure, threads=threads)


def speed_part(chain: list[str], settings: dict, epochs: float, threads: int, seeds: int, folder: Path) -> None:
    runs = []
    for seed in range(seeds):
        outcome = compress(model="digits32_resnet18", chain=chain, settings=settings, input_size=32,
                           budget=Budget(epochs=epochs), device="cpu", seed=seed)
        manifest = exported(outcome, chain, folder / f"speed-{seed}", SPEED_FORMATS, threads, measure=True)
        macs = outcome.base_metrics["macs"] / outcome.steps[-1].metrics["macs"]
        print(f"\n32-px sample digits32_resnet18, chain {' -> '.join(chain)} ({macs:.1f}x fewer MACs), seed {seed}, {epochs:g} "
              f"epochs per step, {threads} threads; base: float ONNX in onnxruntime")
        runs.append({entry["format"]: entry for entry in manifest["formats"] if speed_entry(entry)})
    print(f"\nover {seeds} seed(s):")
    passing = [fmt for fmt in SPEED_FORMATS if seed_summary(fmt, [run[fmt] for run in runs if fmt in run], seeds)]
    print(f"  target (>= {TARGET_SPEEDUP:g}x at batch 1 and 32, within {TARGET_POINTS:g} point, as means over the seeds): "
          + (f"met by {', '.join(passing)}" if passing else "not met"))


def speed_entry(entry: dict) -> bool:
    """Print one artifact's latency and accuracy against the base; whether it was measured."""
    error = entry.get("error") or entry.get("measured", {}).get("error") or entry.get("base_measured", {}).get("error")
    if error:
        print(f"  {entry['format']}: {error}")
        return False
    measured, base = entry["measured"], entry["base_measured"]
    print(f"  {entry['file']} ({measured['runtime']}), {entry['size_bytes'] / 1024:.1f} KiB against the base's "
          f"{base['size_bytes'] / 1024:.1f} KiB")
    for batch, ratio in entry["speedup"].items():
        print(f"    batch {batch:>2}: base {base['latency_ms'][batch]:8.3f} ms, chain {measured['latency_ms'][batch]:8.3f} ms, "
              f"speed-up {ratio:5.2f}x")
    print(f"    accuracy: base {base['accuracy']:.2f} %, chain {measured['accuracy']:.2f} % ({change(entry):+.2f} points)")
    return True


def change(entry: dict) -> float:
    return entry["measured"]["accuracy"] - entry["base_measured"]["accuracy"]


def seed_summary(fmt: str, entries: list[dict], seeds: int) -> bool:
    """Print the mean and range over the seeds of one format's speed-ups and accuracy change; whether the means meet the target."""
    if not entries:
        print(f"  {fmt}: measured on no seed")
        return False
    spread = lambda values: f"mean {statistics.fmean(values):6.2f} (range {min(values):.2f} to {max(values):.2f})"
    speedups = {b: [entry["speedup"][b] for entry in entries] for b in entries[0]["speedup"]}
    changes = [change(entry) for entry in entries]
    print(f"  {fmt} on {len(entries)} of {seeds} seed(s): "
          + "; ".join(f"speed-up at batch {b} {spread(values)}x" for b, values in speedups.items())
          + f"; accuracy change {spread(changes)} points")
    fast = all(statistics.fmean(values) >= TARGET_SPEEDUP for values in speedups.values())
    return len(entries) == seeds and fast and statistics.fmean(changes) >= -TARGET_POINTS


def size_part(epochs: float, threads: int, folder: Path) -> None:
    chain = ["distill", "prune", "quantize", "early_exit"]
    outcome = compress(model="digits_cnn", chain=chain, budget=Budget(epochs=epochs), device="cpu")
    manifest = exported(outcome, chain, folder / "size", DEFAULT_FORMATS, threads, measure=False)
    reported = manifest["reported_storage_bytes"]
    print(f"\ndefault sample digits_cnn, chain {' -> '.join(chain)}: reported storage {reported / 1024:.1f} KiB")
    built = [e for e in manifest["formats"] if "file" in e]
    for entry in sorted(built, key=lambda e: e["size_bytes"]):
        print(f"  {entry['file']:<26} {entry['size_bytes'] / 1024:8.1f} KiB  {entry['size_bytes'] / reported:5.2f}x reported")
    for entry in manifest["formats"]:
        if "error" in entry:
            print(f"  {entry['format']}: {entry['error']}")
    smallest = min(built, key=lambda e: e["size_bytes"])
    print(f"  smallest: {smallest['file']} at {smallest['size_bytes'] / reported:.2f}x the reported storage (target <= 1.25x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=8.0, help="fine-tuning epochs per step on the 32-px sample")
    parser.add_argument("--size-epochs", type=float, default=2.0, help="fine-tuning epochs per step on the default sample")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the 32-px chain (the target is on their means)")
    parser.add_argument("--chain", default="prune,distill", help="chain for the 32-px sample")
    parser.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                        help="a method setting for the 32-px chain, repeatable (default distill.depth=0.5, distill.width=0.5)")
    args = parser.parse_args()
    chain = args.chain.split(",")
    settings = parse_settings(args) if args.set else {"distill": {"depth": 0.5, "width": 0.5}} if "distill" in chain else {}
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_text(cpu_description())}")
    with tempfile.TemporaryDirectory() as temp:
        speed_part(chain, settings, args.epochs, args.threads, args.seeds, Path(temp))
        size_part(args.size_epochs, args.threads, Path(temp))


if __name__ == "__main__":
    main()
