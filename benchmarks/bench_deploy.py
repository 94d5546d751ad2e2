"""Deployment benchmark: is what ships as small and as fast as the dashboard says?

    python benchmarks/bench_deploy.py                 # both parts, 2 threads
    python benchmarks/bench_deploy.py --epochs 3      # the default fine-tuning budget (slower)

1. The 32-px sample (digits32_resnet18, digits upscaled to 32 px): the chain (default
   prune,distill) is applied and exported as int8 ONNX; it and the base (float ONNX) run in
   onnxruntime with the same threads at batch 1 and 32. Target: >= 5x faster, accuracy within 1 point.
2. The default sample (digits_cnn, chain distill,prune,quantize,early_exit): every artifact is
   written; the smallest file against the storage the metrics report. Target: <= 1.25x.
Figures and ratios are printed, never asserted: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from ordercomp.explore import compress
from ordercomp.export import DEFAULT_FORMATS, export_compressed
from ordercomp.train import Budget


def exported(outcome, chain, out: Path, formats, threads: int, measure: bool) -> dict:
    return export_compressed(outcome.model, out, formats=formats, chain=chain, configs=outcome.configs,
                             metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                             base_model=outcome.base, measure=measure, threads=threads)


def speed_part(chain: list[str], epochs: float, threads: int, folder: Path) -> None:
    outcome = compress(model="digits32_resnet18", chain=chain, input_size=32, budget=Budget(epochs=epochs), device="cpu")
    manifest = exported(outcome, chain, folder / "speed", ("onnx_int8",), threads, measure=True)
    entry = manifest["formats"][0]
    print(f"\n32-px sample digits32_resnet18, chain {' -> '.join(chain)} -> int8 ONNX, {threads} threads")
    if "error" in entry or "error" in entry.get("measured", {}):
        print(f"  int8 ONNX: {entry.get('error') or entry['measured']['error']}")
        return
    measured, base = entry["measured"], entry["base_measured"]
    print(f"  runtime: {measured['runtime']} (base: float ONNX in the same runtime)")
    for batch, ratio in entry["speedup"].items():
        print(f"  batch {batch:>2}: base {base['latency_ms'][batch]:8.3f} ms, chain {measured['latency_ms'][batch]:8.3f} ms, "
              f"speed-up {ratio:5.2f}x (target >= 5x)")
    print(f"  accuracy: base {base['accuracy']:.2f} %, chain {measured['accuracy']:.2f} %, "
          f"difference {measured['accuracy'] - base['accuracy']:+.2f} points (target within 1)")
    print(f"  files: base {base['size_bytes'] / 1024:.1f} KiB, int8 ONNX {entry['size_bytes'] / 1024:.1f} KiB")


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
    parser.add_argument("--epochs", type=float, default=2.0, help="fine-tuning epochs per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chain", default="prune,distill", help="chain for the 32-px sample (exported as int8 ONNX)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as temp:
        speed_part(args.chain.split(","), args.epochs, args.threads, Path(temp))
        size_part(args.epochs, args.threads, Path(temp))


if __name__ == "__main__":
    main()
