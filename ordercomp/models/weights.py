"""Weights into a model, from files as people and training frameworks save them.

A torch file (.pt, .pth, .bin, .ckpt) is read with `torch.load(weights_only=True)`, a .safetensors file
with safetensors; nothing from either runs. What is recognised besides a plain state dict:

- the weights nested under an entry (WEIGHT_ENTRIES): `state_dict` (Lightning, timm), `model`
  (torchvision's reference scripts), `model_state_dict`, `module`, `net`, `network`;
- EMA weights beside the training weights: under an entry of their own (EMA_ENTRIES: timm's `state_dict_ema`,
  torchvision's `model_ema`), under a prefix in the same state dict (a LightningModule holding `self.model_ema`:
  `model_ema.module.`), or, after Lightning's WeightAveraging, in `state_dict` with the training weights in
  `current_model_state`. The training weights are read unless `ema` asks for the EMA ones; a note says which;
- a prefix on the names (DataParallel's `module.`, Lightning's `model.` when the LightningModule holds
  the network as `self.model`, torch.compile's `_orig_mod.`): the prefix under which most names fit the
  model is stripped, and names outside it (a loss's or a teacher's weights) are left out;
- Python objects beside the weights (timm's and torchvision's `args`, an argparse.Namespace; Lightning's
  hyper-parameters): the weights-only reader refuses them, so they are read again as `Inert`
  placeholders, which keep what the file gave them and run nothing. A placeholder among the weights
  themselves is refused.

What was recognised is said in `notes`; names that do not fit give one line that says which are
missing and which are not the model's, and how to build the model the file was saved from.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..pickles import PickleRefused, check_opcodes
from .pt2_archive import Malformed, check_torch_zip, open_zip

WEIGHT_ENTRIES = ("state_dict", "model_state_dict", "model", "module", "net", "network")
EMA_ENTRIES = ("state_dict_ema", "model_ema", "ema_state_dict", "model_ema_state_dict", "ema_model", "ema")
AVERAGED, TRAINED = "state_dict", "current_model_state"  # Lightning's WeightAveraging: the EMA weights, the training ones
EMA_PART = re.compile(r"(^|_)ema($|_)", re.IGNORECASE)  # a name part that holds EMA weights: ema, model_ema, ema_model
MAX_PREFIX_PARTS = 3
MAX_TENSORS = 200_000  # about as many as a torch file's MAX_OPCODES allow (a tensor takes ~30 pickle operations)
SAFETENSORS_MAX_HEADER = 100_000_000  # safetensors refuses a longer header itself


class CheckpointError(ValueError):
    """A model file could not be used (it is refused, unreadable, or does not fit); the message says what to fix."""


class NamesMisfit(CheckpointError):
    """The tensor names of a file are not the model's (some missing, some unexpected)."""


