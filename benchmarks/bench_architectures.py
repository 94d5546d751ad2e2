"""Which methods apply to which networks: every registered method on torchvision's classes as torchvision
defines them, a user's class from a file, small transformers (torchvision's ViT and Swin, a user's own ViT), a sample, then every export format.

    PYTHONPATH=$PWD python benchmarks/bench_architectures.py --cache /tmp/arch/cache --out /tmp/arch/exports
    PYTHONPATH=$PWD python benchmarks/bench_architectures.py --models my_net,vit --cache /tmp/arch/cache --out /tmp/arch/exports

Each network is loaded by reference, as `--model torchvision.models:resnet18 --model-args '{"num_classes": 10}'`
loads it (`prepare_base`, what `ordercomp apply` and `ordercomp measure` call): only its number of classes set, the
gray digits repeated to its 3 input channels. Without weights the library trains it once on 32-px digits and
caches it under --cache (a rerun reuses it). Each method is applied alone to the base with the same fine-tuning
budget (--epochs, default 1), as a chain of one step (`apply_chain`, what `compress` calls), and measured on the
test split: BitOps reduction and accuracy change, or the step's status and reason. Then one chain per network
(prune -> quantize -> early_exit, without those that did not apply alone) is exported in every format.

Nothing here catches an exception: a method's error must already be its step's `failed` result in the library.
The check that no classifier changes its number of outputs is printed, not asserted; figures depend on the machine.
"""
from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ordercomp.deploy.export import DEFAULT_FORMATS, check_text, export_compressed
from ordercomp.exploration.explorer import prepare_base
from ordercomp.exploration.pipeline import OK, StepResult, apply_chain, make_configs
from ordercomp.methods.base import Context, config_to_dict
from ordercomp.methods.registry import METHODS
from ordercomp.metrics import measure
from ordercomp.models.checkpoints import describe_source
from ordercomp.train import Budget

MY_NET = Path(__file__).resolve().parent.parent / "tests" / "user_models" / "my_net.py"
OWN_VIT = MY_NET.with_name("own_vit.py")
EXPORT_CHAIN = ("prune", "quantize", "early_exit")
INPUT_SIZE = 32
CELL_REASON = 48  # characters of a reason shown in a table cell; the full reason is printed below the table


@dataclass(frozen=True)
class Network:
    """A row: how a user names the network (--model, --model-args) and what it is."""

    model: str
    what: str
    model_args: dict = field(default_factory=dict)
    stages: tuple[str, ...] | None = None  # --stages, where the row names them


NETWORKS = {
    "resnet18": Network("torchvision.models:resnet18", "torchvision's ResNet-18", {"num_classes": 10}),
    "mobilenet_v3_small": Network("torchvision.models:mobilenet_v3_small", "torchvision's MobileNetV3-Small", {"num_classes": 10}),
    "efficientnet_b0": Network("torchvision.models:efficientnet_b0", "torchvision's EfficientNet-B0", {"num_classes": 10}),
    "regnet_x_400mf": Network("torchvision.models:regnet_x_400mf", "torchvision's RegNetX-400MF", {"num_classes": 10}),
    "my_net": Network(f"{MY_NET}:MyNet", "a user's class from a .py file: functional ReLU, residual adds, "
                      "a layer registered after the classifier"),
    "vit": Network("torchvision.models:VisionTransformer", "torchvision's VisionTransformer, 2 layers of width 32, 8-px patches",
                   {"image_size": INPUT_SIZE, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}),
    "own_vit": Network(f"{OWN_VIT}:OwnViT", "a user's own transformer in timm's layout (one qkv layer reshaped to its "
                       "heads, class token and position embeddings as parameters), 2 blocks of width 32, 8-px patches",
                       {"image": INPUT_SIZE, "patch": 8, "dim": 32, "depth": 2, "heads": 2, "mlp": 64}),
    "own_vit_blocks": Network(f"{OWN_VIT}:OwnViT", "the same, split at its blocks (--stages blocks.0,blocks.1)",
                              {"image": INPUT_SIZE, "patch": 8, "dim": 32, "depth": 2, "heads": 2, "mlp": 64},
                              ("blocks.0", "blocks.1")),
    "encoder_vit": Network(f"{OWN_VIT}:EncoderViT", "a user's ViT on PyTorch's nn.TransformerEncoder (batch first, "
                           "pre-norm), 2 layers of width 32, 8-px patches",
                           {"image": INPUT_SIZE, "patch": 8, "dim": 32, "depth": 2, "heads": 2, "mlp": 64}),
    "swin": Network("torchvision.models.swin_transformer:SwinTransformer", "torchvision's Swin Transformer, 2 stages of "
                    "1 block, width 32, 4-px patches, 4x4 windows",
                    {"patch_size": [4, 4], "embed_dim": 32, "depths": [1, 1], "num_heads": [2, 2], "window_size": [4, 4]}),
    "digits32_resnet18": Network("digits32_resnet18", "ordercomp's sample for 32-px digits (ResNet-18 layout, widths 16-128)"),
}


