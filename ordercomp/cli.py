"""Command line: `ordercomp explore` finds the order, `ordercomp apply` compresses and exports.

    ordercomp explore                      # the embedded default: digits, 4 methods
    ordercomp explore --methods prune,quantize --seeds 5 --out runs/x
    ordercomp apply --chain distill,prune,quantize,early_exit --export out/

Bad input prints one line saying what to fix and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import sys
import time

from .exploration.executors import EXECUTORS
from .methods.registry import METHODS, parse_methods
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


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="digits_cnn", help="sample model name, zoo architecture, or checkpoint path")
    parser.add_argument("--arch", help="architecture of a state-dict checkpoint given to --model")
    parser.add_argument("--data", default="digits", help="'digits' or a CIFAR-10/100 / ImageFolder path")
    parser.add_argument("--input-size", type=int, help="resize images to this many pixels")
    parser.add_argument("--epochs", type=float, default=Budget.epochs, help="fine-tuning epochs per step (same for every step)")
    parser.add_argument("--lr", type=float, default=Budget.lr, help="fine-tuning learning rate")
    parser.add_argument("--batch-size", type=int, default=Budget.batch_size,
                        help="fine-tuning batch size (large batches, e.g. 1024, keep a GPU busy)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--trust-torchscript", action="store_true",
                        help="run a TorchScript --model file; it executes code from the file, so only for files you trust")
    parser.add_argument("--set", action="append", metavar="METHOD.FIELD=VALUE", help="any method setting, repeatable")
    for method in METHODS.values():
        parser.add_argument(f"--{method.name.replace('_', '-')}-{method.strength.replace('_', '-')}", dest=_strength_dest(method),
                            type=float if isinstance(getattr(method.default_config(), method.strength), float) else int,
                            help=f"{method.title}: {method.strength} (default {getattr(method.default_config(), method.strength)})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ordercomp", description="Find the order in which to apply CNN compression methods.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explore", help="pairwise comparison of orders -> precedence graph -> chain")
    _common(ex)
    ex.add_argument("--methods", default="distill,prune,quantize,early_exit", help=f"comma-separated, from {','.join(METHODS)}")
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
    ex.add_argument("--confidence", type=float, default=0.95, help="confidence of each pair's interval (default 0.95)")
    ex.add_argument("--seeds", type=int, default=3, help="repeat every comparison over this many seeds")
    ex.add_argument("--exhaustive", action="store_true", help="also run every permutation and rank the found chain")
    ex.add_argument("--repeat", help="apply this method once more after the chain and report whether it helps")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"explore": run_explore, "apply": run_apply}[args.command](args)
    except (ValueError, OSError) as error:
        print(f"ordercomp: error: {str(error).splitlines()[0] if str(error) else type(error).__name__}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ordercomp: interrupted; finished steps are cached, run the same command to resume", file=sys.stderr)
        return 130


def _budget(args) -> Budget:
    return Budget(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size)


def _spec(args):
    from .exploration.explorer import ExploreSpec

    return ExploreSpec(
        model=args.model, data=args.data, methods=tuple(parse_methods(args.methods)), settings=parse_settings(args),
        objective=args.objective, weight=args.weight, seeds=args.seeds, budget=_budget(args),
        confidence=args.confidence, **({"search": args.search} if args.search else {}), screen=args.screen,
        device=args.device, exhaustive=args.exhaustive, repeat=args.repeat, architecture=args.arch, input_size=args.input_size,
        trust_torchscript=args.trust_torchscript,
        executor=args.executor, ray_address=args.ray_address, runtime=args.runtime,
    )


def run_explore(args) -> int:
    from .exploration.explorer import explore
    from .exploration.results import check_results_folder, print_summary, write_results

    spec = _spec(args)
    check_results_folder(args.out)
    bar = None if args.quiet else ProgressBar()
    result = explore(spec, cache_dir=args.cache or None, events=bar)
    if bar:
        bar.close()
    print_summary(result)
    print(f"\nresults written to {write_results(result, args.out)}")
    return 0


def run_apply(args) -> int:
    from .exploration.explorer import compress
    from .deploy.export import DEFAULT_FORMATS, check_export_folder, export_bytes, export_compressed, print_export
    from .exploration.results import print_chain_steps

    chain = parse_methods(args.chain)
    formats = args.formats.split(",") if args.formats else DEFAULT_FORMATS
    check_export_folder(args.export, formats, export_bytes(args.model, formats))
    bar = ProgressBar()
    outcome = compress(model=args.model, data=args.data, chain=chain, settings=parse_settings(args),
                       budget=_budget(args), device=args.device, architecture=args.arch,
                       input_size=args.input_size, seed=args.seed, events=bar, trust_torchscript=args.trust_torchscript)
    bar.close()
    print_chain_steps(outcome.base_metrics, outcome.steps)
    broken = [s for s in outcome.steps if s.status != "ok"]
    if broken:
        raise ValueError(f"{' -> '.join(broken[0].chain)} is {broken[0].status}: {broken[0].reason}")
    manifest = export_compressed(outcome.model, args.export, formats=formats, chain=chain,
                                 configs=outcome.configs, metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                                 base_model=outcome.base, measure=not args.no_measure)
    print_export(manifest)
    print(f"compressed model and manifest written to {args.export}: {', '.join(manifest['files'])}")
    return 0


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
            self._draw(f"{' -> '.join(result['chain'])} (seed {result['seed']}){note}", newline=not self.tty)
        elif event["kind"] == "stage":
            self._draw(event["label"], newline=True)
        elif event["kind"] == "progress" and self.tty:
            self._draw(f"{event['label']} {event['fraction']:4.0%}")

    def _draw(self, label: str, newline: bool = False) -> None:
        filled = int(self.width * self.done / self.total) if self.total else 0
        bar = "#" * filled + "-" * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.started:5.0f}s {label}"[:110]
        sys.stderr.write(("\r" + line.ljust(110)) if self.tty and not newline else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


if __name__ == "__main__":
    sys.exit(main())
