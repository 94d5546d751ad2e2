"""The forms of the Model & data and Methods pages and the specs they make: widget keys and
defaults from the method registry, the ExploreSpec of the current choices, the baseline and export specs.

Widget values live in session state under keys starting with `w_` (their widgets keep them across
page switches with `persist_state="session"`).
"""
from __future__ import annotations

import json
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from ..data.datasets import DEFAULT_INPUT_SIZE, FOLDER_INPUT_SIZE
from ..jobs import BaselineSpec, ExportSpec
from ..order import LATENCY_OBJECTIVES
from .session import base_choice

WIDGET_PREFIX = "w_"
DEFAULTS_FOR = "w_defaults_for"  # session key: the base whose own defaults (methods, settings, rate) the widgets took
NO_REPEAT = "(none)"
DATA_SOURCES = {"digits": "Embedded digits (default)", "folder": "A folder on this machine (CIFAR-10/100 or ImageFolder)",
                "zip": "Upload a zip of an ImageFolder tree"}
MODEL_SOURCES = {"sample": "Sample model", "zoo": "Train a zoo architecture", "upload": "Upload a checkpoint",
                 "registered": "Your model (registered by this server)"}
# what 0 gives, per source: a tree of 16-px images is resized to 32 px unless a size is given ("the data's own" misled)
INPUT_SIZE_LABEL = (f"Input size in pixels (0: {DEFAULT_INPUT_SIZE} for digits; {FOLDER_INPUT_SIZE} for a CIFAR folder or an "
                    "ImageFolder tree, its images resized to it; an .npz file's own)")
CROP_LABEL = ("Centre crop of an ImageFolder tree's images (0: none, each image resized whole to a square; 0.875: the "
              "shorter side to 256 px and the centre 224 px kept, as torchvision's Resize then CenterCrop)")
NORMALIZE_CHOICES = {"dataset": "the training split's mean and std (default)", "none": "none: pixel values in 0..1",
                     "given": "given numbers (MEAN,STD)"}


def describe_base(choice: dict) -> str:
    size = f", {choice['input_size']} px" if choice.get("input_size") else ""
    architecture = f" ({choice['architecture']})" if choice.get("architecture") else ""
    args = f" {json.dumps(choice['model_args'])}" if choice.get("model_args") else ""
    weights = f" with weights {Path(choice['weights']).name}" if choice.get("weights") else ""
    ema = ", its EMA weights" if choice.get("ema") else ""
    trusted = ", its TorchScript code trusted" if choice.get("trust_torchscript") else ""
    crop = f", centre crop {choice['crop']:g}" if choice.get("crop") else ""
    normalize = f", normalize {choice['normalize']}" if choice.get("normalize", "dataset") != "dataset" else ""
    return (f"{Path(choice['model']).name}{architecture}{args}{weights}{ema} on {Path(choice['data']).name}{size}{crop}"
            f"{normalize}{trusted}")


def base_options(choice: dict) -> dict:
    """The spec fields every job kind takes from the Model & data page's choice (older choices lack the newer ones)."""
    return {"model": choice["model"], "data": choice["data"], "architecture": choice.get("architecture"),
            "input_size": choice.get("input_size"), "trust_torchscript": choice.get("trust_torchscript", False),
            "model_args": choice.get("model_args") or {}, "weights": choice.get("weights"),
            "normalize": choice.get("normalize") or "dataset", "ema": bool(choice.get("ema")), "crop": choice.get("crop")}


def registered_choice(name: str, args_text: str) -> tuple[str, dict]:
    """(name, model arguments) of a registered factory picked on the page; a ValueError says what is wrong. Only a
    name the server's operator registered passes: a path or reference typed anywhere is never imported."""
    from ..models.checkpoints import registered_models
    from ..models.factories import check_args

    registered = registered_models()
    if name not in registered:
        raise ValueError(f"{name!r} is not a model factory registered on this server ({', '.join(sorted(registered)) or 'none'}): "
                         "the dashboard imports no path typed into it; the server's operator registers factories")
    return name, check_args(args_text)


def trains_here(choice: dict) -> bool:
    """Whether the base is trained by its baseline job: a zoo architecture, or a registered factory without weights."""
    from ..models.checkpoints import registered_models
    from ..models.zoo import ARCHITECTURES

    try:
        registered = registered_models()
    except ValueError:  # a malformed registration is reported where factories are chosen
        registered = {}
    return choice["model"] in ARCHITECTURES or (choice["model"] in registered and not choice.get("weights"))


def baseline_spec(choice: dict, device: str = "auto") -> BaselineSpec:
    return BaselineSpec(**base_options(choice), device=device)


def export_spec(record: dict, chain, formats, exploration: str) -> ExportSpec:
    return ExportSpec.from_exploration(record, chain, formats=formats, exploration=exploration)


