"""Exported files kept by what they were written from, so that the same model is exported once per cache folder.

The dynamo ONNX exporter takes seconds per model (a 4-bit ViT ~12 s, most of it in its decompositions), and the
same model is written more than once: an exploration run again on the same cache (after a reload, or with another
objective weight) ships the same chain and base; the Export page writes the chain the exploration shipped, to check
its bytes. Within `kept_in(folder)` (the step cache's folder: explorations, export jobs, `ordercomp apply`), the
ONNX formats are kept in `folder/files` (not the files a latency objective times each step in: one per step would
fill a disk with a large network's files), named by a hash of everything the file is made from: every module's class,
the source file that defines it, its public attributes and its tensors' bytes; the format, the sample's shape, the
calibration images; ordercomp's own source and the exporting libraries' versions. A model that cannot be
fingerprinted (a tensor subclass, an attribute whose value has no stable text) is written as before. A kept file is
copied out only when its SHA-256 matches the one recorded beside it when it was written, so a file cut short or
swapped is written again. The folder must be as private as the step cache (see exploration/cache.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..folders import sha256, write_atomically

KEPT_FORMATS = ("onnx", "onnx_int8")  # the others take well under a second to write
EXPORTING_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime")
_FOLDER: contextvars.ContextVar[Path | None] = contextvars.ContextVar("ordercomp_kept_files", default=None)


@contextlib.contextmanager
def kept_in(folder: Path | str | None):
    """Keep the exported files written inside this block in `folder/files` (nothing kept when `folder` is None)."""
    token = _FOLDER.set(Path(folder) / "files" if folder is not None else None)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def kept_or_written(fmt: str, src, path: Path, write: Callable[[object, Path], dict]) -> dict:
    """`write(src, path)`'s details, or the kept file of the same content copied to `path` with the details recorded
    when it was written."""
    folder = _FOLDER.get()
    key = file_key(fmt, src) if folder is not None and fmt in KEPT_FORMATS else None
    if key is None:
        return write(src, path)
    kept, record = folder / f"{key}.file", folder / f"{key}.json"
    details = _recorded_details(kept, record)
    if details is not None:
        shutil.copyfile(kept, path)
        return details
    details = write(src, path)
    _keep(path, details, kept, record)
    return details


def _recorded_details(kept: Path, record: Path) -> dict | None:
    """The writer's details recorded beside a kept file whose SHA-256 is the recorded one; None for a file or record
    that is missing, cut short, swapped or unreadable (the file is then written again)."""
    try:
        recorded = json.loads(record.read_text())
        return recorded["details"] if recorded["sha256"] == sha256(kept) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _keep(path: Path, details: dict, kept: Path, record: Path) -> None:
    """Copy the written file, then its record, into the folder, each atomically (temp file + rename); a full disk
    keeps nothing and fails nothing."""
    record_text = json.dumps({"sha256": sha256(path), "details": details})
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(kept, lambda temp: shutil.copyfile(path, temp))
        write_atomically(record, lambda temp: Path(temp).write_text(record_text))
    except OSError:
        return


def file_key(fmt: str, src) -> str | None:
    """A hash of what the file of `fmt` written from `src` (a deploy.export.Sources) is made from; None when the model
    cannot be fingerprinted."""
    model = model_fingerprint(src.program)
    if model is None:
        return None
    digest = hashlib.sha256(json.dumps({"format": fmt, "model": model, "sample": [list(src.sample.shape), str(src.sample.dtype)],
                                        "calibration": _tensor_digest(src.calibration) if fmt == "onnx_int8" else None,
                                        "ordercomp": _ordercomp_source(), "libraries": _versions()}, sort_keys=True).encode())
    return digest.hexdigest()[:32]


def model_fingerprint(model: nn.Module) -> str | None:
    """A hash of everything a module's forward reads: each submodule's class, the file defining it, its public
    attributes, and every parameter and buffer; None when some part has no stable description."""
    digest = hashlib.sha256()
    try:
        for name, module in model.named_modules():
            cls = type(module)
            digest.update(f"{name}|{cls.__module__}.{cls.__qualname__}|{_class_source(cls)}".encode())
            for attribute, value in sorted(vars(module).items()):
                if not attribute.startswith("_") and attribute != "training":
                    digest.update(f"{attribute}={_stable_text(value)}".encode())
        for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
            digest.update(f"{name}={_tensor_digest(tensor)}".encode())
    except (TypeError, ValueError, RuntimeError, OSError):  # a tensor subclass, a class without a source file
        return None
    return digest.hexdigest()


def _stable_text(value) -> str:
    if isinstance(value, torch.Tensor):
        return _tensor_digest(value)
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__}[{','.join(_stable_text(v) for v in value)}]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_stable_text(k)}:{_stable_text(v)}" for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + "}"
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return repr(value)
    text = repr(value)
    if " at 0x" in text:  # an object known only by its address: its state is not described
        raise ValueError(f"no stable description of {type(value).__qualname__}")
    return text


def _tensor_digest(tensor: torch.Tensor) -> str:
    if type(tensor) not in (torch.Tensor, nn.Parameter):
        raise TypeError(f"tensor subclass {type(tensor).__qualname__}")
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return f"{flat.dtype}{tuple(tensor.shape)}:" + hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def _class_source(cls: type) -> str:
    """The hash of the file that defines `cls` (its forward and the helpers beside it)."""
    return hashlib.sha256(Path(inspect.getsourcefile(cls)).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _ordercomp_source() -> str:
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + path.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    from ..exploration.cache import installed_version  # here: the exploration package imports this one

    return {name: installed_version(name) for name in EXPORTING_LIBRARIES}
