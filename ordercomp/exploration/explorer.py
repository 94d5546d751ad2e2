"""The Order of Compression procedure: pairwise comparisons, precedence graph, chain, validation.

For every pair {A, B} of the chosen methods, A->B and B->A are applied to the same base model
with the same seeds and budget; single-method results are shared by the pairs (n + n(n-1)
applications per seed). Pair decisions become a precedence graph whose topological order is the
paper's chain; the search (ordercomp.order.recommend) then evaluates whole orders (with two seeds or
more, on the first seed, then its best on the others), races the contenders on extra seeds and says
how sure the evidence is. The recommended chain is applied to
the base and measured step by step on the test split.

With `screen`, the pairs and the whole orders of the search are trained for that fraction of the
fine-tuning epochs, and only the best of them are confirmed at the full budget.
"""
from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import torch
from torch import nn

from .. import order
from .cache import STOPPED_WHILE_RUNNING, StepCache, chain_key, content_key, environment, step_key
from ..models.checkpoints import (describe_source, input_size_for, list_samples, model_label, read_state_dict,
                                  resolve_model, sample_card, save_state_atomically, state_fingerprint)
from ..models.factories import check_args, code_fingerprint
from ..models.programs import ProgramModel, measure_only_reason
from ..data.datasets import DataBundle, check_crop, data_label, load_data
from ..data.preprocessing import Normalization, repeat_channels
from ..models.structure import base_fingerprint, structure_of, with_structure
from ..models.weights import with_versions_of
from ..fields import number, typed_fields
from .executors import StepFunction, Work, check_executor, make_executor, probe_cluster
from ..deploy.kept_files import kept_in
from ..deploy.export import PROGRAM_FORMATS, SHIPPED_FORMAT, deployed_latency, shipped_figures
from ..deploy.runtimes import require_onnxruntime
from ..methods.base import Context, config_to_dict
from ..methods.registry import method_names
from ..metrics import measure, unpack_hits
from ..order import OBJECTIVES, chain_text
from .pipeline import FAILED, OK, StepResult, apply_chain, make_configs, run_step
from ..train import Budget, slow_batchnorms, train

DEFAULT_METHODS = ("distill", "prune", "quantize", "early_exit")
SEARCHES = tuple(order.STRATEGIES)
RUNTIMES = ("eager",) + PROGRAM_FORMATS
BASE_BUDGET = Budget(epochs=20, lr=3e-3)
BASE_RECIPE = "train, then BatchNorm statistics recomputed"  # in the key of a base it changes (slow BatchNorms)
Events = Callable[[dict], None]


def default_methods(model: str) -> tuple[str, ...]:
    """The methods an exploration compares unless told: a sample's own (its card's `methods`: digits32_vit's
    include token merging, which a CNN cannot take), else DEFAULT_METHODS."""
    return tuple(_card_of(model).get("methods", DEFAULT_METHODS))


def default_budget(model: str) -> Budget:
    """The fine-tuning budget unless told: at a sample's own rate where its card declares one (`fine_tune_lr`:
    digits32_vit's 2e-4, at which its steps keep their accuracy better than at the CNNs' 2e-3), else Budget()."""
    card = _card_of(model)
    return Budget(lr=card["fine_tune_lr"]) if "fine_tune_lr" in card else Budget()


def default_settings(model, methods, settings: dict | None = None) -> dict[str, dict]:
    """The method settings unless told, field by field: the given ones over a sample's own for the chosen methods (its
    card's `settings`: digits32_vit's student keeps its width and drops half its blocks, where narrowing a ViT's
    embedding cost its 3-epoch student 23 points)."""
    own = {name: values for name, values in _card_of(model).get("settings", {}).items() if name in methods}
    given = settings or {}
    if not isinstance(given, dict) or not all(isinstance(values, dict) for values in given.values()):
        raise ValueError("settings map a method to its fields, e.g. {'prune': {'ratio': 0.3}}")
    return {name: {**own.get(name, {}), **given.get(name, {})} for name in {**own, **given}}


def _card_of(model) -> dict:
    return sample_card(model) if isinstance(model, str) and model in list_samples() else {}


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when present, else the CPU; asking for CUDA without a GPU is an error."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda was asked for but no CUDA GPU is available: use --device cpu or auto")
    return torch.device("cuda" if device != "cpu" and torch.cuda.is_available() else "cpu")


def prepare_base(model="digits_cnn", data="digits", *, architecture: str | None = None, model_args: dict | None = None,
                 weights: str | None = None, normalize: str = "dataset", input_size: int | None = None, device: str = "auto",
                 cache_dir=None, events: Events | None = None, trust_torchscript: bool = False,
                 import_code: bool = True, classifier: str | None = None,
                 stages: tuple[str, ...] | None = None, ema: bool = False, crop: float | None = None) -> tuple[nn.Module, dict, DataBundle]:
    """The base model (a sample, a checkpoint, a program file, a zoo architecture trained once per cache, or a
    user's class: see `resolve_model`), where it came from, and the data as it takes them (`data` is anything
    `load_data` reads; gray images are repeated for a model whose first convolution takes 3 channels).
    TorchScript runs only with `trust_torchscript`, a user's file or module is imported only with `import_code`;
    `ema` reads the EMA weights of a checkpoint that holds them beside the training weights; `crop` centre-crops an
    ImageFolder tree's images as torchvision's Resize then CenterCrop do (`load_data`).
    A network from outside the zoo gets its structure found (or the named `classifier` and `stages`)
    once here, and the source records it."""
    events = events or (lambda event: None)
    bundle = load_data(data, input_size=input_size_for(model, input_size), normalize=normalize, crop=crop)
    target = resolve_device(device)
    cache = StepCache(cache_dir)
    events({"kind": "stage", "stage": "base", "label": "preparing the base model"})
    trainer = lambda untrained, data: _train_base(untrained, data, target, cache, events)
    base, source = resolve_model(model, bundle, architecture=architecture, model_args=model_args, weights=weights, train_base=trainer,
                                 trust_torchscript=trust_torchscript, import_code=import_code, ema=ema)
    if source.get("in_channels", bundle.in_channels) != bundle.in_channels:
        bundle = repeat_channels(bundle, source["in_channels"])
    base = with_structure(base, bundle.example_input(2), bundle.num_classes, classifier=classifier, stages=stages)
    if structure_of(base):
        source = source | {"structure": structure_of(base).to_dict()}
    events({"kind": "stage", "stage": "base", "label": f"base: {describe_source(source)}"})
    return base.to(target).eval(), source, bundle


