"""Specs of the job kinds besides explorations: preparing a base model, and exporting a chain.

An exploration job's spec is an `ExploreSpec`. These two are plain JSON-ready dataclasses that
need no torch, so a dashboard page can build, compare and list them without loading the engine.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

DEVICES = ("auto", "cpu", "cuda")


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")


def _check_trust(trust_torchscript) -> None:
    if not isinstance(trust_torchscript, bool):
        raise ValueError(f"trust_torchscript must be true or false, got {trust_torchscript!r}")


def _check_base(model_args, weights, normalize, ema, crop) -> None:
    """The base's own options: checked in full where the base is built; here only their kinds."""
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, (int, float))):
        raise ValueError(f"crop must be a number (the share of the shorter side kept) or null, got {crop!r}")
    if not isinstance(ema, bool):
        raise ValueError(f"ema must be true or false, got {ema!r}")
    if not isinstance(model_args, dict):
        raise ValueError(f"model_args must be an object of keyword arguments, got {model_args!r}")
    if weights is not None and not isinstance(weights, str):
        raise ValueError(f"weights must be a path, got {weights!r}")
    if not isinstance(normalize, str):
        raise ValueError(f"normalize must be text (dataset, none or MEAN,STD), got {normalize!r}")


@dataclass
class BaselineSpec:
    """Prepare the base model (a sample, a checkpoint, or a zoo architecture trained on `data`) and
    measure it on the test split: accuracy, parameters, size, MACs, BitOps and latency. A
    TorchScript base runs code from its file: only with `trust_torchscript`."""

    model: str = "digits_cnn"
    data: str = "digits"
    architecture: str | None = None
    input_size: int | None = None
    device: str = "auto"
    trust_torchscript: bool = False
    model_args: dict = field(default_factory=dict)  # for a registered factory
    weights: str | None = None
    normalize: str = "dataset"
    ema: bool = False  # read the checkpoint's EMA weights
    crop: float | None = None  # an ImageFolder tree's images centre-cropped (load_data)

    def __post_init__(self):
        _check_device(self.device)
        _check_trust(self.trust_torchscript)
        _check_base(self.model_args, self.weights, self.normalize, self.ema, self.crop)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> "BaselineSpec":
        return cls(**record)


@dataclass
class ExportSpec:
    """Apply `chain` to the base model with the given settings and budget, then write the
    compressed model in `formats` (every format when empty) with its manifest."""

    model: str
    data: str
    chain: tuple[str, ...]
    architecture: str | None = None
    input_size: int | None = None
    device: str = "auto"
    settings: dict[str, dict] = field(default_factory=dict)
    budget: dict = field(default_factory=dict)
    seed: int = 0
    formats: tuple[str, ...] = ()
    exploration: str | None = None  # the exploration job the settings came from, if any
    trust_torchscript: bool = False  # a TorchScript base runs code from its file
    model_args: dict = field(default_factory=dict)
    weights: str | None = None
    normalize: str = "dataset"
    ema: bool = False
    crop: float | None = None

    def __post_init__(self):
        self.chain, self.formats = tuple(self.chain), tuple(self.formats)
        if not self.chain:
            raise ValueError("the order to export is empty: pick at least one method")
        _check_device(self.device)
        _check_trust(self.trust_torchscript)
        _check_base(self.model_args, self.weights, self.normalize, self.ema, self.crop)
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        # compress() accepts settings only for the methods of its chain
        self.settings = {name: fields for name, fields in self.settings.items() if name in self.chain}

    @classmethod
    def from_exploration(cls, record: dict, chain, *, formats=(), seed: int = 0, exploration: str | None = None) -> "ExportSpec":
        """The base, data, preprocessing, settings, budget, device and trust of an exploration record, with another chain."""
        spec = record["spec"]
        return cls(model=spec["model"], data=spec["data"], chain=tuple(chain), architecture=spec["architecture"],
                   input_size=spec["input_size"], device=spec["device"], settings=spec["settings"], budget=spec["budget"],
                   seed=seed, formats=tuple(formats), exploration=exploration,
                   trust_torchscript=spec.get("trust_torchscript", False), model_args=spec.get("model_args", {}),
                   weights=spec.get("weights"), normalize=spec.get("normalize", "dataset"), ema=spec.get("ema", False),
                   crop=spec.get("crop"))

    def to_dict(self) -> dict:
        record = asdict(self)
        record["chain"], record["formats"] = list(self.chain), list(self.formats)
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "ExportSpec":
        return cls(**record)
