"""Where a base model comes from: a shipped sample, a zoo architecture trained here, or a user file.

User files are read without executing anything from them: state dicts through
`torch.load(weights_only=True)` or safetensors, `.pt2` programs through the checks of
`programs.py`. TorchScript is code, so it loads only with `trust_torchscript=True`. A pickled
module, a corrupt file or mismatching keys give one `CheckpointError` line.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from ..data.datasets import DataBundle
from .programs import TORCHSCRIPT, TORCHSCRIPT_SUFFIXES, ProgramError, load_pt2, load_torchscript, program_kind
from .zoo import ARCHITECTURES, create_model

SAMPLE_DIR = Path(__file__).resolve().parents[2] / "sample_models"
STATE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt", ".safetensors"}
PROGRAM_SUFFIXES = {".pt2"} | TORCHSCRIPT_SUFFIXES


class CheckpointError(ValueError):
    """A model file could not be used; the message says what to fix."""


def list_samples() -> list[str]:
    return sorted(p.stem for p in SAMPLE_DIR.glob("*.json"))


def input_size_for(model: str, input_size: int | None) -> int | None:
    """The image size to load data at: the given one, else a sample model's own (digits32_resnet18
    was trained at 32 px; at the default 8 px it would score at chance)."""
    if input_size is None and model in list_samples():
        return sample_card(model).get("input_size")
    return input_size


def sample_card(name: str) -> dict:
    path = SAMPLE_DIR / f"{name}.json"
    if not path.exists():
        raise CheckpointError(f"unknown sample model {name!r}: choose one of {', '.join(list_samples()) or 'none'}")
    return json.loads(path.read_text())


def load_sample(name: str) -> nn.Module:
    card = sample_card(name)
    return load_state_file(SAMPLE_DIR / card["weights"], card["architecture"], card["num_classes"], card["in_channels"])


def load_state_file(path: Path, architecture: str, num_classes: int, in_channels: int) -> nn.Module:
    """An architecture from the zoo with weights from a state-dict or safetensors file."""
    state = read_state_dict(path)
    model = create_model(architecture, num_classes, in_channels)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path.name} does not fit {architecture}: {len(missing)} missing keys (e.g. "
                              f"{', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2]) or '-'}); "
                              "check --arch and the number of classes/channels")
    wrong = [k for k in expected if expected[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{path.name} does not fit {architecture}: {k} has shape {tuple(state[k].shape)}, "
                              f"the architecture needs {tuple(expected[k].shape)}; check the number of classes/channels")
    model.load_state_dict(state)
    return model.eval()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a safetensors or torch file, refusing anything that is not plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of a .pt/.pth/.safetensors file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _pickle_refusal(path, str(error)) from None
    except Exception as error:  # on a file that is no checkpoint the weights-only unpickler raises IndexError, KeyError, ...
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({_load_failure(error)}): "
                              "re-save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name} is not a state dict (name -> tensor): save model.state_dict() instead")
    return state


def _pickle_refusal(path: Path, message: str) -> CheckpointError:
    """The weights-only unpickler names the object it refused; say which, or that the file is not a checkpoint."""
    refused = next((line.strip() for line in message.splitlines() if "GLOBAL" in line), None)
    if refused:
        return CheckpointError(f"{path.name} holds more than tensors ({refused[:100]}); nothing from it was run: "
                               "save model.state_dict() instead")
    return CheckpointError(f"{path.name} is not a readable torch checkpoint: re-save it with torch.save(model.state_dict(), path)")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({error}): re-save it with safetensors.torch.save_file") from None


def _load_failure(error: Exception) -> str:
    """What torch said when it could not read a file: its own words, or only the error's type when the
    unpickler tripped over bytes that are no pickle (an IndexError 'pop from empty list' tells a user nothing)."""
    return _first_line(error) if isinstance(error, (RuntimeError, OSError, ValueError, EOFError)) else type(error).__name__


def _first_line(error: BaseException) -> str:
    """The start of an error's message, or its type when it has none (an empty file raises a bare EOFError)."""
    lines = str(error).strip().splitlines()
    return lines[0][:120] if lines else type(error).__name__


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


def is_program(path: Path) -> bool:
    """Whether a file holds a whole program (.pt2 or TorchScript, judged by content, then suffix) rather than weights."""
    return program_kind(Path(path)) is not None


def is_torchscript(path: Path) -> bool:
    return program_kind(Path(path)) == TORCHSCRIPT


def resolve_model(spec: str, data: DataBundle, *, architecture: str | None = None, train_base=None,
                  trust_torchscript: bool = False) -> tuple[nn.Module, dict]:
    """The base model named by `spec`, and a description of where it came from.

    `spec` is a sample model name, a zoo architecture (trained here by `train_base`), or a path.
    A TorchScript file runs code from it, so it is refused unless `trust_torchscript` is set.
    """
    if spec in list_samples():
        card = sample_card(spec)
        _check_fits(card["num_classes"], card["in_channels"], data, spec)
        return load_sample(spec), {"source": "sample", "name": spec, "card": card}
    if spec in ARCHITECTURES:
        if train_base is None:
            raise CheckpointError(f"{spec} is an untrained architecture: give a trainer or a checkpoint")
        torch.manual_seed(0)  # the same untrained start in every process, so trained bases match across runs
        return train_base(create_model(spec, data.num_classes, data.in_channels)), {"source": "trained", "architecture": spec}
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(f"model {spec!r} is neither a sample ({', '.join(list_samples())}), an architecture "
                              f"({', '.join(sorted(ARCHITECTURES))}) nor an existing file")
    if is_program(path):
        program = load_program(path, trust_torchscript=trust_torchscript)
        _check_program_fits(program, data, path.name)
        return program, {"source": "program", "path": str(path)}
    if architecture is None:
        raise CheckpointError(f"{path.name} holds weights only: name its architecture with --arch ({', '.join(sorted(ARCHITECTURES))})")
    return load_state_file(path, architecture, data.num_classes, data.in_channels), {"source": "checkpoint", "path": str(path), "architecture": architecture}


def _check_program_fits(program: nn.Module, data: DataBundle, name: str) -> None:
    """A program must take batches of any size of the data's images and give one logit per class."""
    images = data.example_input(3)
    try:
        with torch.no_grad():
            logits = program(images)
    except Exception as error:  # a program raises whatever its graph raises for an input it cannot take
        raise CheckpointError(f"{name} does not run on a batch of {tuple(images.shape)} images ({_first_line(error)}): "
                              "export it for this data with a dynamic batch dimension (torch.export.Dim)") from None
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (len(images), data.num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise CheckpointError(f"{name} gives {shape} for {len(images)} images, not one logit per class "
                              f"({data.num_classes}): check the model and the data")


def _check_fits(num_classes: int, in_channels: int, data: DataBundle, name: str) -> None:
    if (num_classes, in_channels) != (data.num_classes, data.in_channels):
        raise CheckpointError(f"sample {name} expects {num_classes} classes and {in_channels} channel(s), the data has "
                              f"{data.num_classes} and {data.in_channels}: choose a zoo architecture to train instead")


def save_state_atomically(model: nn.Module, path: Path) -> None:
    """Write a model's weights as safetensors via a temporary file, so readers never see half a file."""
    from safetensors.torch import save_file

    temp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(temp))
    temp.replace(path)


def state_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's weights, used in cache keys."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes() if tensor.dtype != torch.bfloat16 else tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]
