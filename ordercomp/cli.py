"""Command line: `ordercomp explore` finds the order, `ordercomp apply` compresses and exports,
`ordercomp measure` measures any base.

    ordercomp explore                      # the embedded default: digits, 4 methods
    ordercomp explore --methods prune,quantize --seeds 5 --out runs/x
    ordercomp explore --model my_net.py:MyNet --weights my_net.pt --normalize none
    ordercomp apply --chain distill,prune,quantize,early_exit --export out/
    ordercomp measure --model model.pt2 --data digits

Bad input prints one line saying what to fix and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

from .waiting import spin_briefly

spin_briefly()  # before torch loads OpenMP (the imports below): see waiting.py

from .allocator import keep_freed_memory  # noqa: E402
from .data.preprocessing import NORMALIZE_HELP, Normalization, describe_preprocessing
from .deploy.export import SHIPPED_FORMAT
from .exploration.executors import EXECUTORS
from .methods.registry import METHODS, parse_methods
from .order.plan import chain_text
from .models.checkpoints import describe_source
from .train import Budget

EXIT_USAGE = 2


def _value(text: str):
    """A --set value as Python would read it ('nan' and 'inf' as floats, so they are refused as such), else as text."""
    for read in (ast.literal_eval, float):
        try:
            return read(text)
        except (ValueError, SyntaxError):
            continue
    return text


def parse_settings(args) -> dict[str, dict]:
    """Method settings from `--set method.field=value` and the per-method strength options."""
    settings: dict[str, dict] = {}
    for item in args.set or []:
        target, sep, value = item.partition("=")
        method, dot, name = target.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r} must look like method.field=value, e.g. prune.ratio=0.4")
        settings.setdefault(method, {})[name] = _value(value)
    for method in METHODS.values():
        value = getattr(args, _strength_dest(method), None)
        if value is not None:
            settings.setdefault(method.name, {})[method.strength] = value
    return settings


def _strength_dest(method) -> str:
    return f"{method.name}_{method.strength}"


def _base_options(parser: argparse.ArgumentParser) -> None:
    """Where the base model and the data come from, and how images become its input."""
    parser.add_argument("--model", default="digits_cnn", help="sample model name, zoo architecture, registered factory, a "
                        "checkpoint or program file, or your class: FILE.py:NAME or package.module:NAME (a class or a "
                        "function returning an nn.Module; importing it runs its code)")
    parser.add_argument("--model-args", metavar="JSON", help="keyword arguments of a FILE.py:NAME or package.module:NAME, "
                        "e.g. '{\"num_classes\": 10}' (num_classes and in_channels come from the data when it names them)")
    parser.add_argument("--weights", metavar="FILE", help="state dict (.pt, .pth, .bin, .ckpt) or safetensors for --model's "
                        "class or zoo architecture; checkpoints of training frameworks are unwrapped")
    parser.add_argument("--ema", action="store_true", help="read the EMA weights of a checkpoint that holds them beside the "
                        "training weights (timm's state_dict_ema, torchvision's model_ema, Lightning's EMA)")
    parser.add_argument("--arch", help="architecture of a state-dict checkpoint given to --model")
    parser.add_argument("--classifier", metavar="MODULE", help="your network's layer that gives the logits (e.g. fc), "
                        "when tracing the forward cannot find it")
    parser.add_argument("--stages", metavar="MODULE,...", help="the modules whose outputs end your network's stages "
                        "(e.g. layer1,layer2,layer3,layer4), when tracing the forward cannot find them")
    parser.add_argument("--data", default="digits", help="'digits', a CIFAR-10/100 or ImageFolder folder, or a .npz file "
                        "(x, y, or x_train, y_train with optional x_val, y_val, x_test, y_test)")
    parser.add_argument("--input-size", type=int, help="resize images to this many pixels")
    parser.add_argument("--normalize", default="dataset", help=NORMALIZE_HELP)
    parser.add_argument("--crop", type=float, metavar="SHARE", help="an ImageFolder tree's images: resize the shorter side "
                        "to the input size / SHARE and keep the centre square, as torchvision's Resize then CenterCrop "
                        "(0.875: 256 px to 224 px); without it each image is resized whole to a square")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="run a TorchScript --model file; it executes code from the file, so only for files you trust")


def _common(parser: argparse.ArgumentParser) -> None:
    _base_options(parser)
    parser.add_argument("--epochs", type=float, default=Budget.epochs, help="fine-tuning epochs per step (same for every step)")
    parser.add_argument("--lr", type=float, default=None,
                        help=f"fine-tuning learning rate (default {Budget.lr:g}, or the rate a sample's card declares: digits32_vit 2e-4)")
    parser.add_argument("--batch-size", type=int, default=Budget.batch_size,
                        help="fine-tuning batch size (large batches, e.g. 1024, keep a GPU busy)")
    parser.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE", help="any method setting, repeatable; over a sample card's own, field by field (digits32_vit: distill width 1, depth 0.5)")
    for method in METHODS.values():
        parser.add_argument(f"--{method.name.replace('_', '-')}-{method.strength.replace('_', '-')}", dest=_strength_dest(method),
                            type=float if isinstance(getattr(method.default_config(), method.strength), float) else int,
                            help=f"{method.title}: {method.strength} (default {getattr(method.default_config(), method.strength)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordercomp", description="Find the order in which to apply compression methods to a vision network (CNN or ViT).")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explore", help="pairwise comparison of orders -> precedence graph -> chain")
    _common(ex)
    ex.add_argument("--methods", help=f"comma-separated, from {','.join(METHODS)} (default: a sample's own, e.g. digits32_vit's "
                    "include token_merge; else distill,prune,quantize,early_exit)")
    ex.add_argument("--objective", default="weighted", help="weighted (default: accuracy + weight x halvings of BitOps), "
                    "weighted_latency (the same with latency in --runtime), accuracy, bitops or latency")
    ex.add_argument("--weight", type=float, default=1.0, help="weighted objectives: accuracy points per halving of the cost")
    ex.add_argument("--runtime", default="eager", help="where the latency objectives time every step: eager (PyTorch), or the "
                    "runtime of an export format (onnx, onnx_int8, packed, pt2, torchscript): the order is chosen for that runtime")
    ex.add_argument("--search", help="how the chain is chosen: surrogate (the default: the pairwise chain and orders that put "
                    "every method at every position, then whole orders a model of the evaluated ones proposes, at most 2x the "
                    "pairwise applications per seed; then extra seeds for the orders still in contention, 2.5x in all), "
                    "pairwise (the paper's precedence graph), random (random orders, same budget) or exhaustive (every order)")
    ex.add_argument("--screen", type=float, metavar="FRACTION", help="search at this fraction of the fine-tuning epochs "
                    "(e.g. 0.25) and confirm only the best orders at the full budget: cheaper, safe where the cheap ranking "
                    "agrees with the full one (see the README)")
    ex.add_argument("--settle", type=int, default=0, metavar="APPLICATIONS", help="when the recommended order could still "
                    "trail an order it cannot be separated from by more than the margin that counts (0.5 accuracy points), "
                    "race those orders on more seeds until none could, spending at most this many more method applications "
                    "(default 0: never; with the same --cache, a rerun with --settle repeats nothing already run)")
    ex.add_argument("--confidence", type=float, default=0.95, help="confidence of each pair's interval (default 0.95)")
    ex.add_argument("--seeds", type=int, default=3, help="repeat every comparison over this many seeds")
    ex.add_argument("--exhaustive", action="store_true", help="also run every permutation and rank the found chain")
    ex.add_argument("--repeat", help="apply this method once more after the chain and report whether it helps")
    ex.add_argument("--ship", default=SHIPPED_FORMAT, help="the format the recommended chain (and the base it is compared with) is "
                    "written in, checked and timed in at the end, as the headline: onnx (the default), onnx_int8 (against "
                    "the base as float ONNX), pt2, torchscript or packed; none for no file")
    ex.add_argument("--out", default="runs/latest", help="folder for results (JSON and CSV)")
    ex.add_argument("--cache", default=".ordercomp/cache", help="step cache folder ('' to disable)")
    ex.add_argument("--quiet", action="store_true", help="no progress bars")
    ex.add_argument("--executor", default="inprocess", choices=EXECUTORS,
                    help="run the steps in this process, or as Ray tasks (pip install 'ordercomp[ray]')")
    ex.add_argument("--ray-address", help="Ray cluster to use: auto or HOST:PORT (default: start a local one)")
    ap = sub.add_parser("apply", help="apply a chain to the model and export the compressed model")
    _common(ap)
    ap.add_argument("--chain", required=True, help="comma-separated methods in order, e.g. distill,prune,quantize,early_exit")
    ap.add_argument("--export", required=True, metavar="DIR", help="folder for the compressed model and its manifest")
    ap.add_argument("--formats", help="export formats (default: all: torchscript, pt2, onnx, onnx_int8, packed, state_dict)")
    ap.add_argument("--no-measure", action="store_true", help="skip timing each file in its runtime against the base")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=".ordercomp/cache", help="step cache folder: an exploration's chain with the same "
                    "settings is reused from it instead of trained again ('' to disable)")
    me = sub.add_parser("measure", help="measure a base model: accuracy, size, MACs, BitOps, latency, peak memory")
    _base_options(me)
    me.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split to measure on")
    me.add_argument("--cache", default=".ordercomp/cache", help="where an architecture or class trained here keeps its weights ('' for nowhere)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    try:
        with stopped_by_sigterm():
            return {"explore": run_explore, "apply": run_apply, "measure": run_measure}[args.command](args)
    except (ValueError, OSError) as error:
        print(f"ordercomp: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        resume = "finished steps are cached, run the same command to resume" if args.cache else "nothing was cached (--cache '')"
        print(f"ordercomp: interrupted; {resume}", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT)


class Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, a container stopping): the command stops as on Ctrl-C."""


