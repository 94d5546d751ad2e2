"""Whole-model files (torch.export `.pt2`, TorchScript) read so that nothing from an untrusted file runs.

A `.pt2` archive is read into memory once and checked before torch sees it (`pt2_archive`,
`pt2_record`): an archive that would make `torch.export.load` unpickle anything, load compiled
code, evaluate a string from the file as Python (symbolic sizes, guards, pytree specs) or allocate
more than the file holds is refused, and torch reads the archive rebuilt from the checked members.
The loaded graph may only call tensor operators (aten, prims and the quantisation kernels), never a
Python function, a file-touching operator or one that does not check its bounds (nor a loop: those are higher-order
operators), and it runs on an input
shape only after a run on fake tensors of that shape (nothing allocated) has shown that it does at most
MAX_WORK_PER_IMAGE and holds at most MEMORY_SHARE of the machine's memory, on all the images at once or in parts of as
many as fit: a 14 kB graph may ask for any size (`aten.ones([2**29])`
is 2 GiB, fixed at export) and any work (a chain of products of 8192 x 8192 constants), which no check of the file's
bytes sees.
TorchScript is code by design (its forward can e.g. write files), so it loads only when the
caller says the file is trusted. Both become a `ProgramModel`: measurable, but fixed.
"""
from __future__ import annotations

import io
import operator
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_map

from ..live_memory import MEMORY_SHARE, machine_memory, run_on_shapes
from ..report.figures import size_text
from .pt2_archive import Malformed, Unsafe, checked_archive, open_zip

PT2, TORCHSCRIPT = "torch.export (.pt2)", "TorchScript"
TORCHSCRIPT_SUFFIXES = {".ts", ".torchscript", ".jit"}
OPERATOR_NAMESPACES = {"aten", "prims", "quantized_decomposed", "torchao"}
FILE_OPERATORS = {"from_file", "_print"}
# aten operators whose CPU kernels trust their arguments: segment_reduce(unsafe=True) sums `lengths` elements whether
# or not they exist (a 15 kB program with lengths [10**9] killed its process with SIGSEGV; lengths of ones read the heap
# into the logits), its backward likewise, and _reshape_alias makes a view of any size over any storage (filled in place,
# it writes past its buffer); so do the operators of sparse tensors, whose unsafe constructors take indices unchecked
# (_sparse_coo_tensor_unsafe(indices=[[10**8]], size=[4]).to_dense() writes past its buffer: SIGSEGV), and which no
# vision network needs. A fake run does not read the values, so only their names can stop them
UNCHECKED_OPERATORS = {"segment_reduce", "_segment_reduce_backward", "_reshape_alias", "_reshape_alias_copy"}
PURE_BUILTINS = {getattr(operator, name) for name in ("getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow",
                                                     "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "not_")}
# FLOPs plus elements read and written (live_memory.OpWork) a program may spend on one image: about twice ViT-H/14's at
# 336 px (0.8 TFLOP), 12x ViT-L/16's at 224; 15 s an image on two cores at 100 GFLOP/s, so that a pass over a test split
# ends in hours, not never
MAX_WORK_PER_IMAGE = 1.5e12


class ProgramError(ValueError):
    """A program file was refused or could not be read; the message says why and what to do."""


class ProgramModel(nn.Module):
    """A loaded program. It runs as it was exported: train()/eval() leave it alone (an exported
    graph has its mode baked in) and its weights are frozen, because compression methods rewrite
    layers that a program no longer has."""

    def __init__(self, program: nn.Module, kind: str, path: Path | str = "the file"):
        super().__init__()
        self.program, self.kind, self.path = program, kind, str(path)
        self.fitting_batches: dict[tuple, int] = {}  # (input shape, dtype): the largest batch whose run was checked to fit
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor):
        if self.kind != PT2 or torch.compiler.is_compiling() or not x.dim():
            return self.program(x)
        shape = (tuple(x.shape), x.dtype)
        if shape not in self.fitting_batches:
            self.fitting_batches[shape] = check_run(self.program, x, Path(self.path).name)
        batch = self.fitting_batches[shape]
        if batch < len(x):  # each part's shape is checked in its turn: a graph may hold more on fewer images
            return tree_map(lambda *parts: torch.cat(parts), *[self(part) for part in x.split(batch)])
        return self.program(x)

    def train(self, mode: bool = True) -> "ProgramModel":
        self.training = mode
        return self


def check_run(module: nn.Module, example: torch.Tensor, name: str) -> int:
    """The largest batch, `example`'s or a half of it, a quarter, ..., at which a run of the program's graph on fake tensors
    shows it would hold at most MEMORY_SHARE of the machine's memory at once: ordercomp evaluates 256 images at a time, and a
    large program that fits one image at a time is run in parts rather than refused. Refuses (ProgramError) a graph that
    would not fit even one image at a time, or would do more than MAX_WORK_PER_IMAGE an image, or cannot show what it takes."""
    run, batch, memory = _run_on_shapes(module, example, name), _images(example), machine_memory()
    while run.held > MEMORY_SHARE * memory and batch > 1:
        batch = (batch + 1) // 2
        example = torch.empty((batch, *example.shape[1:]), dtype=example.dtype, device="meta")
        run = _run_on_shapes(module, example, name)
    if run.held > MEMORY_SHARE * memory:
        raise ProgramError(f"{name}: its graph would hold {size_text(run.held)} at once on a {_shape_text(example)} input, "
                           f"more than {MEMORY_SHARE:.0%} of this machine's {size_text(memory)}, so it was not run: export "
                           "the model for smaller inputs, or run it on a machine with more memory")
    _check_work(run, example, name)  # at the batch it will run: work fixed in the graph weighs more on fewer images
    return batch


def _run_on_shapes(module: nn.Module, example: torch.Tensor, name: str):
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, UnsupportedFakeTensorException

    try:
        return run_on_shapes(module, example)
    except (DataDependentOutputException, DynamicOutputShapeException, UnsupportedFakeTensorException) as error:
        raise ProgramError(f"{name}: the memory and work its graph takes on a {_shape_text(example)} input could not be worked "
                           f"out from shapes alone ({type(error).__name__}), so it was not run: export the plain model, without "
                           "data-dependent shapes") from None


def _check_work(run, example: torch.Tensor, name: str) -> None:
    per_image = run.work / max(1, _images(example))
    if per_image > MAX_WORK_PER_IMAGE:
        raise ProgramError(f"{name}: its graph would do {per_image / 1e12:.1f} TFLOP an image on a {_shape_text(example)} "
                           f"input, more than the heaviest image classifiers ({MAX_WORK_PER_IMAGE / 1e12:.1f}), so it was not "
                           "run: export the model for smaller inputs")


def _images(example: torch.Tensor) -> int:
    return len(example) if example.dim() else 1


def _shape_text(example: torch.Tensor) -> str:
    return "x".join(map(str, example.shape))


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
        with path.open("rb") as file, open_zip(file, path.name) as archive:
            return [name.split("/", 1)[-1] for name in archive.namelist()]
    except (Malformed, OSError):
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
    """A torch.export archive as a measurable model (see `exported_module`)."""
    return ProgramModel(exported_module(path), PT2, path)


def exported_module(path: Path) -> nn.Module:
    """The module of the program in a .pt2 archive, refused (ProgramError) unless the archive passes
    `checked_archive` and its graph calls only tensor operators: nothing from the file runs, and
    nothing it declares is allocated beyond the bytes it holds."""
    from torch.export.pt2_archive._package import load_pt2 as read_archive

    archive = _checked(path)
    try:  # what torch.export.load does, without its fallback to the legacy reader (which unpickles) and its traceback in the log
        exported = read_archive(io.BytesIO(archive)).exported_programs["model"]
        call = _foreign_call(exported)
        module = None if call else exported.module()
        example = None if call else _example_input(exported)
    except Exception as error:  # the deserializer raises many types for a damaged archive
        raise ProgramError(f"{path.name} is not a readable {PT2} archive ({type(error).__name__}): re-export the model") from None
    if call:
        raise ProgramError(f"{path.name} calls {call}; it was not run: export the plain model")
    if example is not None:  # refused where it is read (an upload, --model), not only when it first runs
        _check_on_example(module, example, path.name)
    return module


def _check_on_example(module: nn.Module, example: torch.Tensor, name: str) -> None:
    """`check_run` at the input the program was exported with; a graph that does not even run on that is refused."""
    try:
        check_run(module, example, name)
    except ProgramError:
        raise
    except Exception as error:  # torch.export.save never writes one: the archive's sample inputs were replaced
        raise ProgramError(f"{name} does not run on the input it was exported with ({type(error).__name__}); nothing in it "
                           "was run: re-export the model with torch.export.save") from None


def _example_input(exported) -> torch.Tensor | None:
    """The one tensor the program was exported with, when the archive keeps it (its shape is all that is read)."""
    example = exported.example_inputs
    args, kwargs = example if example is not None else ((), {})
    return args[0] if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor) else None