def settle_spec(record: dict, settle: int):
    """The exploration of `record` again, allowed `settle` applications to settle an open choice on more seeds (the
    shared step cache gives back every step it ran, so only the new seeds cost)."""
    from ..exploration.explorer import ExploreSpec

    return ExploreSpec.from_dict(record["spec"] | {"settle": settle})


@dataclass(frozen=True)
class Setting:
    """One field of a method's config, as a widget shows it."""

    method: str
    name: str
    default: object
    choices: tuple | None
    strength: bool

    @property
    def key(self) -> str:
        return f"{WIDGET_PREFIX}{self.method}.{self.name}"


def method_settings(method) -> list[Setting]:
    """The fields of a registry method's config, its strength knob first."""
    settings = [Setting(method.name, f.name, f.default if f.default is not MISSING else f.default_factory(),
                        tuple(f.metadata["choices"]) if "choices" in f.metadata else None, f.name == method.strength)
                for f in fields(method.config_type)]
    return sorted(settings, key=lambda s: not s.strength)


def plan_defaults() -> dict:
    """Widget keys of the Methods page and their starting values: the engine's defaults."""
    from ..exploration.explorer import NO_SHIP, ExploreSpec
    from ..methods.registry import METHODS

    spec = ExploreSpec()
    defaults = {"w_methods": list(spec.methods), "w_objective": spec.objective, "w_weight": spec.weight, "w_seeds": spec.seeds,
                "w_epochs": spec.budget.epochs, "w_lr": spec.budget.lr, "w_device": spec.device, "w_exhaustive": spec.exhaustive,
                "w_min_margin": spec.min_margin, "w_repeat": NO_REPEAT, "w_executor": spec.executor, "w_ray_address": "",
                "w_search": spec.search, "w_runtime": spec.runtime, "w_settle": spec.settle, "w_ship": spec.ship or NO_SHIP}
    for method in METHODS.values():
        defaults |= {s.key: s.default for s in method_settings(method)}
    return defaults


def base_defaults(model: str) -> dict:
    """The Methods page's values that belong to the base: a sample's own methods, method settings and fine-tuning rate
    (digits32_vit compares token merging, its student drops blocks, and it fine-tunes at 2e-4, where the CNNs' 2e-3
    costs its steps points), else the engine's."""
    from ..exploration.explorer import default_budget, default_methods, default_settings
    from ..methods.registry import METHODS

    own = default_settings(model, tuple(METHODS))
    settings = {s.key: own.get(s.method, {}).get(s.name, s.default) for method in METHODS.values() for s in method_settings(method)}
    return {"w_methods": list(default_methods(model)), "w_lr": default_budget(model).lr} | settings


def follow_base(state) -> bool:
    """Give the methods, their settings and the learning rate the chosen base's defaults, where not yet set, and again
    whenever the base changes: a ViT sample chosen after a CNN gets its own. True when it replaced values set for
    another base."""
    model = base_choice(state)["model"]
    if state.get(DEFAULTS_FOR) == model:
        return False
    changed = DEFAULTS_FOR in state
    for key, value in base_defaults(model).items():
        if changed or key not in state:
            state[key] = value
    state[DEFAULTS_FOR] = model
    return changed


def plan_from_state(state):
    """The ExploreSpec the current choices make (a choice not made: the engine's default, or the base's own: see
    `follow_base`); a ValueError says what is impossible about them."""
    from ..exploration.executors import check_served_ray_address
    from ..exploration.explorer import ExploreSpec, ship_choice
    from ..methods.registry import get_method
    from ..train import Budget

    defaults = plan_defaults() | base_defaults(base_choice(state)["model"])
    value = lambda key: state.get(key, defaults[key])
    methods = tuple(value("w_methods"))
    settings = {}
    for name in methods:
        changed = {s.name: value(s.key) for s in method_settings(get_method(name)) if value(s.key) != defaults[s.key]}
        if changed:
            settings[name] = changed
    repeat = value("w_repeat")
    choice = base_choice(state)
    ray_address = (value("w_ray_address") or "").strip() or None
    check_served_ray_address(ray_address)
    return ExploreSpec(**base_options(choice), methods=methods, settings=settings, objective=value("w_objective"),
                       weight=float(value("w_weight")), seeds=int(value("w_seeds")),
                       budget=Budget(epochs=float(value("w_epochs")), lr=float(value("w_lr"))), device=value("w_device"),
                       exhaustive=bool(value("w_exhaustive")), min_margin=float(value("w_min_margin")),
                       repeat=None if repeat in (None, NO_REPEAT) or repeat not in methods else repeat, search=value("w_search"),
                       settle=int(value("w_settle")) if value("w_search") != "pairwise" else 0,  # the widget is hidden then
                       executor=value("w_executor"), ray_address=ray_address,
                       runtime=value("w_runtime") if value("w_objective") in LATENCY_OBJECTIVES else "eager",
                       ship=ship_choice(value("w_ship")))
