"""Deployment benchmark: is what ships as small and as fast as the dashboard says?

    python benchmarks/bench_deploy.py                          # both parts, 3 seeds, 2 threads
    python benchmarks/bench_deploy.py --seeds 1 --epochs 1     # a quick try of the whole path
    python benchmarks/bench_deploy.py --chain distill,prune    # the other order of the 32-px chain
    python benchmarks/bench_deploy.py --parts vit --vit-chain distill,token_merge,prune   # the ViT part alone, another chain

It first prints the CPU (model, logical cores, AVX2 / AVX-512 / VNNI / AMX flags): onnxruntime picks
its kernels by them, and fine-tuned accuracy moves with the CPU's kernels about as much as with the seed.
1. The 32-px sample (digits32_resnet18_half: ResNet-18's layout at half its widths, 139 M MACs on digits upscaled to
   32 px): the chain (default prune, then distill into a student of half the width and half the depth, 16 fine-tuning
   epochs per step) is
   applied once per seed and exported as float ONNX and as int8 ONNX; each file and the base (float
   ONNX) run in onnxruntime with the same threads at batch 1 and 32, after warm-up, in alternating
   rounds. Per file: the mean and the range over the seeds of the speed-up at each batch size and of
   the accuracy change. Target: a file >= 5x faster than the base at both batch sizes and within 1
   point, as means over the seeds. What bounds the batch-1 ratio on this CPU: onnxruntime's floor (a
   one-node graph) against seed 0's chain file, and the nodes each float ONNX file runs there.
2. The ViT sample (digits32_vit, chain distill into a student of one block of its four (`distill.depth=0.25`), then
   prune half its MLP units (`prune.heads=False`: removing heads too cost 2.3 points); 20 epochs per step at its card's
   rate, where 3 epochs left the one-block student 4.8 points down): float ONNX against the ViT base's float ONNX, as in
   part 1, per seed and over the seeds. Target: >= 3x at batch 32 within 1 point, as means over the seeds. (Token merging
   saves MACs but not time here: its gathers cost what the smaller products save, token_merge -> distill 1.8x.)
3. The default sample (digits_cnn, chain distill,prune,quantize,early_exit): every artifact is
   written; the smallest file against the storage the metrics report. Target: <= 1.25x.
Figures and ratios are printed, never asserted: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import onnx
import torch

from ordercomp.cli import parse_settings
from ordercomp.deploy.export import DEFAULT_FORMATS, INPUT_NAME, OUTPUT_NAME, Sources, export_compressed, write_format
from ordercomp.deploy.runtimes import BATCHES, cpu_description, cpu_text, latency_ms, load_runner, onnx_session
from ordercomp.exploration.explorer import compress, default_budget
from ordercomp.train import Budget

SPEED_FORMATS = ("onnx", "onnx_int8")
TARGET_SPEEDUP, TARGET_POINTS = 5.0, 1.0
VIT_TARGET_SPEEDUP, VIT_TARGET_BATCHES = 3.0, ("32",)
SPEED_SAMPLE = "digits32_resnet18_half"  # digits32_resnet18 (a quarter of the MACs) left no batch-1 margin on AVX-512
PARTS = ("speed", "vit", "size")
VIT_SETTINGS = ("distill.depth=0.25", "prune.heads=False")  # given --vit-set, these are not applied


def exported(outcome, chain, out: Path, formats, threads: int, measure: bool) -> dict:
    return export_compressed(outcome.model, out, formats=formats, chain=chain, configs=outcome.configs,
                             metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                             base_model=outcome.base, measure=measure, threads=threads)


def speed_part(sample: str, chain: list[str], settings: dict, epochs: float, threads: int, seeds: int, folder: Path) -> None:
    runs, outcome = seeded_runs(sample, chain, settings, Budget(epochs=epochs), SPEED_FORMATS, threads, seeds, folder)
    if "onnx" in runs[0]:
        batch_one_anatomy(runs[0]["onnx"], outcome, sample, threads, folder)
    over_seeds(runs, SPEED_FORMATS, seeds, TARGET_SPEEDUP, tuple(str(b) for b in BATCHES))


def vit_part(chain: list[str], settings: dict, epochs: float, threads: int, seeds: int, folder: Path) -> None:
    """The ViT sample's chain as float ONNX against the ViT base's, in onnxruntime (its card's settings, and any given, and rate)."""
    print(f"\nViT settings over its card's: {settings or 'none'}")
    budget = replace(default_budget("digits32_vit"), epochs=epochs)
    runs, _ = seeded_runs("digits32_vit", chain, settings, budget, ("onnx",), threads, seeds, folder)
    over_seeds(runs, ("onnx",), seeds, VIT_TARGET_SPEEDUP, VIT_TARGET_BATCHES)


def seeded_runs(model: str, chain: list[str], settings: dict, budget: Budget, formats, threads: int, seeds: int,
                folder: Path) -> tuple[list[dict], object]:
    """The chain applied and exported once per seed, each file measured against the base's in the same runtime."""
    runs = []
    for seed in range(seeds):
        outcome = compress(model=model, chain=chain, settings=settings, budget=budget, device="cpu", seed=seed)
        manifest = exported(outcome, chain, folder / f"{model}-{seed}", formats, threads, measure=True)
        macs = outcome.base_metrics["macs"] / outcome.steps[-1].metrics["macs"]
        print(f"\n{model}, chain {' -> '.join(chain)} ({macs:.1f}x fewer MACs), seed {seed}, {budget.epochs:g} epochs per step "
              f"at lr {budget.lr:g}, {threads} threads; base: float ONNX in onnxruntime")
        runs.append({entry["format"]: entry for entry in manifest["formats"] if speed_entry(entry)})
    return runs, outcome


def over_seeds(runs: list[dict], formats, seeds: int, target: float, batches: tuple[str, ...]) -> None:
    print(f"\nover {seeds} seed(s):")
    passing = [fmt for fmt in formats if seed_summary(fmt, [run[fmt] for run in runs if fmt in run], seeds, target, batches)]
    print(f"  target (>= {target:g}x at batch {' and '.join(batches)}, within {TARGET_POINTS:g} point, as means over the seeds): "
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


def batch_one_anatomy(entry: dict, outcome, sample: str, threads: int, folder: Path) -> None:
    """Print what bounds the batch-1 speed-up on this CPU: onnxruntime's floor (one node) against seed 0's float
    ONNX file, and the nodes each file runs once onnxruntime has optimised its graph (fused, laid out in channel blocks)."""
    (folder / "base").mkdir()
    base_file = folder / "base" / write_format("onnx", Sources.of(outcome.base, outcome.data), folder / "base")["file"]
    floor = {b: latency_ms(load_runner("onnx", floor_graph(outcome.data, folder), threads), outcome.data, b, 200) for b in BATCHES}
    chain_ms = entry["measured"]["latency_ms"]["1"]
    print(f"\nbatch-1 anatomy: onnxruntime's floor (a one-node graph) {floor[1]:.4f} ms at batch 1, {floor[BATCHES[-1]]:.4f} ms at batch {BATCHES[-1]}; "
          f"seed 0's chain file takes {chain_ms / floor[1]:.0f}x the floor at batch 1")
    for role, path in (("base", base_file), ("chain (seed 0)", folder / f"{sample}-0" / entry["file"])):
        nodes = optimised_nodes(path, threads, folder)
        reorders = nodes["ReorderInput"] + nodes["ReorderOutput"]
        print(f"  {role}: {sum(nodes.values())} nodes after onnxruntime's optimisation, {nodes['Conv']} convolutions, "
              f"{reorders} layout reorder(s) (out of channel blocks: after the last convolution, and after each layer "
              "narrower than the CPU's block, whose outputs are padded to it)")


def floor_graph(data, folder: Path) -> Path:
    """A float ONNX file of one Relu on the images: what every call costs whatever the model."""
    shape = ["batch", data.in_channels, data.input_size, data.input_size]
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", [INPUT_NAME], [OUTPUT_NAME])], "floor",
                                   [onnx.helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, shape)],
                                   [onnx.helper.make_tensor_value_info(OUTPUT_NAME, onnx.TensorProto.FLOAT, shape)])
    path = folder / "floor.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def optimised_nodes(path: Path, threads: int, folder: Path) -> collections.Counter:
    """Node types of the graph onnxruntime runs for `path` on this CPU (its session's optimised model)."""
    optimised = folder / f"{path.parent.name}-optimised.onnx"
    onnx_session(path, threads, optimized_model=optimised)
    return collections.Counter(node.op_type for node in onnx.load(optimised).graph.node)


