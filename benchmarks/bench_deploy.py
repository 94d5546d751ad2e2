"""Deployment benchmark: is what ships as small and as fast as the dashboard says?

    python benchmarks/bench_deploy.py                          # both parts, 2 threads
    python benchmarks/bench_deploy.py --chain distill,prune    # the other order of the 32-px chain

1. The 32-px sample (digits32_resnet18, digits upscaled to 32 px): the chain (default prune, then
   distill into a student of half the width and half the depth, 8 fine-tuning epochs per step) is
   exported as float ONNX and as int8 ONNX; each file and the base (float ONNX) run in onnxruntime
   with the same threads at batch 1 and 32. Target: an exported file >= 5x faster than the base at
   both batch sizes, accuracy within 1 point.
2. The default sample (digits_cnn, chain distill,prune,quantize,early_exit): every artifact is
   written; the smallest file against the storage the metrics report. Target: <= 1.25x.
Figures and ratios are printed, never asserted: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ordercomp.cli import parse_settings
from ordercomp.exploration.explorer import compress
from ordercomp.deploy.export import DEFAULT_FORMATS, export_compressed
from ordercomp.train import Budget

SPEED_FORMATS = ("onnx", "onnx_int8")
TARGET_SPEEDUP, TARGET_POINTS = 5.0, 1.0


def exported(outcome, chain, out: Path, formats, threads: int, measure: bool) -> dict:
    return export_compressed(outcome.model, out, formats=formats, chain=chain, configs=outcome.configs,
                             metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                             base_model=outcome.base, measure=measure, threads=threads)


def speed_part(chain: list[str], settings: dict, epochs: float, threads: int, folder: Path) -> None:
    outcome = compress(model="digits32_resnet18", chain=chain, settings=settings, input_size=32,
                       budget=Budget(epochs=epochs), device="cpu")
    manifest = exported(outcome, chain, folder / "speed", SPEED_FORMATS, threads, measure=True)
    macs = outcome.base_metrics["macs"] / outcome.steps[-1].metrics["macs"]
    print(f"\n32-px sample digits32_resnet18, chain {' -> '.join(chain)} ({macs:.1f}x fewer MACs), {epochs:g} epochs "
          f"per step, {threads} threads; base: float ONNX in onnxruntime")
    passing = [name for name in map(speed_entry, manifest["formats"]) if name]
    print(f"  target (>= {TARGET_SPEEDUP:g}x at batch 1 and 32, within {TARGET_POINTS:g} point): "
          + (f"met by {', '.join(passing)}" if passing else "not met"))


def speed_entry(entry: dict) -> str | None:
    """Print one artifact's latency and accuracy against the base; its name when it meets the target."""
    error = entry.get("error") or entry.get("measured", {}).get("error") or entry.get("base_measured", {}).get("error")
    if error:
        print(f"  {entry['format']}: {error}")
        return None
    measured, base = entry["measured"], entry["base_measured"]
    print(f"  {entry['file']} ({measured['runtime']}), {entry['size_bytes'] / 1024:.1f} KiB against the base's "
          f"{base['size_bytes'] / 1024:.1f} KiB")
    for batch, ratio in entry["speedup"].items():
        print(f"    batch {batch:>2}: base {base['latency_ms'][batch]:8.3f} ms, chain {measured['latency_ms'][batch]:8.3f} ms, "
              f"speed-up {ratio:5.2f}x")
    drop = base["accuracy"] - measured["accuracy"]
    print(f"    accuracy: base {base['accuracy']:.2f} %, chain {measured['accuracy']:.2f} % ({-drop:+.2f} points)")
    fast = all(ratio >= TARGET_SPEEDUP for ratio in entry["speedup"].values())
    return entry["file"] if fast and drop <= TARGET_POINTS else None


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
    parser.add_argument("--chain", default="prune,distill", help="chain for the 32-px sample")
    parser.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                        help="a method setting for the 32-px chain, repeatable (default distill.depth=0.5, distill.width=0.5)")
    args = parser.parse_args()
    chain = args.chain.split(",")
    settings = parse_settings(args) if args.set else {"distill": {"depth": 0.5, "width": 0.5}} if "distill" in chain else {}
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        speed_part(chain, settings, args.epochs, args.threads, Path(temp))
        size_part(args.size_epochs, args.threads, Path(temp))


if __name__ == "__main__":
    main()