def _train_base(model: nn.Module, data: DataBundle, device: torch.device, cache: StepCache, events: Events) -> nn.Module:
    """Train a zoo architecture or a user's class once per (initial weights, data, budget; for a class that is
    not ordercomp's own, its code too; device and libraries); later runs reuse the weights."""
    code = {} if type(model).__module__.startswith("ordercomp.") else {"code": code_fingerprint(model)}
    recipe = {"recipe": BASE_RECIPE} if slow_batchnorms(model) else {}  # other bases came out the same before it
    key = content_key(init=state_fingerprint(model), data=data.fingerprint(), budget=BASE_BUDGET.to_dict(),
                      environment=environment(device.type), **code, **recipe)
    saved = cache.folder / f"base-{key}.safetensors" if cache.folder else None
    if saved and saved.exists():
        model.load_state_dict(with_versions_of(model, read_state_dict(saved)))
        return model
    progress = lambda label, fraction: events({"kind": "progress", "label": "train base", "fraction": fraction})
    train(model, data, BASE_BUDGET, seed=0, device=device, progress=progress)
    if saved:
        cache.keep(lambda: save_state_atomically(model, saved))
    return model


@dataclass
class ExploreSpec:
    """Everything an exploration depends on; JSON-serialisable."""

    model: str = "digits_cnn"
    data: str = "digits"
    model_args: dict = field(default_factory=dict)  # keyword arguments of a FILE.py:NAME / package.module:NAME factory
    weights: str | None = None  # weights for a factory's model or a zoo architecture
    ema: bool = False  # read the EMA weights of the checkpoint (weights, or a model file with architecture)
    normalize: str = "dataset"  # preprocessing.Normalization: dataset, none or MEAN,STD
    crop: float | None = None  # an ImageFolder tree's images: the shorter side to input_size / crop, then the centre
    methods: tuple[str, ...] | None = None  # None: default_methods(model)
    settings: dict[str, dict] = field(default_factory=dict)  # over a sample's own: default_settings(model, methods)
    objective: str = "weighted"
    weight: float = 1.0
    seeds: int = 3
    budget: Budget | None = None  # None: default_budget(model)
    device: str = "auto"
    exhaustive: bool = False
    repeat: str | None = None
    min_margin: float = 0.5
    confidence: float = 0.95
    search: str = order.DEFAULT_STRATEGY
    architecture: str | None = None
    input_size: int | None = None
    trust_torchscript: bool = False
    executor: str = "inprocess"
    ray_address: str | None = None
    runtime: str = "eager"  # where the latency objectives time each step: PyTorch eager or an export format's runtime
    screen: float | None = None  # search at this fraction of the fine-tuning epochs, confirm the best at the full budget
    settle: int = 0  # applications that may race the orders still in contention on more seeds while the choice is open
    classifier: str | None = None  # the layer giving the logits, when tracing cannot find it (models.structure)
    stages: tuple[str, ...] | None = None  # the modules whose outputs end the stages, when tracing cannot find them
    ship: str | None = SHIPPED_FORMAT  # the format the chain and the base are written in and timed as the headline; None: neither

    def __post_init__(self):
        for name, call in (("model", "model=net"), ("data", "data=(images, labels)")):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be text (what the command line's --{name} takes): hand a Python object to "
                                 f"explore(spec, {call}) or compress({call}), which record what it was")
        checked = typed_fields(ExploreSpec, {k: v for k, v in vars(self).items() if k not in ("budget", "methods", "settings", "model_args", "stages")})
        vars(self).update(checked)
        self.model_args = check_args(self.model_args)
        Normalization.parse(self.normalize)
        check_crop(self.crop)
        self.stages = check_stage_names(self.stages)
        self.budget = default_budget(self.model) if self.budget is None else self.budget
        if not isinstance(self.budget, Budget):
            raise ValueError(f"budget must be a Budget, got {type(self.budget).__name__}")
        self.methods = tuple(method_names(self.methods)) if self.methods is not None else default_methods(self.model)
        self.settings = default_settings(self.model, self.methods, self.settings)
        if len(self.methods) < 2 or len(set(self.methods)) != len(self.methods):
            raise ValueError("choose at least two different methods to compare orders")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {self.objective!r}: choose one of {', '.join(OBJECTIVES)}")
        if self.search not in SEARCHES:
            raise ValueError(f"unknown search strategy {self.search!r}: choose one of {', '.join(SEARCHES)}")
        if self.search == "exhaustive" and len(self.methods) > order.MAX_EXHAUSTIVE_METHODS:
            raise ValueError(f"exhaustive search takes at most {order.MAX_EXHAUSTIVE_METHODS} methods")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), e.g. 0.95, got {self.confidence}")
        if not 1 <= self.seeds <= 50:
            raise ValueError(f"seeds must be between 1 and 50, got {self.seeds}")
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")
        if self.weight < 0:  # a negative weight would reward compressing less
            raise ValueError(f"weight must be >= 0 accuracy points per halving of the cost, got {self.weight}")
        if self.exhaustive and len(self.methods) > order.MAX_EXHAUSTIVE_METHODS:
            raise ValueError(f"exhaustive mode takes at most {order.MAX_EXHAUSTIVE_METHODS} methods")
        if self.repeat is not None and self.repeat not in self.methods:
            raise ValueError(f"--repeat {self.repeat} must be one of the chosen methods")
        check_screen(self.screen, self.search)
        order.recommend.check_settle(self.settle, self.search)
        check_executor(self.executor, self.ray_address)
        check_runtime(self.runtime, self.objective)
        check_ship(self.ship)
        self.torch_device()
        make_configs(self.methods, self.settings)

    def to_dict(self) -> dict:
        record = asdict(self)
        record["methods"] = list(self.methods)
        record["stages"] = list(self.stages) if self.stages else None
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "ExploreSpec":
        record = dict(record)
        record["budget"] = Budget(**record.get("budget", {}))
        return cls(**record)

    @property
    def search_fidelity(self) -> float:
        """The fraction of the fine-tuning epochs the pairs and the search's whole orders get."""
        return 1.0 if self.screen is None else self.screen

    def planned_applications(self) -> dict:
        """The method applications this exploration takes at most, known before it starts: per seed the plan
        (pairwise, or every prefix with exhaustive validation) or the search's budget around it (never more than
        every order), times the seeds it runs on (a one-seed search: the first; the others get the pairwise plan);
        `beyond`, those at the full budget after the search (a confirmation of the best orders on the other seeds,
        the race's extra seeds for the orders in contention: as many as the budget allows, since how many the race
        needs shows only as it runs); `settle`, those that may go on more seeds for the orders still in contention
        while the choice is open; plus the chain applied once to the base on the test split. Progress counts
        against `total`, so it only moves forward; a search that finds its order sooner ends below it. `cost` counts
        a screened application as its fraction of the epochs (for the time estimate)."""
        n, fidelity = len(self.methods), self.search_fidelity
        pairwise, exhaustive = order.pairwise_applications(n), order.exhaustive_applications(n)
        one_seed = order.recommend.searches_one_seed(self.search, self.seeds, self.screen)
        per_seed = pairwise if self.search == "pairwise" else min(
            order.recommend.search_budget_per_seed(n, self.seeds, self.search, self.screen), exhaustive)
        # with every order run, the search's orders cost nothing new, and what it spent bounds the race no longer
        beyond = order.recommend.full_budget_allowance(n, self.seeds, self.search, self.screen,
                                                       search_per_seed=None if self.exhaustive else per_seed)
        searched, validated = order.recommend.search_applications(n, self.seeds, per_seed, one_seed), 0
        if self.exhaustive:  # every order's prefixes at the full budget on the spec's seeds
            per_seed, validated = exhaustive, exhaustive * self.seeds
            searched = 0 if self.screen is None else searched  # an unscreened search's orders are among them
        return {"pairwise_per_seed": pairwise, "exhaustive_per_seed": exhaustive, "per_seed": per_seed, "seeds": self.seeds,
                "search_seeds": 1 if one_seed else self.seeds,
                "beyond": beyond, "settle": self.settle, "chain": n, "total": validated + searched + beyond + self.settle + n,
                "cost": validated + fidelity * searched + beyond + self.settle + n}

    @property
    def timed(self) -> bool:
        """Whether every step's latency is measured (the latency objectives)."""
        return self.objective in order.LATENCY_OBJECTIVES

    def torch_device(self) -> torch.device:
        """Where this process trains and measures. With Ray, whether the cluster has the GPU that cuda
        asks for is checked when connecting to it (executors.RayExecutor)."""
        return resolve_device("auto" if self.executor == "ray" and self.device == "cuda" else self.device)