def _checked(path: Path) -> bytes:
    """The archive torch may read, rebuilt by `checked_archive` from the file; its refusals as one ProgramError line."""
    try:
        return checked_archive(path.read_bytes())
    except Unsafe as refusal:
        raise ProgramError(f"{path.name} holds {refusal}; loading it could run code from the file, so it was not loaded: "
                           "re-export the model with torch.export.save from plain tensors") from None
    except Malformed as refusal:
        raise ProgramError(f"{path.name} is not a readable {PT2} archive ({refusal}); nothing in it was loaded: "
                           "re-export the model with torch.export.save") from None


def _foreign_call(exported) -> str | None:
    """The first graph node that calls something other than a tensor operator or a pure builtin, and why it may not run."""
    for module in exported.graph_module.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            if node.op in ("call_module", "call_method") or (node.op == "call_function" and not _allowed(node.target)):
                return f"{str(node.target)[:80]}, {_refusal(node.target)}"
    return None


def _unchecked(name: str) -> bool:
    return name in UNCHECKED_OPERATORS or "sparse" in name


def _refusal(target) -> str:
    name = target._opname if isinstance(target, torch._ops.OpOverload) else None
    if name is not None and _unchecked(name):
        return "an operator that does not check its bounds (it reads and writes past its tensors when told to)"
    return "which is not a tensor operator" if name not in FILE_OPERATORS else "an operator that reads or writes files"


def _allowed(target) -> bool:
    if isinstance(target, torch._ops.OpOverload):
        return target.namespace in OPERATOR_NAMESPACES and target._opname not in FILE_OPERATORS and not _unchecked(target._opname)
    try:
        return target in PURE_BUILTINS
    except TypeError:  # an unhashable target
        return False