@dataclass
class Row:
    """What one network gave: its base, each method's step result, its export manifest, and the outputs check."""

    name: str
    source: dict
    base: dict
    results: dict[str, StepResult]
    chain: list[str]
    manifest: dict | None
    outputs: dict[str, int]  # logits per image after each applied method
    seconds: float


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_network(name: str, args, out: Path) -> Row:
    start = time.perf_counter()
    network = NETWORKS[name]
    base, source, data = prepare_base(network.model, "digits", model_args=network.model_args, input_size=INPUT_SIZE,
                                      device="cpu", cache_dir=args.cache, stages=network.stages)
    base_metrics = measure(base, data, "test", latency=False).to_dict()
    print(f"  base: {describe_source(source)}; ready in {time.perf_counter() - start:.0f} s", flush=True)
    configs = make_configs(list(METHODS))
    context = Context(data, Budget(epochs=args.epochs), seed=0, device=torch.device("cpu"))
    results, outputs = apply_each(name, base, base_metrics, configs, context)
    chain = [m for m in EXPORT_CHAIN if results[m].status == OK]
    exporting = time.perf_counter()
    manifest = export_chain(base, chain, configs, context, source, out / name) if chain else None
    print(f"  export of {' -> '.join(chain) or 'no chain'}: {time.perf_counter() - exporting:.0f} s", flush=True)
    return Row(name, source, base_metrics, results, chain, manifest, outputs, time.perf_counter() - start)


def apply_each(name: str, base, base_metrics: dict, configs: dict, context: Context) -> tuple[dict, dict]:
    """Every registered method alone on the base: (its step result, the logits per image of what it made)."""
    results, outputs = {}, {}
    for method in METHODS:
        model, [result] = apply_chain(base, [method], configs, context, latency=False)
        results[method] = result
        if result.status == OK:
            outputs[method] = logits_per_image(model, context.data)
        print(f"  {name} {method}: {cell(result, base_metrics) if result.status == OK else result.reason}  ({result.seconds:.0f} s)",
              flush=True)
    return results, outputs


@torch.no_grad()
def logits_per_image(model: torch.nn.Module, data) -> int:
    return model.eval()(data.example_input(2)).shape[-1]


def export_chain(base, chain: list[str], configs: dict, context: Context, source: dict, folder: Path) -> dict | None:
    """Every format of the chain's model, each checked against PyTorch (not timed); None when a step did not apply."""
    model, steps = apply_chain(base, chain, configs, context, latency=False)
    if steps[-1].status != OK:
        print(f"  export chain {' -> '.join(chain)}: {steps[-1].status}: {steps[-1].reason}")
        return None
    return export_compressed(model, folder, formats=DEFAULT_FORMATS, chain=chain,
                             configs={m: config_to_dict(m, configs[m]) for m in chain}, metrics=steps[-1].metrics,
                             data=context.data, base=source, base_model=base, measure=False)


def cell(result: StepResult, base: dict) -> str:
    """An applied step: BitOps reduction / size reduction / accuracy change in points."""
    metrics = result.metrics
    return (f"{base['bitops'] / metrics['bitops']:.1f}x / {base['size_bytes'] / metrics['size_bytes']:.1f}x / "
            f"{metrics['accuracy'] - base['accuracy']:+.1f}")