@dataclass
class Exploration:
    """What an exploration found: every step result, the pair decisions, the graph and the chain."""

    spec: dict
    base: dict
    base_metrics: dict
    steps: list[dict]
    outcomes: list[dict]
    edges: list[dict]
    dropped_edges: list[dict]
    valid_chains: list[list[str]]
    chain: list[str]
    chain_steps: list[dict]
    applications: dict
    exhaustive: dict | None
    repeat: dict | None
    weak_pairs: int
    seconds: float
    configs: dict
    search: dict | None = None
    data: dict | None = None  # DataBundle.describe(): the splits and the preprocessing every figure was measured with
    left_out: list[dict] = field(default_factory=list)  # methods that applied on no seed, with why
    failed_steps: list[dict] = field(default_factory=list)  # steps that raised an error, with the error's line
    device: str | None = None  # where the steps ran ("cpu", "cuda:0"), the spec's "auto" resolved
    # What ships: the chain's model and the base, each written as spec.ship (float ONNX by default) and measured in
    # its runtime after warm-up (`deploy.export.shipped_figures`): {format, runtime, file_bytes, accuracy (test split,
    # percent), latency_ms: {"1", "32"}, threads, check (against PyTorch, whole test split), base: {format, runtime,
    # file_bytes, accuracy, latency_ms}, speedup: {"1", "32"} (base ms / chain ms), size_ratio (base bytes / chain
    # bytes), cpu: {model, logical_cores, flags}, load: {start, end, logical_cores} (the 1-minute load average while
    # both were timed, `runtimes.machine_load`)}; {format, runtime, error} when it could not be built or run;
    # None when spec.ship is None or the chain stopped early.
    shipped: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class OrderFound:
    """The evidence and the chain, before the chain is applied on the test split."""

    steps: list[StepResult]
    outcomes: list[order.PairOutcome]
    dag: object
    dropped: list[tuple[str, str, float]]
    chain: list[str]
    search: dict | None
    apart: list[dict] = field(default_factory=list)  # methods left out because another can share no chain with them