def _terminate(signum, frame):
    raise Terminated


@contextlib.contextmanager
def stopped_by_sigterm():
    """While the command runs, SIGTERM stops it as Ctrl-C does (files are left whole, one line says how to resume)
    instead of ending the process where it stands; the handler before is restored after."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _model_args(args) -> dict:
    from .models.factories import check_args

    return check_args(args.model_args)


def _budget(args) -> Budget:
    from .exploration.explorer import default_budget

    lr = args.lr if args.lr is not None else default_budget(args.model).lr
    return Budget(epochs=args.epochs, lr=lr, batch_size=args.batch_size)


def _spec(args):
    from .exploration.explorer import ExploreSpec, ship_choice

    return ExploreSpec(
        model=args.model, data=args.data, model_args=_model_args(args), weights=args.weights, ema=args.ema,
        normalize=args.normalize, crop=args.crop, methods=tuple(parse_methods(args.methods)) if args.methods is not None else None, settings=parse_settings(args),
        objective=args.objective, weight=args.weight, seeds=args.seeds, budget=_budget(args),
        confidence=args.confidence, **({"search": args.search} if args.search else {}), screen=args.screen,
        settle=args.settle, device=args.device, exhaustive=args.exhaustive, repeat=args.repeat, architecture=args.arch, input_size=args.input_size,
        trust_torchscript=args.trust_torchscript, classifier=args.classifier, stages=args.stages,
        executor=args.executor, ray_address=args.ray_address, runtime=args.runtime,
        ship=ship_choice(args.ship),
    )


def check_cache_apart(cache: str, option: str, folder: str) -> None:
    """Refuse, before any work, a step cache in the folder the results go to: its files would make that folder
    one ordercomp cannot replace its results in, found only when the run is over."""
    if cache and Path(folder).resolve() in (Path(cache).resolve(), *Path(cache).resolve().parents):
        raise ValueError(f"--cache {cache} is inside {option} {folder}: keep the step cache in a folder of its own "
                         "(the default is .ordercomp/cache)")


def run_explore(args) -> int:
    from .exploration.explorer import explore
    from .exploration.results import check_results_folder, print_summary, write_results

    spec = _spec(args)
    seen = check_results_folder(args.out)
    check_cache_apart(args.cache, "--out", args.out)
    bar = None if args.quiet else ProgressBar()
    result = explore(spec, cache_dir=args.cache or None, events=bar)
    if bar:
        bar.close()
    print_summary(result)
    print(f"\nresults written to {write_results(result, args.out, seen)}")
    return 0


def run_apply(args) -> int:
    from .exploration.explorer import compress
    from .deploy.export import DEFAULT_FORMATS, check_export_folder, export_bytes, export_compressed, print_export
    from .deploy.kept_files import kept_in
    from .exploration.results import print_chain_steps

    chain = parse_methods(args.chain)
    formats = args.formats.split(",") if args.formats is not None else DEFAULT_FORMATS  # "" names none, not all
    model_args, settings, budget = _model_args(args), parse_settings(args), _budget(args)
    Normalization.parse(args.normalize)
    seen = check_export_folder(args.export, formats, export_bytes(args.model, formats, args.weights))
    check_cache_apart(args.cache, "--export", args.export)
    bar = ProgressBar()
    outcome = compress(model=args.model, data=args.data, chain=chain, settings=settings, budget=budget, device=args.device,
                       architecture=args.arch, model_args=model_args, weights=args.weights, ema=args.ema, normalize=args.normalize,
                       crop=args.crop, input_size=args.input_size, seed=args.seed, events=bar, trust_torchscript=args.trust_torchscript,
                       classifier=args.classifier, stages=args.stages, cache_dir=args.cache or None)
    bar.close()
    print_chain_steps(outcome.base_metrics, outcome.steps)
    broken = [s for s in outcome.steps if s.status != "ok"]
    if broken:
        raise ValueError(f"{chain_text(broken[0].chain)} is {broken[0].status}: {broken[0].reason}")
    with kept_in(args.cache or None):
        manifest = export_compressed(outcome.model, args.export, formats=formats, chain=chain,
                                     configs=outcome.configs, metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                                     base_model=outcome.base, measure=not args.no_measure, reused=outcome.reused, seen=seen)
    if outcome.reused:
        print("the chain's model is the one an exploration with the same settings trained (from the cache): no method was applied again")
    print_export(manifest)
    print(f"compressed model and manifest written to {args.export}: {', '.join(manifest['files'])}")
    return 0


def run_measure(args) -> int:
    from .exploration.explorer import check_stage_names, prepare_base, resolve_device
    from .metrics import measure

    bar = ProgressBar()
    base, source, data = prepare_base(args.model, args.data, architecture=args.arch, model_args=_model_args(args),
                                      weights=args.weights, ema=args.ema, normalize=args.normalize, crop=args.crop,
                                      input_size=args.input_size,
                                      device=args.device, cache_dir=args.cache or None, events=bar,
                                      trust_torchscript=args.trust_torchscript, classifier=args.classifier,
                                      stages=check_stage_names(args.stages))
    bar.close()
    metrics = measure(base, data, args.split, device=resolve_device(args.device))
    split = len(data.split(args.split))
    print(f"model: {describe_source(source)}")
    print(f"data: {data.name}, {args.split} split of {split} images; {describe_preprocessing(data.preprocessing)}")
    for label, value in measure_lines(metrics):
        print(f"{label}: {value}")
    return 0


def measure_lines(metrics) -> list[tuple[str, str]]:
    """One (figure, value) per line of `ordercomp measure`."""
    latency = lambda ms: "not measured" if ms is None else f"{ms:.3f} ms"
    return [("accuracy", f"{metrics.accuracy:.2f} %"), ("parameters", f"{metrics.params:,}"),
            ("size", f"{metrics.size_bytes / 1024:.1f} KiB"), ("MACs", f"{metrics.macs:,.0f}"), ("BitOps", f"{metrics.bitops:.4g}"),
            ("latency at batch 1", latency(metrics.latency_ms_b1)), ("latency at batch 32", latency(metrics.latency_ms_batch)),
            ("peak memory", "not measured" if metrics.peak_memory_bytes is None else f"{metrics.peak_memory_bytes / 2**20:.2f} MiB")]


class ProgressBar:
    """A one-line text progress bar on stderr, fed by exploration events."""

    def __init__(self, width: int = 28):
        self.width, self.done, self.total, self.started = width, 0, 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def __call__(self, event: dict) -> None:
        if event["kind"] == "step":
            self.done, self.total = event["done"], event["total"]
            result = event["result"]
            note = "" if result["status"] == "ok" else f" [{result['status']}]"
            self._draw(f"{chain_text(result['chain'])} (seed {result['seed']}){note}", newline=not self.tty)
        elif event["kind"] == "stage":
            self._draw(event["label"], newline=True)
        elif event["kind"] == "progress" and self.tty:
            self._draw(f"{event['label']} {event['fraction']:4.0%}")

    def _draw(self, label: str, newline: bool = False) -> None:
        filled = int(self.width * self.done / self.total) if self.total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.started:5.0f}s {label}"
        # a line that stays is written whole (it may say what was recognised in a weights file); the live one fits the terminal
        sys.stderr.write(("\r" + line[:110].ljust(110)) if self.tty and not newline else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


if __name__ == "__main__":
    sys.exit(main())