def short(reason: str) -> str:
    """A reason's gist for a table cell: without the error's type, up to its first detail, at most CELL_REASON characters."""
    kind, colon, rest = reason.partition(": ")
    gist = rest if colon and kind.isidentifier() and kind.endswith("Error") else reason
    gist = gist.split(": ", 1)[0].split(" (", 1)[0]
    return gist if len(gist) <= CELL_REASON else gist[:CELL_REASON - 1] + "…"


def method_table(rows: list[Row]) -> list[str]:
    """The matrix (markdown) and the full reasons below it, numbered as the cells cite them."""
    reasons: list[str] = []
    lines = ["| network | base accuracy | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 2) + "|"]
    for row in rows:
        cells = []
        for method, result in row.results.items():
            if result.status == OK:
                cells.append(cell(result, row.base))
            else:
                reasons.append(f"{row.name}, {method}: {result.status}: {result.reason}")
                cells.append(f"{result.status} [{len(reasons)}]: {short(result.reason or '')}")
        lines.append(f"| {row.name} | {row.base['accuracy']:.1f} % | " + " | ".join(cells) + " |")
    return lines + [""] + [f"[{number}] {reason}" for number, reason in enumerate(reasons, 1)]


def export_table(rows: list[Row]) -> list[str]:
    reasons: list[str] = []
    lines = ["| network | chain | " + " | ".join(DEFAULT_FORMATS) + " |", "|---" * (len(DEFAULT_FORMATS) + 2) + "|"]
    for row in rows:
        if row.manifest is None:
            lines.append(f"| {row.name} | {' -> '.join(row.chain) or 'none applied'} | " + " | ".join("—" for _ in DEFAULT_FORMATS) + " |")
            continue
        entries = {entry["format"]: entry for entry in row.manifest["formats"]}
        cells = []
        for fmt in DEFAULT_FORMATS:
            text, reason = export_cell(entries[fmt])
            if reason:
                reasons.append(f"{row.name}, {fmt}: {reason}")
                text += f" [{len(reasons)}]"
            cells.append(text)
        lines.append(f"| {row.name} | {' -> '.join(row.chain)} | " + " | ".join(cells) + " |")
    return lines + [""] + [f"[{number}] {reason}" for number, reason in enumerate(reasons, 1)]


def export_cell(entry: dict) -> tuple[str, str | None]:
    """(the cell, the full reason when the file was not built or its check failed)."""
    if "error" in entry:
        return "not built", entry["error"]
    size = f"{entry['size_bytes'] / 1024:.0f} KiB"
    check = entry.get("check")
    if check is not None and not check.get("passed"):
        return f"{size}, check failed", check_text(check)
    return f"ok, {size}", None


def outputs_check(rows: list[Row]) -> str:
    changed = [f"{row.name} {method}: {count}" for row in rows for method, count in row.outputs.items() if count != 10]
    applied = sum(len(row.outputs) for row in rows)
    return (f"check: every one of the {applied} applied steps gives 10 logits per image" if not changed
            else f"check FAILED: a classifier changed its number of outputs: {'; '.join(changed)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(NETWORKS), help=f"rows, from {','.join(NETWORKS)}")
    parser.add_argument("--epochs", type=float, default=1.0, help="fine-tuning epochs per method")
    parser.add_argument("--cache", required=True, help="where the bases trained here are kept (and reused by a rerun)")
    parser.add_argument("--out", required=True, help="folder for the exported files, one sub-folder per network")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    names = [n.strip() for n in args.models.split(",")]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown network {unknown[0]}: choose from {', '.join(NETWORKS)}")
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, {args.threads} torch threads; torch {torch.__version__}; "
          f"{INPUT_SIZE}-px digits, {args.epochs:g} fine-tuning epoch(s) per method, seed 0")
    start, rows = time.perf_counter(), []
    for name in names:
        print(f"{name}: {NETWORKS[name].what}", flush=True)
        rows.append(run_network(name, args, Path(args.out)))
    print("\nEach method alone on the base: BitOps reduction / size reduction / accuracy change on the test split (points)\n")
    print("\n".join(method_table(rows)))
    print("\nEvery export format of one chain per network (checked against PyTorch, not timed)\n")
    print("\n".join(export_table(rows)))
    print(f"\n{outputs_check(rows)}")
    print(f"total {time.perf_counter() - start:.0f} s: " + ", ".join(f"{row.name} {row.seconds:.0f} s" for row in rows))


if __name__ == "__main__":
    main()