def left_out(methods: tuple[str, ...], steps: list[StepResult]) -> list[dict]:
    """The methods that applied to the base on no seed, each with its first try's status and reason:
    the chain is found among the others."""
    applied = {s.chain[0] for s in steps if len(s.chain) == 1 and s.status == OK}
    first_try = lambda method: next(s for s in steps if s.chain == (method,))
    return [{"method": m, "status": first_try(m).status, "reason": first_try(m).reason or "it failed"} for m in methods if m not in applied]


def keep_apart(usable: list[str], steps: list[StepResult], score_of: Callable[[StepResult], float],
               higher_is_better: bool) -> tuple[list[str], list[dict]]:
    """(methods kept, methods left out with why): of two methods that applied in neither order on any seed (quantize
    at 4 bits and int8: each refuses to follow the other), every chain holding both fails, so the one whose step on
    the base scored lower is left out and the chain is found among the others."""
    tried = {s.chain for s in steps if len(s.chain) == 2}
    paired = {s.chain for s in steps if len(s.chain) == 2 and s.status == OK}
    single = lambda method: statistics.fmean(score_of(s) for s in steps if s.chain == (method,) and s.status == OK)
    kept, apart = list(usable), []
    for a, b in itertools.combinations(usable, 2):
        exclusive = {(a, b), (b, a)} <= tried and not {(a, b), (b, a)} & paired
        if a in kept and b in kept and exclusive:
            worse, other = (a, b) if (single(a) < single(b)) == higher_is_better else (b, a)
            reason = next((s.reason for s in steps if s.chain in ((a, b), (b, a)) and s.reason), "neither order applied")
            kept.remove(worse)
            apart.append({"method": worse, "status": "incompatible", "with": other,
                          "reason": f"it can share no chain with {other}, in either order ({reason}); of the two, its step on the base scored lower"})
    return kept, apart


def usable_methods(methods: tuple[str, ...], steps: list[StepResult]) -> list[str]:
    dropped = {entry["method"] for entry in left_out(methods, steps)}
    return [m for m in methods if m not in dropped]


def no_order_reason(methods: tuple[str, ...], steps: list[StepResult], outcomes: list[order.PairOutcome]) -> str | None:
    """Why there is no order to recommend, or None: no method applied to the base on any seed, or no
    two of those that did can follow each other in either order."""
    usable = usable_methods(methods, steps)
    if not usable:
        first = left_out(methods, steps)[0]
        return f"{', '.join(methods)} cannot be applied to this model ({first['method']}: {first['reason']}): no method is left to order"
    pairs = [o for o in outcomes if o.first in usable and o.second in usable]
    if pairs and all(o.incompatible for o in pairs):
        return f"no two of the methods can follow each other on this model ({pairs[0].incompatible}): choose other methods"
    return None


def failed_steps(steps: list[StepResult]) -> list[dict]:
    """Every step that raised an error (not an incompatibility), with its one-line reason."""
    return [{"chain": list(s.chain), "seed": s.seed, "reason": s.reason} for s in steps if s.status == FAILED]


def edge_record(before: str, after: str, data: dict, outcomes: list[order.PairOutcome]) -> dict:
    """A precedence edge with its pair's interval, oriented so that positive favours `before` first."""
    record = {"before": before, "after": after, **data}
    outcome = next(o for o in outcomes if {o.first, o.second} == {before, after})
    if outcome.low is not None:
        low, high = (outcome.low, outcome.high) if outcome.first == before else (-outcome.high, -outcome.low)
        record |= {"low": low, "high": high, "confidence": outcome.confidence}
    return record


def ranked_orders(results: list[StepResult], score_of: Callable[[StepResult], float], higher_is_better: bool) -> list[dict]:
    """Chains whose every seed applied, best first, with mean score, standard error and seed count."""
    by_chain: dict[tuple, list[StepResult]] = {}
    for result in results:
        by_chain.setdefault(result.chain, []).append(result)
    rows = []
    for chain, group in by_chain.items():
        if _all_ok(group):
            scores = [score_of(r) for r in group]
            se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else 0.0
            rows.append({"chain": list(chain), "score": statistics.fmean(scores), "se": se, "seeds": len(scores)})
    return sorted(rows, key=lambda row: -row["score"] if higher_is_better else row["score"])


def _unique(steps: list[StepResult]) -> list[StepResult]:
    """One result per (chain, seed, fidelity), in the order first run."""
    first: dict[tuple, StepResult] = {}
    for step in steps:
        first.setdefault((step.chain, step.seed, step.fidelity), step)
    return list(first.values())


def _all_ok(results: list[StepResult]) -> bool:
    return bool(results) and all(r.status == OK for r in results)


def score(metrics: dict, objective: str, base: dict, weight: float) -> float:
    """A step's score under `objective`; `base` holds the base model's bitops and latency_ms_b1."""
    if objective == "accuracy":
        return metrics["accuracy"]
    if objective == "bitops":
        return metrics["bitops"]
    if objective == "latency":
        return metrics["latency_ms_b1"]
    cost = "latency_ms_b1" if objective == "weighted_latency" else "bitops"
    return order.weighted_score(metrics["accuracy"], metrics[cost], base[cost], weight)


def check_screen(screen: float | None, search: str) -> None:
    """Refuse a screen that is not a fraction of the epochs, or one with a search that evaluates no whole order."""
    if screen is None:
        return
    if not 0 < screen < 1:
        raise ValueError(f"screen must be a fraction of the fine-tuning epochs between 0 and 1, e.g. 0.25, got {screen}")
    if search == "pairwise":
        raise ValueError("screening needs a search that evaluates whole orders (surrogate, random or exhaustive), not pairwise")