def change(entry: dict) -> float:
    return entry["measured"]["accuracy"] - entry["base_measured"]["accuracy"]


def seed_summary(fmt: str, entries: list[dict], seeds: int, target: float, batches: tuple[str, ...]) -> bool:
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
    fast = all(statistics.fmean(speedups[b]) >= target for b in batches)
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
    parser.add_argument("--epochs", type=float, default=16.0, help="fine-tuning epochs per step on the 32-px sample")
    parser.add_argument("--vit-epochs", type=float, default=20.0, help="fine-tuning epochs per step on the ViT sample (at its card's rate)")
    parser.add_argument("--size-epochs", type=float, default=2.0, help="fine-tuning epochs per step on the default sample")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the 32-px chain (the target is on their means)")
    parser.add_argument("--chain", default="prune,distill", help="chain for the 32-px sample")
    parser.add_argument("--sample", default=SPEED_SAMPLE, help=f"the speed part's base (default {SPEED_SAMPLE}; digits32_resnet18 for the one before)")
    parser.add_argument("--vit-chain", default="distill,prune", help="chain for the ViT sample (its card's settings)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"which parts to run, of {', '.join(PARTS)}")
    parser.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE",
                        help="a method setting for the 32-px chain, repeatable (default distill.depth=0.5, distill.width=0.5)")
    parser.add_argument("--vit-set", action="append", metavar="METHOD.FIELD=VALUE",
                        help=f"a method setting for the ViT chain over its card's, repeatable (default {' '.join(VIT_SETTINGS)})")
    args = parser.parse_args()
    chain = args.chain.split(",")
    settings = parse_settings(args) if args.set else {"distill": {"depth": 0.5, "width": 0.5}} if "distill" in chain else {}
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_text(cpu_description())}")
    parts = args.parts.split(",")
    if set(parts) - set(PARTS):
        parser.error(f"unknown part in --parts {args.parts!r}: choose from {', '.join(PARTS)}")
    with tempfile.TemporaryDirectory() as temp:
        if "speed" in parts:
            speed_part(args.sample, chain, settings, args.epochs, args.threads, args.seeds, Path(temp))
        if "vit" in parts:
            vit_part(args.vit_chain.split(","), parse_settings(argparse.Namespace(set=args.vit_set or list(VIT_SETTINGS))), args.vit_epochs, args.threads,
                     args.seeds, Path(temp))
        if "size" in parts:
            size_part(args.size_epochs, args.threads, Path(temp))


if __name__ == "__main__":
    main()