class Inert:
    """Stands for a Python object of another program inside a checkpoint: it keeps the arguments and
    state the pickle gives it and does nothing else."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


@dataclass
class Weights:
    """Tensors by name from a file, and what was recognised on the way."""

    tensors: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)
    ema: bool = False  # the tensors are EMA weights, read from an entry of their own
    holds: str = ""  # what the file holds, for a refusal of EMA weights it does not have


def read_weights(path: Path, *, ema: bool = False) -> Weights:
    """The state dict a file holds, unwrapped from a framework's checkpoint: its EMA weights where `ema` asks for them and
    they have an entry of their own (else the training weights: `fit_weights` looks for EMA weights under a prefix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist: give the path of a .pt/.pth/.bin/.ckpt/.safetensors file")
    if path.suffix == ".safetensors":
        tensors = _read_safetensors(path)
        return Weights(tensors, holds=f"a state dict of {len(tensors)} tensors")
    loaded, foreign = _torch_load(path)
    weights = _weights_entry(loaded, path, foreign, ema)
    _check_values(weights.tensors, path)
    if foreign:
        weights.notes.append(f"left out Python objects beside the weights ({', '.join(foreign[:3])}), read without running them")
    return weights


def _check_values(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse a tensor saved without its values (on torch's meta device): its sizes alone fit a model's, so it passed the
    dashboard's check and failed only when loaded, with a message per parameter."""
    empty = next((name for name, tensor in tensors.items() if tensor.is_meta), None)
    if empty is not None:
        raise CheckpointError(f"{path.name} holds {empty[:100]} without its values (a tensor on torch's meta device): save the "
                              "state dict of a model whose weights are on the CPU or a GPU")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _check_tensor_count(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({error}): re-save it with safetensors.torch.save_file") from None


def _check_tensor_count(path: Path) -> None:
    """Refuse a safetensors header that declares more than MAX_TENSORS tensors, counted before safetensors builds
    any: every tensor's entry is a JSON object, so it holds a '{' (1M empty tensors, a 64 MB file, took 1.2 GB)."""
    with path.open("rb") as file:
        left, braces = min(int.from_bytes(file.read(8), "little"), SAFETENSORS_MAX_HEADER), 0
        for block in iter(lambda: file.read(min(left, 1 << 20)), b""):
            left, braces = left - len(block), braces + block.count(b"{")
    if braces - 2 > MAX_TENSORS:  # the header itself is an object too, and so is its __metadata__
        raise CheckpointError(f"{path.name} declares more than {MAX_TENSORS:,} tensors, far more than a model's weights; nothing "
                              "was read: re-save the model's own state dict with safetensors.torch.save_file")


def _torch_load(path: Path) -> tuple[object, list[str]]:
    """The file's content and the names of the foreign objects read as placeholders."""
    _check_torch_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True), []
    except pickle.UnpicklingError as error:
        refused = str(error)
    except Exception as error:  # on a file that is no checkpoint the weights-only unpickler raises IndexError, KeyError, ...
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({_load_failure(error)}): "
                           "re-save it with torch.save(model.state_dict(), path)") from None
    foreign = _foreign_names(path)
    if not foreign:
        raise _refusal(path, refused)
    try:
        with torch.serialization.safe_globals([(Inert, name) for name in foreign]):
            return torch.load(path, map_location="cpu", weights_only=True), foreign
    except Exception:  # a blocked module (os, sys) or an object the placeholders cannot stand for
        raise _refusal(path, refused) from None


def _check_torch_file(path: Path) -> None:
    """Refuse, before torch reads it, a file that would take memory out of proportion to its bytes: a zip whose members
    are compressed (torch inflates them: 2 MB of deflated zeros make a 2 GB tensor) or declare more than the file holds,
    or whose pickle has more opcodes than `pickles.MAX_OPCODES` (each builds an object: ~70 bytes of memory a byte)."""
    remedy = "re-save it with torch.save(model.state_dict(), path)"
    try:
        with path.open("rb") as file:
            if not zipfile.is_zipfile(file):
                file.seek(0)
                check_opcodes(file, pickles=5)  # the legacy format: magic, protocol, system, the object, its storage keys
                return
            file.seek(0)
            try:
                archive = open_zip(file, path.name)
            except Malformed as refusal:  # more members than torch writes
                raise CheckpointError(f"{refusal}: {remedy}") from None
            with archive:
                check_torch_zip(archive, path.stat().st_size)
    except CheckpointError:
        raise
    except Malformed as refusal:
        raise CheckpointError(f"{path.name} holds {refusal}: {remedy}") from None
    except PickleRefused as refusal:
        raise CheckpointError(f"{path.name} is a pickle of {refusal}; nothing was built from it: {remedy}") from None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint ({type(error).__name__}): {remedy}") from None


def _load_failure(error: Exception) -> str:
    """What torch said when it could not read a file: its own words, or only the error's type when the
    unpickler tripped over bytes that are no pickle (an IndexError 'pop from empty list' tells a user nothing)."""
    return first_line(error) if isinstance(error, (RuntimeError, OSError, ValueError, EOFError)) else type(error).__name__


def _foreign_names(path: Path) -> list[str]:
    """Globals the weights-only reader refuses, listed from the pickle without running it."""
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # an old (non-zip) torch file or a damaged one: refused as it is
        return []


def _refusal(path: Path, message: str) -> CheckpointError:
    """The weights-only reader names the object it refused; say which, or that the file is not a checkpoint."""
    refused = next((line.strip() for line in message.splitlines() if "GLOBAL" in line), None)
    if refused:
        return CheckpointError(f"{path.name} holds more than tensors ({refused[:100]}); nothing from it was run: "
                            "save model.state_dict() instead")
    return CheckpointError(f"{path.name} is not a readable torch checkpoint: re-save it with torch.save(model.state_dict(), path)")


def _weights_entry(loaded, path: Path, foreign: list[str], ema: bool) -> Weights:
    """The state dict itself, or the one nested under a framework's entry (the EMA weights' where `ema` asks for them);
    where neither is found in a file of foreign objects (a whole pickled model), the refusal names the first of them."""
    if _is_state_dict(loaded):
        return Weights(dict(loaded), holds=f"a state dict of {len(loaded)} tensors")
    if isinstance(loaded, dict):
        averaged = _ema_entry(loaded)
        entry = averaged if ema and averaged else _trained_entry(loaded)
        if entry:
            return _entry_weights(loaded, entry, averaged)
    if foreign:
        raise CheckpointError(f"{path.name} holds more than tensors (GLOBAL {foreign[0]}) and no state dict; nothing from it "
                              "was run: save model.state_dict() instead")
    if isinstance(loaded, dict) and loaded:
        keys = ", ".join(str(key) for key in list(loaded)[:5])
        raise CheckpointError(f"{path.name} holds no state dict (name -> tensor) at its top or under "
                           f"{', '.join(WEIGHT_ENTRIES)} (its entries: {keys}): save model.state_dict() instead")
    raise CheckpointError(f"{path.name} is not a state dict (name -> tensor): save model.state_dict() instead")


def _ema_entry(loaded: dict) -> str | None:
    """The entry holding a checkpoint's EMA weights, if it has one."""
    if _is_state_dict(loaded.get(TRAINED)) and _is_state_dict(loaded.get(AVERAGED)):
        return AVERAGED
    return next((entry for entry in EMA_ENTRIES if _is_state_dict(loaded.get(entry))), None)


def _trained_entry(loaded: dict) -> str | None:
    """The entry holding a checkpoint's training weights, if it has one."""
    entries = (TRAINED, *WEIGHT_ENTRIES) if _ema_entry(loaded) == AVERAGED else WEIGHT_ENTRIES
    return next((entry for entry in entries if _is_state_dict(loaded.get(entry))), None)


def _entry_weights(loaded: dict, entry: str, averaged: str | None) -> Weights:
    """The weights under `entry`, noting what else the file holds and, where it holds EMA weights, which were read."""
    others = [str(key) for key in loaded if key != entry]
    which = "the EMA weights, " if entry == averaged else ("the training weights, " if averaged else "")
    notes = [f"read {which}its '{entry}' entry" + (f" (left out: {', '.join(others[:5])})" if others else "")]
    if averaged and entry != averaged:
        notes.append(f"the EMA weights in '{averaged}' were not read: --ema (ema=True) reads them")
    holds = f"its entries: {', '.join(str(key) for key in list(loaded)[:6])}"
    return Weights(dict(loaded[entry]), notes, ema=entry == averaged, holds=holds)


def _is_state_dict(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def fit_weights(model: nn.Module, weights: Weights, file: str, what: str, hint: str, *, ema: bool = False) -> Weights:
    """The tensors renamed to the model's names (a prefix stripped), checked name for name and shape for shape; with
    `ema`, the EMA weights (read from their entry, or found under a prefix here). `what` names the model in messages;
    `hint` says how to build the model the file was saved from."""
    expected = model.state_dict()
    prefix, inside = within_prefix(weights.tensors, expected, ema=ema and not weights.ema)
    if prefix is None:
        raise no_ema_weights(file, weights, expected)
    outside = len(weights.tensors) - len(inside)
    inside, tied = with_tied_names(inside, model, expected)
    missing, unexpected = sorted(set(expected) - set(inside)), sorted(set(inside) - set(expected))
    if missing or unexpected:
        raise NamesMisfit(f"{file} does not fit {what}: {len(missing)} missing keys (the model's, not in the file; e.g. "
                              f"{', '.join(missing[:2]) or '-'}), {len(unexpected)} unexpected (in the file, not the model's; e.g. "
                              f"{', '.join(unexpected[:2]) or '-'}): {hint}")
    wrong = [name for name in expected if expected[name].shape != inside[name].shape]
    if wrong:
        name = wrong[0]
        head = other_outputs(wrong, expected, inside)
        if head:
            layer, saved, needed = head
            raise CheckpointError(f"{file} does not fit {what}: its {layer} gives {saved} outputs in the file and {needed} in the model, "
                                  f"one per class of the data: ordercomp compresses a network trained on the data's classes, so "
                                  f"fine-tune it on them first ({layer} with {needed} outputs), or give data of {saved} classes")
        raise CheckpointError(f"{file} does not fit {what}: {name} has shape {tuple(inside[name].shape)} in the file, the "
                              f"model needs {tuple(expected[name].shape)}: {hint}")
    beside = None if ema else within_prefix(weights.tensors, expected, ema=True)[0]
    notes = list(weights.notes)
    if prefix:
        which = " (the EMA weights)" if ema and not weights.ema else (" (the training weights)" if beside else "")
        notes.append(f"stripped the prefix '{prefix}'{which}")
    if tied:
        notes.append(f"{', '.join(tied[:3])} from the weight tied to it (saved once)")
    if outside:
        notes.append(f"left out {outside} tensor(s) outside '{prefix}'")
    if beside:
        notes.append(f"the EMA weights under '{beside}' were not read: --ema (ema=True) reads them")
    return Weights(inside, notes, ema=ema)


def other_outputs(wrong: list[str], expected: dict, inside: dict) -> tuple[str, int, int] | None:
    """(layer, outputs in the file, outputs in the model) where the only tensors that do not fit are one layer's and
    differ in their outputs alone: a classifier saved for another number of classes (ImageNet's 1000)."""
    layers = {name.rpartition(".")[0] for name in wrong}
    shapes = [(tuple(inside[name].shape), tuple(expected[name].shape)) for name in wrong]
    outputs = {(saved[0], needed[0]) for saved, needed in shapes if saved and len(saved) == len(needed) and saved[1:] == needed[1:]}
    if len(layers) != 1 or len(outputs) != 1 or any(not saved or saved[1:] != needed[1:] for saved, needed in shapes):
        return None
    return (layers.pop(), *outputs.pop())


def no_ema_weights(file: str, weights: Weights, expected: dict) -> CheckpointError:
    """The one line refusing EMA weights that a file does not hold: what it holds instead."""
    prefix = within_prefix(weights.tensors, expected)[0]
    under = f"; its weights under '{prefix}'" if prefix else ""
    return CheckpointError(f"{file} holds no EMA weights ({weights.holds or f'{len(weights.tensors)} tensors'}{under}): read "
                           "its weights without --ema (ema=False), or give a checkpoint saved with EMA weights")


def with_tied_names(tensors: dict, model: nn.Module, expected: dict) -> tuple[dict, list[str]]:
    """`tensors` with the model's tied names filled in, and those names: a weight shared by two names (one parameter
    under both) is saved once by safetensors' `save_model`, which drops the other name; it takes the value of the one
    kept. The ties are the model's own (one object under several names), whatever device it is on."""
    tied = {}
    for names in tied_names(model):
        kept = next((name for name in names if name in tensors), None)
        tied |= {name: tensors[kept] for name in names if kept and name not in tensors and name in expected}
    return tensors | tied, sorted(tied)


def tied_names(model: nn.Module) -> list[list[str]]:
    """The names of every tensor a model holds under several names (a weight tied between layers), one list a tensor."""
    names_of: dict[int, list[str]] = {}
    for name, value in (*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)):
        names_of.setdefault(id(value), []).append(name)
    return [names for names in names_of.values() if len(names) > 1]


def within_prefix(tensors: dict, expected: dict, *, ema: bool = False) -> tuple[str | None, dict]:
    """The prefix (none, or up to MAX_PREFIX_PARTS leading name parts) under which most names are the model's
    (`expected`), and the tensors under it, renamed without it. A prefix naming EMA weights (`model_ema.module.`,
    `ema_model.`) is taken only with `ema`, and then only such a prefix: None when no name fits under one."""
    matches: Counter[str] = Counter()  # each name counted under its own prefixes only: a file of many names stays linear
    for name in tensors:
        for prefix in _leading_parts(name):
            matches[prefix] += name[len(prefix):] in expected
    pool = [prefix for prefix in sorted(matches, key=lambda prefix: (len(prefix), prefix)) if _names_ema(prefix) == ema]
    if ema:
        pool = [prefix for prefix in pool if matches[prefix]]
        if not pool:
            return None, {}
    prefix = max(pool, key=matches.__getitem__, default="")
    return prefix, {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}


def has_ema_names(tensors: dict) -> bool:
    """Whether some tensor is named under a prefix that names EMA weights (`model_ema.module.conv.weight`)."""
    return any(_names_ema(prefix) for name in tensors for prefix in _leading_parts(name)[1:])


def _names_ema(prefix: str) -> bool:
    """Whether a prefix names EMA weights: one of its parts is ema, model_ema, ema_model, ..."""
    return any(EMA_PART.search(part) for part in prefix.split(".")[:-1])


def _leading_parts(name: str) -> list[str]:
    """'' and the name's first 1..MAX_PREFIX_PARTS dotted parts with their dot: the prefixes it may be saved under."""
    parts = name.split(".", MAX_PREFIX_PARTS)[:-1]
    return [""] + [".".join(parts[:count]) + "." for count in range(1, len(parts) + 1)]


def load_weights(model: nn.Module, path: Path, what: str, hint: str, *, ema: bool = False) -> list[str]:
    """Load the weights of a file (its EMA weights with `ema`) into `model` (strictly, after `fit_weights`); returns
    what was recognised."""
    fitted = fit_weights(model, read_weights(path, ema=ema), Path(path).name, what, hint, ema=ema)
    try:
        model.load_state_dict(with_versions_of(model, fitted.tensors))
    except RuntimeError as error:  # names and shapes fit, values do not copy (a sparse or quantized tensor): one line per parameter
        problem = next((line.strip() for line in str(error).splitlines() if line.strip().startswith("While copying")), first_line(error))
        raise CheckpointError(f"{Path(path).name} does not load into {what}: {problem[:300]}") from None
    return fitted.notes


def with_versions_of(model: nn.Module, tensors: dict) -> OrderedDict:
    """`tensors` as a state dict that carries `model`'s module versions: a file gives back tensors without them, and a
    module that reads its layout's version refuses a state dict that has none (torchvision's MNASNet: "version should
    be set to 1 or 2 instead of None"). The names and shapes fit the model's (`fit_weights`), so the layout is its own."""
    state = OrderedDict(tensors)
    state._metadata = getattr(model.state_dict(), "_metadata", OrderedDict())
    return state


def first_line(error: BaseException, *, with_type: bool = False) -> str:
    """The start of an error's message (after its type's name, `with_type`), or its type when it has none (an empty
    file raises a bare EOFError)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    return f"{type(error).__name__}: {lines[0][:160]}" if with_type else lines[0][:160]
