"""Whole-model files (torch.export `.pt2`, TorchScript) read so that nothing from an untrusted file runs.

A `.pt2` archive is read into memory once and inspected before torch sees it: an archive that
would make `torch.export.load` unpickle anything (weights or constants marked `use_pickle`,
custom or opaque objects, legacy pickled weight files, sample inputs that are more than tensors)
or load compiled AOTInductor code is refused, and the loaded graph may only call tensor operators
(aten, prims and the quantisation kernels), never a Python function or a file-touching operator.
TorchScript is code by design (its forward can e.g. write files), so it loads only when the
caller says the file is trusted. Both become a `ProgramModel`: measurable, but fixed.
"""
from __future__ import annotations

import io
import json
import operator
import zipfile
from pathlib import Path

import torch
from torch import nn

PT2, TORCHSCRIPT = "torch.export (.pt2)", "TorchScript"
TORCHSCRIPT_SUFFIXES = {".ts", ".torchscript", ".jit"}
OPERATOR_NAMESPACES = {"aten", "prims", "quantized_decomposed", "torchao"}
FILE_OPERATORS = {"from_file", "_print"}
PURE_BUILTINS = {getattr(operator, name) for name in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                                     "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}


class ProgramError(ValueError):
    """A program file was refused or could not be read; the message says why and what to do."""


class ProgramModel(nn.Module):
    """A loaded program. It runs as it was exported: train()/eval() leave it alone (an exported
    graph has its mode baked in) and its weights are frozen, because compression methods rewrite
    layers that a program no longer has."""

    def __init__(self, program: nn.Module, kind: str, path: Path | str = "the file"):
        super().__init__()
        self.program, self.kind, self.path = program, kind, str(path)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)

    def train(self, mode: bool = True) -> "ProgramModel":
        self.training = mode
        return self


def measure_only_reason(kind: str, path) -> str:
    """Why a program cannot be compressed, and what can be done with it instead."""
    return (f"{Path(path).name} is a {kind} program: its layers are fixed in its graph, so it can be measured "
            f"(ordercomp measure --model {path}) but not compressed; to compress the model, give its class and weights "
            "(--model FILE.py:NAME --weights FILE)")


def program_kind(path: Path) -> str | None:
    """PT2 or TORCHSCRIPT by the file's content (whatever its suffix), else by its suffix, else None."""
    names = _zip_entries(path)
    if any(name == "archive_format" for name in names):
        return PT2
    if any(name == "constants.pkl" or name.startswith("code/") for name in names):
        return TORCHSCRIPT
    if path.suffix == ".pt2":
        return PT2
    return TORCHSCRIPT if path.suffix in TORCHSCRIPT_SUFFIXES else None


def _zip_entries(path: Path) -> list[str]:
    """Entry names below the archive's root folder (torch archives keep everything under one)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [name.split("/", 1)[-1] for name in archive.namelist()]
    except (zipfile.BadZipFile, OSError, ValueError):
        return []


def load_torchscript(path: Path, *, trusted: bool) -> ProgramModel:
    if not trusted:
        raise ProgramError(f"{path.name} is TorchScript: running it executes code from the file (it can e.g. write files), "
                           "so it was not loaded; pass --trust-torchscript (or tick the dashboard's trust box) only for files you trust")
    if _zip_entries(path) == [] or program_kind(path) != TORCHSCRIPT:
        raise ProgramError(f"{path.name} is not a readable TorchScript archive: re-export the model with torch.jit.save")
    try:
        return ProgramModel(torch.jit.load(str(path), map_location="cpu"), TORCHSCRIPT, path)
    except Exception as error:  # the TorchScript loader raises many types for a corrupt archive
        raise ProgramError(f"{path.name} is not a readable TorchScript archive ({type(error).__name__}): re-export the model") from None


def load_pt2(path: Path) -> ProgramModel:
    """A torch.export archive, refused if loading it could run anything but tensor operators."""
    data = path.read_bytes()
    refusal = _unsafe_part(path.name, data)
    if refusal:
        raise ProgramError(f"{path.name} holds {refusal}; loading it could run code from the file, so it was not loaded: "
                           "re-export the model with torch.export.save from plain tensors")
    try:
        exported = torch.export.load(io.BytesIO(data))
    except Exception as error:  # the deserializer raises many types for a damaged archive
        raise ProgramError(f"{path.name} is not a readable {PT2} archive ({type(error).__name__}): re-export the model") from None
    call = _foreign_call(exported)
    if call:
        raise ProgramError(f"{path.name} calls {call}, which is not a tensor operator; it was not run: export the plain model")
    return ProgramModel(exported.module(), PT2, path)


def _unsafe_part(name: str, data: bytes) -> str | None:
    """What in a .pt2 archive torch would unpickle or run as compiled code, or None when it holds only tensors and JSON."""
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive import constants as layout

    try:
        reader = PT2ArchiveReader(io.BytesIO(data))
        names = reader.get_file_names()
    except Exception:  # not a zip, or a zip that is not a .pt2 archive
        raise ProgramError(f"{name} is not a readable {PT2} archive ({len(data)} bytes, no archive_format 'pt2'): "
                           "re-export the model with torch.export.save") from None
    if any(name.startswith(layout.AOTINDUCTOR_DIR) for name in names):
        return "compiled AOTInductor code"
    prefix, suffix = layout.MODELS_FILENAME_FORMAT.split("{}")
    models = [name[len(prefix):-len(suffix)] for name in names if name.startswith(layout.MODELS_DIR)]
    if not models:
        return "no exported program in the current format (older archives load weights with pickle)"
    for model in models:
        found = _pickled_payload(reader, names, model, layout)
        if found:
            return found
    return None


def _pickled_payload(reader, names: list[str], model: str, layout) -> str | None:
    if f"{layout.WEIGHTS_DIR}{model}.pt" in names or f"{layout.CONSTANTS_DIR}{model}.pt" in names:
        return "pickled weights in the legacy layout"
    try:
        weights = json.loads(reader.read_string(layout.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model)))["config"]
        constants = json.loads(reader.read_string(layout.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model)))["config"]
        samples = reader.read_bytes(layout.SAMPLE_INPUTS_FILENAME_FORMAT.format(model))
    except Exception:  # a missing or malformed part: refuse rather than let torch guess
        return "an incomplete weights, constants or sample-inputs record"
    for name, payload in weights.items():
        if payload.get("use_pickle") is not False:
            return f"pickled weight {name[:60]}"
    for name, payload in constants.items():
        if payload.get("use_pickle") is not False or not str(payload.get("path_name", "")).startswith(layout.TENSOR_CONSTANT_FILENAME_PREFIX):
            return f"pickled constant {name[:60]}"
    try:
        torch.load(io.BytesIO(samples), weights_only=True)  # torch falls back to a full unpickle when this fails
    except Exception:
        return "sample inputs that are more than tensors"
    return None


def _foreign_call(exported) -> str | None:
    """The first graph node that calls something other than a tensor operator or a pure builtin."""
    for module in exported.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("call_module", "call_method") or (node.op == "call_function" and not _allowed(node.target)):
                return str(node.target)[:80]
    return None


def _allowed(target) -> bool:
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in OPERATOR_NAMESPACES and target._opname not in FILE_OPERATORS
    try:
        return target in PURE_BUILTINS
    except TypeError:  # an unhashable target
        return False
