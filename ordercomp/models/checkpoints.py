"""Where a base model comes from: a shipped sample, a zoo architecture (trained here, or with weights),
a user's class (`FILE.py:NAME`, `package.module:NAME`, a registered factory, or an object handed to
the API, see `factories.py`) with optional weights, or a whole-program file.

User files are read without executing anything from them: weights through `weights.py`
(`torch.load(weights_only=True)` or safetensors, framework layouts unwrapped), `.pt2` programs through
the checks of `programs.py`. TorchScript is code, so it loads only with `trust_torchscript=True`; a
user's Python class is code too, imported only where `import_code` allows (the command line and the
API; never the dashboard, which builds only registered factories, and runs TorchScript only where its
operator allows it: `factories.server_runs_torchscript`). A pickled module, a corrupt file
or mismatching names give one `CheckpointError` line.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.datasets import DataBundle
from ..folders import write_atomically
from .factories import (FactoryError, build, check_args, check_factory, code_fingerprint, describe_class, is_reference,
                        load_factory, registered_factories, server_runs_torchscript, torchscript_refused)
from ..data.preprocessing import repeat_channels
from .fitting import BUILD_HINT, PROGRAM_HINT, data_for
from .plain_weights import copyable_, float32_, fold_reparametrizations_, plain_notes, unwrapped
from .programs import TORCHSCRIPT, TORCHSCRIPT_SUFFIXES, ProgramError, load_pt2, load_torchscript, program_kind
from .weights import CheckpointError, NamesMisfit, load_weights, read_weights
from .zoo import ARCHITECTURES, INPUT_SIZES, RENAMED, create_model, renamed_message

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_models"
STATE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}
TIMM_ENDING = ".pth.tar"  # timm's train.py saves last.pth.tar and model_best.pth.tar
PROGRAM_SUFFIXES = {".pt2"} | TORCHSCRIPT_SUFFIXES
OBJECT_PREFIX = "object:"  # an ExploreSpec's model or data when the API was handed an object
CLASS_HINT = "build the model as the file was saved from it: the same class and arguments (e.g. --model-args '{\"num_classes\": N}')"


def list_samples() -> list[str]:
    return sorted(p.stem for p in SAMPLE_DIR.glob("*.json"))


def input_size_for(model: str, input_size: int | None) -> int | None:
    """The image size to load data at: the given one, else a sample model's own (digits32_resnet18
    was trained at 32 px; at the default 8 px it would score at chance), else the one size a zoo
    architecture takes (a ViT's position embeddings fix it)."""
    if input_size is None and model in list_samples():
        return sample_card(model).get("input_size")
    if input_size is None and model in INPUT_SIZES:
        return INPUT_SIZES[model]
    return input_size


def sample_card(name: str) -> dict:
    path = SAMPLE_DIR / f"{name}.json"
    if not path.exists():
        raise CheckpointError(f"unknown sample model {name!r}: choose one of {', '.join(list_samples()) or 'none'}")
    return json.loads(path.read_text())


def load_sample(name: str) -> nn.Module:
    card = sample_card(name)
    return load_state_file(SAMPLE_DIR / card["weights"], card["architecture"], card["num_classes"], card["in_channels"])[0]


def load_state_file(path: Path, architecture: str, num_classes: int, in_channels: int, *,
                    ema: bool = False) -> tuple[nn.Module, list[str]]:
    """An architecture from the zoo with weights (the EMA weights with `ema`) from a state-dict or safetensors file, and
    what was recognised in it."""
    model = create_model(architecture, num_classes, in_channels)
    notes = load_weights(model, path, f"{architecture} ({num_classes} classes, {in_channels} channel(s))", zoo_hint(architecture),
                         ema=ema)
    return model.eval(), notes


def zoo_hint(architecture: str) -> str:
    return (f"check the number of classes and channels; the zoo's {architecture} is ordercomp's own class, so weights saved from "
            "another class (torchvision's, your own) load with that class: --model FILE.py:NAME or package.module:NAME --weights FILE")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors or torch file (a framework's checkpoint unwrapped), refusing anything else."""
    return read_weights(path).tensors


def load_program(path: Path, *, trust_torchscript: bool = False) -> nn.Module:
    """A whole model from a torch.export archive (.pt2), or from TorchScript when the caller trusts the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        if program_kind(path) == TORCHSCRIPT:
            return load_torchscript(path, trusted=trust_torchscript)
        return load_pt2(path)
    except ProgramError as error:
        raise CheckpointError(str(error)) from None


def is_state_file(path: Path) -> bool:
    """Whether a file's name is one a state dict or a training framework's checkpoint is saved under."""
    return Path(path).suffix in STATE_SUFFIXES or Path(path).name.endswith(TIMM_ENDING)


def is_program(path: Path) -> bool:
    """Whether a file holds a whole program (.pt2 or TorchScript, judged by content, then suffix) rather than weights."""
    return program_kind(Path(path)) is not None


def is_torchscript(path: Path) -> bool:
    return program_kind(Path(path)) == TORCHSCRIPT


def resolve_model(spec, data: DataBundle, *, architecture: str | None = None, model_args: dict | None = None,
                  weights: str | None = None, train_base=None, trust_torchscript: bool = False,
                  import_code: bool = True, ema: bool = False) -> tuple[nn.Module, dict]:
    """The base model named by `spec`, and a description of where it came from.

    `spec` is a sample model name, a zoo architecture, a registered factory's name, a path (weights with
    `architecture`, or a program), a FILE.py:NAME or package.module:NAME reference (imported only with
    `import_code`), or an nn.Module class, instance or function handed to the API. A class or function is
    called with the data's classes and channels where it takes them and `model_args`. What a zoo
    architecture, a class or a function builds gets `weights`, or else is trained by `train_base(model, data)`
    when that is given (an instance is used with the weights it has).
    A TorchScript file runs code from it, so it is refused unless `trust_torchscript` is set.
    `ema` reads the EMA weights of a checkpoint that holds them beside the training weights.
    """
    weights = Weighting(weights, ema)
    _refuse_lone_ema(spec, weights, architecture)
    if not isinstance(spec, str):
        return _held_model(spec, data, model_args, weights, train_base)
    registered = registered_models()
    if spec in registered:
        return _factory_model(registered[spec], data, model_args, weights, train_base, {"source": "registered", "name": spec})
    if spec in RENAMED:
        raise CheckpointError(renamed_message(spec))
    _refuse_class_options(spec, model_args, weights)
    if spec in list_samples():
        card = sample_card(spec)
        _check_fits(card["num_classes"], card["in_channels"], data, spec)
        model = load_sample(spec)
        return model, {"source": "sample", "name": spec, "card": card} | _channels(model, data, spec)
    if spec in ARCHITECTURES:
        return _architecture(spec, data, weights, train_base)
    path = Path(spec).expanduser()
    if path.is_dir():
        raise CheckpointError(f"model {spec} is a folder: give a model file (a state dict, .safetensors, .pt2 or TorchScript), "
                              "a sample or architecture name, or FILE.py:NAME")
    if path.exists():
        if not import_code and not server_runs_torchscript() and is_torchscript(path):
            raise CheckpointError(torchscript_refused(path.name))
        return _model_file(path, data, architecture, trust_torchscript, ema)
    if is_reference(spec):
        if not import_code:
            raise FactoryError(f"{spec} is not a model factory registered on this server, and a typed reference is never "
                               f"imported here: registered are {', '.join(sorted(registered)) or 'none'}")
        return _factory_model(spec, data, model_args, weights, train_base, {"source": "factory"})
    if spec.startswith(OBJECT_PREFIX):
        raise CheckpointError(f"{spec} was a Python object handed to the API: hand it again (explore(spec, model=...), compress(model=...))")
    raise CheckpointError(f"model {spec!r} is neither a sample ({', '.join(list_samples())}), an architecture "
                          f"({', '.join(sorted(ARCHITECTURES))}), an existing file, FILE.py:NAME nor package.module:NAME")


def registered_models() -> dict[str, str]:
    """The model factories this server's operator registered (`factories.registered_factories`); a name that is
    already a sample's or a zoo architecture's is refused, since one of the two could never be chosen."""
    registered = registered_factories()
    taken = sorted(set(registered) & (set(list_samples()) | set(ARCHITECTURES)))
    if taken:
        raise FactoryError(f"the model factory registered as {taken[0]} has the name of a sample or zoo architecture: "
                           "register it under another name")
    return registered


def _refuse_lone_ema(spec, weights: "Weighting", architecture: str | None) -> None:
    """--ema is for a weights file: --weights, or a --model file with --arch."""
    if weights.ema and not weights.path and not (isinstance(spec, str) and architecture and Path(spec).expanduser().is_file()):
        raise CheckpointError(f"--ema (ema=True) reads the EMA weights of a checkpoint, and {model_label(spec)} is given none: "
                              "give it with --weights FILE, or as --model FILE with --arch")


def _refuse_class_options(spec: str, model_args, weights: "Weighting") -> None:
    """--model-args is for a class or function; --weights for one, or for a zoo architecture."""
    if model_args and not is_reference(spec):
        raise CheckpointError(f"--model-args is for a class or function (--model FILE.py:NAME, package.module:NAME or a "
                              f"registered factory), not for {spec}")
    if weights.path and not (spec in ARCHITECTURES or is_reference(spec)):
        raise CheckpointError(f"--weights is for a zoo architecture or a class (--model FILE.py:NAME, package.module:NAME); "
                              f"{spec} has its own weights")


def _architecture(name: str, data: DataBundle, weights: "Weighting", train_base) -> tuple[nn.Module, dict]:
    if weights.path:
        model, notes = load_state_file(Path(weights.path).expanduser(), name, data.num_classes, data.in_channels, ema=weights.ema)
        return model, ({"source": "checkpoint", "path": str(weights.path), "architecture": name} | _recognised(notes, weights.ema)
                       | _channels(model, data, name))
    if train_base is None:
        raise CheckpointError(f"{name} is an untrained architecture: give a trainer or a checkpoint")
    torch.manual_seed(0)  # the same untrained start in every process, so trained bases match across runs
    model = create_model(name, data.num_classes, data.in_channels)
    channels = _channels(model, data, name)
    fitted = data if channels["in_channels"] == data.in_channels else repeat_channels(data, channels["in_channels"])
    return train_base(model, fitted), {"source": "trained", "architecture": name} | channels


def _model_file(path: Path, data: DataBundle, architecture: str | None, trust_torchscript: bool,
                ema: bool) -> tuple[nn.Module, dict]:
    if is_program(path):
        program = load_program(path, trust_torchscript=trust_torchscript)
        data_for(program, data, path.name, PROGRAM_HINT, weighted=True)
        # the file's bytes: its graph and kind, not only its weights, decide what a step gives
        code = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        return program, {"source": "program", "path": str(path), "kind": program.kind, "code": code}
    if architecture is None:
        read_weights(path)  # a file that holds no weights says so, rather than asking for their architecture
        raise CheckpointError(f"{path.name} holds weights only: name its architecture with --arch ({', '.join(sorted(ARCHITECTURES))}), "
                              "or give its class: --model FILE.py:NAME --weights FILE")
    if architecture in RENAMED:
        raise CheckpointError(renamed_message(architecture))
    model, notes = load_state_file(path, architecture, data.num_classes, data.in_channels, ema=ema)
    return model, {"source": "checkpoint", "path": str(path), "architecture": architecture} | _recognised(notes, ema)


def _channels(model: nn.Module, data: DataBundle, name: str) -> dict:
    """The channels a zoo model or sample takes, for its source record: the data's, or 3 for torchvision's
    VisionTransformer on grey images (`prepare_base` repeats them); one line when it does not run on the data."""
    hint = f"the zoo's {name} takes {INPUT_SIZES[name]}x{INPUT_SIZES[name]} images: --input-size {INPUT_SIZES[name]}" if name in INPUT_SIZES else BUILD_HINT
    return {"in_channels": data_for(model.eval(), data, name, hint).in_channels}


def _recognised(notes: list[str], ema: bool) -> dict:
    """What was recognised in a checkpoint's file, and whether its EMA weights were read, for its source record
    (nothing for a plain state dict)."""
    return ({"weights_notes": notes} if notes else {}) | ({"ema": True} if ema else {})


def _factory_model(reference: str, data: DataBundle, model_args, weights: "Weighting", train_base,
                   source: dict) -> tuple[nn.Module, dict]:
    """Build a user's class from its reference, then give it its weights (see `_fitted`)."""
    args = check_args(model_args)
    factory = load_factory(reference)
    torch.manual_seed(0)  # the same untrained start in every process, so trained bases match across runs
    model = build(factory, reference, data.num_classes, data.in_channels, args)
    return _fitted(model, data, weights, train_base, reference, source | {"reference": reference, "args": args})


def _held_model(held, data: DataBundle, model_args, weights: "Weighting", train_base) -> tuple[nn.Module, dict]:
    """A model object handed to the API: an instance (copied, so the caller's stays as it was; it keeps its
    weights unless `weights` are given), or a class or function built like a factory."""
    what, args = describe_class(held), check_args(model_args)
    if isinstance(held, nn.Module):
        if args:
            raise CheckpointError(f"model arguments are for a class or function, and {what} is an instance")
        return _fitted(copy.deepcopy(copyable_(held)), data, weights, None, what, {"source": "object", "args": args})
    check_factory(held, what)
    torch.manual_seed(0)
    model = build(held, what, data.num_classes, data.in_channels, args)
    return _fitted(model, data, weights, train_base, what, {"source": "object", "args": args})


def _fitted(model: nn.Module, data: DataBundle, weights: "Weighting", train_base, what: str, source: dict) -> tuple[nn.Module, dict]:
    """The model with its weights (loaded, or trained by `train_base` on the data as the model takes them), checked
    against the data; the source records the class, its code, the weights and the channels it takes."""
    path = weights.path
    model, wrappers = unwrapped(model)
    notes, folded = _loaded_weights(model, Path(path).expanduser(), what, weights.ema) if path else ([], [])
    converted = float32_(model)
    fitted = data_for(model.eval(), data, what, weighted=bool(path))
    trained = not path and train_base is not None
    if trained:
        model = train_base(model, fitted)
    folded += fold_reparametrizations_(model)
    plain = {key: value for key, value in (("unwrapped", wrappers), ("folded", folded), ("converted", converted)) if value}
    return model, source | plain | {"class": describe_class(model), "code": code_fingerprint(model), "weights": path and str(path),
                                    "weights_notes": notes, "trained_here": trained, "in_channels": fitted.in_channels} | _recognised([], weights.ema)


def _loaded_weights(model: nn.Module, path: Path, what: str, ema: bool) -> tuple[list[str], list[str]]:
    """Load a weights file into a user's model: what was recognised in it, and what was folded first. A file of plain
    weights (saved after `remove_weight_norm` or `remove_parametrizations`, as people export for inference) fits a class
    that reparametrizes them only once they are folded: then they are folded first, and what does not fit the folded
    layers (a classifier saved for other classes) says so; names that fit neither keep their own line."""
    try:
        return load_weights(model, path, what, CLASS_HINT, ema=ema), []
    except NamesMisfit as misfit:
        folded = fold_reparametrizations_(model)
        if not folded:
            raise
        try:
            notes = load_weights(model, path, what, CLASS_HINT, ema=ema)
        except NamesMisfit:
            raise misfit from None
    return notes + ["plain weights, as saved with the reparametrizations removed: the model's folded before loading"], folded


@dataclass(frozen=True)
class Weighting:
    """The weights file a model gets (None: its own, or trained here), and whether its EMA weights are read."""

    path: str | None
    ema: bool = False

    def __post_init__(self):
        if not isinstance(self.ema, bool):
            raise CheckpointError(f"ema must be true or false, got {self.ema!r}")


def describe_source(source: dict) -> str:
    """One line: where a base came from, and what was recognised in its weights file."""
    kind = source.get("source")
    if kind in ("factory", "registered", "object"):
        what = source.get("name") or source.get("reference") or source["class"]
        line = f"{what} ({source['class']}" + (f", {json.dumps(source['args'])}" if source.get("args") else "") + ")"
        if source.get("weights"):
            line += f", weights {source['weights']}" + (f": {'; '.join(source['weights_notes'])}" if source.get("weights_notes") else "")
        elif source.get("trained_here"):
            line += ", trained here"
        return line + "".join(f"; {note}" for note in plain_notes(source))
    if kind == "program":
        return f"{source['path']} ({source['kind']} program)"
    if kind == "checkpoint":
        notes = source.get("weights_notes")
        return f"{source['path']} ({source['architecture']})" + (f": {'; '.join(notes)}" if notes else "")
    return source.get("name") or source.get("architecture") or str(source)


def model_label(spec) -> str:
    """What an ExploreSpec records as its model: the text given, or object:<class> for an object."""
    return spec if isinstance(spec, str) else OBJECT_PREFIX + describe_class(spec)


def _check_fits(num_classes: int, in_channels: int, data: DataBundle, name: str) -> None:
    """The sample's classes and channels against the data's; grey data fits a 3-channel sample (repeated)."""
    if num_classes != data.num_classes or in_channels not in (data.in_channels, 3 if data.in_channels == 1 else None):
        raise CheckpointError(f"sample {name} expects {num_classes} classes and {in_channels} channel(s), the data has "
                              f"{data.num_classes} and {data.in_channels}: choose a zoo architecture to train instead")


def save_state_atomically(model: nn.Module, path: Path) -> None:
    """Write a model's weights as safetensors via a temporary file of its own, so readers never see half a file (and two
    processes that trained the same base at once each rename their own: with one fixed name, the second found none).
    Each tensor is written from its own copy: safetensors refuses tensors that share memory, as tied weights do (one
    parameter under two names), and loading the file sets both names to the same values."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().clone(memory_format=torch.contiguous_format) for k, v in model.state_dict().items()}
    write_atomically(path, lambda temp: save_file(tensors, temp))


def state_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights, used in cache keys."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]