def check_stage_names(stages) -> tuple[str, ...] | None:
    """Stage names as a tuple of module names ('layer1,layer2' or a list), or None; a ValueError for anything else."""
    if stages is None:
        return None
    names = tuple(part.strip() for part in stages.split(",")) if isinstance(stages, str) else stages
    if not isinstance(names, (tuple, list)) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"stages must name modules whose outputs end the stages, e.g. layer1,layer2,layer3; got {stages!r}")
    return tuple(names)


def check_ship(ship: str | None) -> None:
    """None, or a format whose file runs in a runtime (what `Exploration.shipped` measures)."""
    if ship is not None and ship not in PROGRAM_FORMATS:
        raise ValueError(f"unknown format to ship {ship!r}: choose one of {', '.join(PROGRAM_FORMATS)}, or {NO_SHIP}")


NO_SHIP = "none"  # what the CLI's --ship and the Methods page call shipping no file


def ship_choice(choice: str) -> str | None:
    """ExploreSpec.ship for a user's choice: the format, or None for NO_SHIP."""
    return None if choice == NO_SHIP else choice


def check_runtime(runtime: str, objective: str) -> None:
    """Refuse an unknown runtime, one the latency objectives do not use, or one that is not installed."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    if runtime != "eager" and objective not in order.LATENCY_OBJECTIVES:
        raise ValueError(f"a runtime only changes where latency is measured: use it with objective "
                         f"{' or '.join(order.LATENCY_OBJECTIVES)}, not {objective}")
    if runtime.startswith("onnx"):
        require_onnxruntime()


class Explorer:
    """Runs the steps of an exploration, sharing prefixes and caching results on disk."""

    def __init__(self, spec: ExploreSpec, *, cache_dir=None, events: Events | None = None, data=None, model=None,
                 import_code: bool = True):
        """`data` and `model`, when given, stand for the spec's (a DataBundle or anything `load_data` reads; an
        nn.Module, its class or a function returning one); `import_code` lets a FILE.py:NAME or package.module:NAME
        model be imported (the dashboard's workers build only registered factories)."""
        self.spec, self.events = spec, events or (lambda event: None)
        self.model, self.import_code = model, import_code
        self._deepest = len(spec.methods)
        self._executor = None
        self._steps_done = 0
        self.device = spec.torch_device()
        self.data = load_data(spec.data if data is None else data, input_size=input_size_for(spec.model, spec.input_size),
                              normalize=spec.normalize, crop=spec.crop)
        self.source: dict = {}
        self.cache = StepCache(cache_dir)
        self._cache_stop_said = False
        self.data_fingerprint = self.data.fingerprint()
        self.configs = make_configs(spec.methods, spec.settings)
        self.config_dicts = {name: config_to_dict(name, c) for name, c in self.configs.items()}

    def load_base(self) -> tuple[nn.Module, dict]:
        """The base and where it came from; the data become what the base takes (gray repeated for 3 channels)."""
        # the driver's device: with Ray, a GPU the steps ask for may be on another node
        base, self.source, self.data = prepare_base(
            self.spec.model if self.model is None else self.model, self.data, architecture=self.spec.architecture,
            model_args=self.spec.model_args, weights=self.spec.weights, device=self.spec.torch_device().type,
            cache_dir=self.cache.folder, events=self.events, trust_torchscript=self.spec.trust_torchscript, import_code=self.import_code,
            classifier=self.spec.classifier, stages=self.spec.stages, ema=self.spec.ema)
        self.data_fingerprint = self.data.fingerprint()
        return base, self.source

    def run_plan(self, base: nn.Module, plan: list[tuple[str, ...]], *, seeds: Sequence[int] | None = None,
                 fidelity: float = 1.0) -> list[StepResult]:
        """Every chain of `plan` for every seed (the spec's 0..k-1 unless `seeds` names others, as the race
        does), trained for `fidelity` of the fine-tuning epochs, by the spec's executor (executors.py); results
        go through the step cache under the same keys whichever executor computes them."""
        if self._executor is None:  # one executor per exploration: in-process, it keeps prefix models for later plans
            self._executor = make_executor(self.spec.executor, self.spec.ray_address, device=self.spec.device)
        budget = replace(self.spec.budget, epochs=self.spec.budget.epochs * fidelity)
        fingerprint, budget_record = base_fingerprint(base, self.source), budget.to_dict()
        timed = self.spec.timed
        # a timed result is kept apart from an untimed one (which has no latency) and per runtime
        measured = f"val+latency@{self.spec.runtime}" if timed else "val"
        where = environment(self._executor.step_device(self.device))
        key = lambda chain, seed: step_key(fingerprint, self.data_fingerprint, chain, self.config_dicts, seed, budget_record, measured, where)
        step = StepFunction(self.configs, budget, latency=timed, runtime=self.spec.runtime)
        work = Work(base, self.data, step, key, self.cache, self.device, self._counting_steps_so_far(), keep_below=self._deepest)
        results = self._executor.run(work, plan, list(range(self.spec.seeds)) if seeds is None else list(seeds))
        self._steps_done += len(results)
        return [replace(result, fidelity=fidelity) for result in results]

    def _counting_steps_so_far(self) -> Events:
        """Step events counted over the whole exploration, not per plan (the search runs several); after the step whose
        write stopped the step cache, a stage event says so while the run goes on (the CLI's line, the job's log)."""
        offset = self._steps_done

        def forward(event: dict) -> None:
            self.events(self._counted(event, event["done"] + offset) if event.get("kind") == "step" else event)
            if self.cache.stopped and not self._cache_stop_said:
                self._cache_stop_said = True
                self.events({"kind": "stage", "stage": "cache", "label": STOPPED_WHILE_RUNNING.format(self.cache.stopped)})
        return forward

    def _counted(self, event: dict, done: int) -> dict:
        """A step event with `done` against the planned total, known at the start, so progress only moves forward
        (the total grows only if more ran than planned, which the plan rules out)."""
        return event | {"done": done, "total": max(self.spec.planned_applications()["total"], done)}

    def _chain_step_done(self, step: StepResult) -> None:
        """A step of the chain applied to the base on the test split: counted in the progress, no pair's evidence."""
        self._steps_done += 1
        self.events(self._counted({"kind": "step", "result": step.to_dict(), "split": "test"}, self._steps_done))

    def _context(self, seed: int, chain) -> Context:
        label = chain_text(chain)
        progress = lambda step, fraction: self.events({"kind": "progress", "label": f"{label}: {step}", "fraction": fraction, "seed": seed})
        return Context(self.data, self.spec.budget, seed, self.device, progress)

    def close(self) -> None:
        """Release what the executor holds (kept models, a Ray session it started)."""
        if self._executor is not None:
            self._executor.close()

    def explore(self) -> Exploration:
        try:
            with kept_in(self.cache.folder):  # a rerun ships its chain and base without exporting them again
                return self._explore()
        finally:
            self.close()

    def _explore(self) -> Exploration:
        start = time.perf_counter()
        if self.spec.executor == "ray":
            probe_cluster(self.spec.ray_address)  # a wrong address or token is one line before the base is prepared
        base, source = self.load_base()
        if isinstance(base, ProgramModel):
            raise ValueError(measure_only_reason(base.kind, source["path"]))
        found = self.find_order(base)
        reason = no_order_reason(self.spec.methods, found.steps, found.outcomes)
        if reason:
            cached = self.cache.folder and not self.cache.stopped  # a full disk stopped the cache: a rerun computes them again
            raise ValueError(reason + (" (the steps that ran are cached, so a rerun reuses them)" if cached else ""))
        chain = found.chain
        self.events({"kind": "stage", "stage": "chain", "label": f"applying the chain {chain_text(chain)}"})
        base_test = measure(base, self.data, "test", device=self.device).to_dict()
        key = chain_key(base_fingerprint(base, self.source), self.data_fingerprint, chain, self.config_dicts, 0,
                        self.spec.budget.to_dict(), environment(self.device.type))
        final, chain_steps, _ = apply_chain_once(base, chain, self.configs, self._context(0, chain), self.cache, key,
                                                 on_step=self._chain_step_done)
        return Exploration(
            spec=self.spec.to_dict(), base={k: v for k, v in source.items() if k != "card"} | {"fingerprint": base_fingerprint(base, source)},
            base_metrics=base_test, steps=[s.to_dict() for s in found.steps], outcomes=[o.to_dict() for o in found.outcomes],
            edges=[edge_record(u, v, d, found.outcomes) for u, v, d in found.dag.edges(data=True)],
            dropped_edges=[{"before": u, "after": v, "margin": m} for u, v, m in found.dropped],
            valid_chains=order.valid_chains(found.dag, limit=order.LISTED_ORDERS), chain=chain, chain_steps=[s.to_dict() for s in chain_steps],
            applications=self.application_counts(), exhaustive=self.exhaustive_summary(found.steps, chain),
            repeat=self.try_repeat(final, chain) if self.spec.repeat else None,
            weak_pairs=sum(o.weak_evidence for o in found.outcomes if o.incompatible is None),
            seconds=time.perf_counter() - start, configs=self.config_dicts, search=found.search, data=self.data.describe(),
            left_out=left_out(self.spec.methods, found.steps) + found.apart, failed_steps=failed_steps(found.steps + chain_steps),
            device=str(self.device),
            shipped=self.ship(final, base, chain_steps),
        )

    def ship(self, final: nn.Module, base: nn.Module, chain_steps: list[StepResult]) -> dict | None:
        """The chain's deployable file next to the base's, measured where they run (see Exploration.shipped)."""
        if self.spec.ship is None or any(step.status != OK for step in chain_steps):
            return None
        self.events({"kind": "stage", "stage": "ship", "label": f"writing the chain and the base as {self.spec.ship} and timing them"})
        return shipped_figures(final, base, self.data, fmt=self.spec.ship)

    def measure_base(self, base: nn.Module) -> None:
        """The base's validation BitOps, and its latency in the spec's runtime for the latency objectives:
        what the weighted objectives score every step against."""
        eager = self.spec.runtime == "eager"
        metrics = measure(base, self.data, "val", device=self.device, latency=self.spec.timed and eager).to_dict()
        if self.spec.timed and not eager:
            metrics |= deployed_latency(base, self.data, self.spec.runtime)
        self._base = {"bitops": metrics["bitops"], "latency_ms_b1": metrics["latency_ms_b1"]}

    def find_order(self, base: nn.Module) -> "OrderFound":
        """Run the plan (pairwise, and every order with --exhaustive), decide every pair, build the
        precedence graph, then let the chosen search strategy pick the chain."""
        self.measure_base(base)
        methods, fidelity = self.spec.methods, self.spec.search_fidelity
        self._deepest = len(methods)
        if self.spec.exhaustive and fidelity == 1.0:  # the pairs are part of every order's prefixes
            steps = self.run_plan(base, order.exhaustive_plan(methods))
        else:
            steps = self.run_plan(base, order.pairwise_plan(methods), fidelity=fidelity)
            steps += self.run_plan(base, order.exhaustive_plan(methods)) if self.spec.exhaustive else []
        outcomes = self.decide([s for s in steps if s.fidelity == fidelity])
        usable, apart = keep_apart(usable_methods(methods, steps), steps, self._score_of, OBJECTIVES[self.spec.objective][0])
        usable = usable or list(methods)  # none applied: no_order_reason says so
        among = [o for o in outcomes if o.first in usable and o.second in usable]
        dag, dropped = order.break_cycles(order.precedence_graph(usable, among))
        if len(usable) < 2:
            return OrderFound(steps, outcomes, dag, dropped, usable, None, apart)
        chain, search, steps = self.search(base, usable, steps, among, order.recommended_chain(dag, among))
        return OrderFound(steps, outcomes, dag, dropped, chain, search, apart)

    def search(self, base: nn.Module, methods: list[str], steps: list[StepResult], outcomes, pairwise_chain: list[str]):
        """(chain, search record, every step run) for the spec's search strategy over `methods` (those that
        applied to the base): the pairwise chain, or the order that the search, its race and its assessment
        (order.recommend_order) recommend."""
        steps = list(steps)
        found = order.recommend_order(methods, self.spec.search, self._measure(base, steps), outcomes=outcomes,
                                seeds=self.spec.seeds, higher_is_better=OBJECTIVES[self.spec.objective][0],
                                confidence=self.spec.confidence, screen=self.spec.screen, margin=self._margin(),
                                settle=self.spec.settle)
        chain = list(found.chain) if found.evidence else pairwise_chain
        return chain, found.to_dict(), _unique(steps)

    def _measure(self, base: nn.Module, steps: list[StepResult]) -> order.recommend.Measure:
        """recommend_order's measure: runs the prefixes not run yet for those seeds at that fidelity (appending
        to `steps`) and returns each chain's trials, or None when a seed could not apply it."""
        def measure(chains, seeds, fidelity):
            seeds = list(seeds)
            done = {(s.chain, s.seed) for s in steps if s.fidelity == fidelity}
            prefixes = dict.fromkeys(p for chain in chains for p in order.search.prefixes(chain))
            plan = [p for p in prefixes if any((p, seed) not in done for seed in seeds)]
            if plan:
                steps.extend(self.run_plan(base, plan, seeds=seeds, fidelity=fidelity))
            found = {(s.chain, s.seed): s for s in steps if s.fidelity == fidelity}
            return {chain: self._trials([found[(chain, seed)] for seed in seeds]) for chain in chains}
        return measure

    def _trials(self, results: list[StepResult]) -> dict[int, order.Trial] | None:
        """Per seed, the chain's score and (accuracy objectives) per-image correctness; None unless every seed applied it."""
        if not _all_ok(results):
            return None
        hits = self._hits(results) or [None] * len(results)
        return {r.seed: order.Trial(score, None if h is None else tuple(h))
                for r, score, h in zip(sorted(results, key=lambda r: r.seed), self._scores(results), hits)}

    def decide(self, steps: list[StepResult]) -> list[order.PairOutcome]:
        """A pair outcome for every pair, from the per-seed scores of both orders."""
        by_chain: dict[tuple, list[StepResult]] = {}
        for step in steps:
            by_chain.setdefault(step.chain, []).append(step)
        methods = self.spec.methods
        return [self._decide_pair(a, b, by_chain.get((a, b), []), by_chain.get((b, a), []))
                for i, a in enumerate(methods) for b in methods[i + 1:]]

    def _decide_pair(self, a: str, b: str, ab: list[StepResult], ba: list[StepResult]) -> order.PairOutcome:
        higher = OBJECTIVES[self.spec.objective][0]
        ab_ok, ba_ok = _all_ok(ab), _all_ok(ba)
        if ab_ok and ba_ok:
            return order.decide_pair(a, b, self._scores(ab), self._scores(ba),
                                     higher_is_better=higher, min_margin=self._margin(), confidence=self.spec.confidence,
                                     images_first_then_second=self._hits(ab), images_second_then_first=self._hits(ba))
        broken = next((s for s in ab + ba if s.status != OK), None)
        reason = f"{chain_text(broken.chain)}: {broken.reason}" if broken else "not run"
        one_way_blocked = broken is not None and all(s.status in (OK, "incompatible") for s in ab + ba)
        if one_way_blocked and (ab_ok or ba_ok):
            return order.only_order_pair(a, b, a if ab_ok else b, reason, higher_is_better=higher)
        return order.incompatible_pair(a, b, reason, higher_is_better=higher)

    def _scores(self, results: list[StepResult]) -> list[float]:
        return [self._score_of(r) for r in sorted(results, key=lambda r: r.seed)]

    def _hits(self, results: list[StepResult]) -> list[list[int]] | None:
        """Per seed, which validation images the chain got right: the paired per-image evidence of
        objectives built on accuracy (None for cost objectives, or results cached before it was kept)."""
        packed = [r.metrics.get("correct") for r in sorted(results, key=lambda r: r.seed)]
        if self.spec.objective not in order.ACCURACY_OBJECTIVES or None in packed:
            return None
        return [unpack_hits(p) for p in packed]

    def _margin(self) -> float:
        return self.spec.min_margin if self.spec.objective in order.ACCURACY_OBJECTIVES else 0.0

    def application_counts(self) -> dict:
        n = len(self.spec.methods)
        return {"methods": n, "seeds": self.spec.seeds, "pairwise_per_seed": order.pairwise_applications(n),
                "exhaustive_per_seed": order.exhaustive_applications(n), "naive_exhaustive_per_seed": order.naive_exhaustive_applications(n),
                "cache_hits": self.cache.hits, "cache_stopped": self.cache.stopped}

    def exhaustive_summary(self, steps: list[StepResult], chain: list[str]) -> dict | None:
        """Every full order ranked by its mean score over seeds, and where the recommended chain lands:
        its rank and regret (the best order's mean minus the chain's, oriented so that larger is worse)."""
        if not self.spec.exhaustive:
            return None
        n, higher = len(self.spec.methods), OBJECTIVES[self.spec.objective][0]
        ground = [s for s in steps if len(s.chain) == n and s.fidelity == 1.0 and s.seed < self.spec.seeds]  # the race's seeds aside
        orders = ranked_orders(ground, self._score_of, higher)
        means = {tuple(o["chain"]): o["score"] for o in orders}
        found = means.get(tuple(chain))
        regret = None if found is None or not orders else abs(orders[0]["score"] - found)
        return {"orders": orders, "rank": order.rank_of_chain(chain, means, higher_is_better=higher) if found is not None else None,
                "of": len(orders), "regret": regret, "best_se": orders[0]["se"] if orders else None,
                "applications_pairwise": order.pairwise_applications(n) * self.spec.seeds,
                "applications_exhaustive": order.exhaustive_applications(n) * self.spec.seeds,
                "cost_ratio": order.exhaustive_applications(n) / order.pairwise_applications(n)}

    def _score_of(self, result: StepResult) -> float:
        return score(result.metrics, self.spec.objective, self._base, self.spec.weight)

    def try_repeat(self, model: nn.Module, chain: list[str]) -> dict:
        """Apply the repeat method once more after the chain and compare on the test split."""
        before = measure(model, self.data, "test", device=self.device, latency=False).to_dict()
        _, result = run_step(model, tuple(chain) + (self.spec.repeat,), self.configs, self._context(0, chain), split="test")
        helps = result.status == OK and result.metrics["bitops"] < before["bitops"] and result.metrics["accuracy"] >= before["accuracy"] - 1.0
        return {"method": self.spec.repeat, "before": before, "after": result.to_dict(), "helps": helps}


@dataclass
class Compressed:
    """A chain applied to a base model: the compressed model and the evidence for it."""

    model: nn.Module
    steps: list[StepResult]
    base_metrics: dict
    configs: dict
    data: DataBundle
    source: dict
    base: nn.Module | None = None  # the uncompressed model, for measuring exports against it
    reused: bool = False  # the model is the one an exploration (or an earlier compress) kept under the same key


def compress(model="digits_cnn", data="digits", chain=DEFAULT_METHODS, *, settings=None, budget: Budget | None = None,
             device: str = "auto", architecture: str | None = None, model_args: dict | None = None, weights: str | None = None,
             normalize: str = "dataset", input_size: int | None = None, seed: int = 0, cache_dir=None,
             events: Events | None = None, trust_torchscript: bool = False, import_code: bool = True,
             classifier: str | None = None, stages=None, ema: bool = False, crop: float | None = None) -> Compressed:
    """Apply `chain` to the base model and measure every step on the test split. `model` and `data` are
    what `prepare_base` takes: names and paths as on the command line, or Python objects. `classifier` and `stages`
    name the parts of a network whose structure tracing cannot find (see ExploreSpec)."""
    chain = method_names(chain)
    if not chain:
        raise ValueError("the chain is empty: name at least one method")
    if number("seed", seed, int) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    configs = make_configs(list(dict.fromkeys(chain)), default_settings(model, chain, settings))
    events = events or (lambda event: None)
    base, source, bundle = prepare_base(model, data, architecture=architecture, model_args=model_args, weights=weights,
                                        normalize=normalize, input_size=input_size, device=device, cache_dir=cache_dir,
                                        events=events, trust_torchscript=trust_torchscript, import_code=import_code,
                                        classifier=classifier, stages=check_stage_names(stages), ema=ema, crop=crop)
    target = resolve_device(device)
    base_metrics = measure(base, bundle, "test", device=target).to_dict()
    progress = lambda label, fraction: events({"kind": "progress", "label": label, "fraction": fraction, "seed": seed})
    context = Context(bundle, budget or default_budget(model), seed, target, progress)
    report = lambda step: events({"kind": "step", "result": step.to_dict(), "done": len(step.chain), "total": len(chain)})
    config_dicts = {name: config_to_dict(name, c) for name, c in configs.items()}
    key = chain_key(base_fingerprint(base, source), bundle.fingerprint(), chain, config_dicts, seed, context.budget.to_dict(),
                    environment(target.type))
    final, steps, reused = apply_chain_once(base, chain, configs, context, StepCache(cache_dir), key, on_step=report)
    return Compressed(final, steps, base_metrics, config_dicts, bundle, source, base, reused)


def apply_chain_once(base: nn.Module, chain: list[str], configs: dict, context: Context, cache: StepCache, key: str,
                     on_step=None) -> tuple[nn.Module, list[StepResult], bool]:
    """`apply_chain` on the test split, or the model and steps kept under `key` (the chain, base, data,
    configs, seed, budget and environment: cache.chain_key) when an exploration or an earlier call already
    applied it; the last item says which. A chain that applies to the end is kept for the next call."""
    kept = cache.get_chain(key)
    if kept is not None:
        model, steps = kept
        for step in steps:
            if on_step:
                on_step(step)
        return model.to(context.device).eval(), steps, True
    final, steps = apply_chain(base, chain, configs, context, latency=True, on_step=on_step)
    if all(step.status == OK for step in steps):
        cache.put_chain(key, final, steps)
    return final, steps, False


def explore(spec: ExploreSpec | None = None, *, model=None, data=None, cache_dir=".ordercomp/cache",
            events: Events | None = None) -> Exploration:
    """Run the whole Order of Compression procedure for `spec` (defaults: the embedded digits example).

    `model` (an nn.Module, its class, or a function returning one) and `data` (a torch Dataset, a
    (train, val, test) triple, or (images, labels) tensors) stand for the spec's; the spec and the result
    record what they were (object:<class>), and the cache keys their weights, code and images."""
    spec = spec or ExploreSpec()
    if model is not None:
        spec = replace(spec, model=model_label(model))
    if data is not None:
        spec = replace(spec, data=data_label(data))
    return Explorer(spec, cache_dir=cache_dir, events=events, model=model, data=data).explore()
