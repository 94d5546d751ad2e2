"""Files a user hands to the dashboard: uploaded checkpoints and zipped ImageFolder trees, kept
next to the job store and checked before anything uses them.

Nothing from an uploaded file is run: a checkpoint is read by `ordercomp.checkpoints` (weights only),
a zip is unpacked member by member under limits on names, links, file count and unpacked size.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .data import DataError, check_layout

UPLOAD_LIMIT_MB = 200
ZIP_LIMIT_MB = 200
ZIP_MAX_BYTES = 1 << 30          # unpacked
ZIP_MAX_FILES = 100_000


def check_data_path(text: str) -> str:
    """The folder of a CIFAR-10/100 or ImageFolder dataset, checked by its layout without loading it."""
    if not text.strip():
        raise DataError("give the path of a dataset folder on this machine")
    return str(check_layout(text.strip())[1].resolve())


def extract_image_zip(data: bytes, folder: Path) -> str:
    """Unpack an uploaded ImageFolder zip under `folder` (once per content) and return its tree's root.

    Refuses absolute paths, `..`, links, more than ZIP_MAX_FILES files and more than ZIP_MAX_BYTES
    unpacked, and stops a member that unpacks to more bytes than it declares."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise DataError("the upload is not a zip archive: zip the dataset folder (one sub-folder per class) and upload that") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    _check_members(members)
    target = folder / hashlib.sha256(data).hexdigest()[:16]
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(dir=folder, prefix=".unzip-"))
        try:
            for member in members:
                _extract_member(archive, member, temp)
            os.replace(temp, target)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return check_data_path(str(_tree_root(target)))


def _check_members(members: list[zipfile.ZipInfo]) -> None:
    if len(members) > ZIP_MAX_FILES:
        raise DataError(f"the zip holds {len(members)} files; the limit is {ZIP_MAX_FILES}: use a folder on this machine instead")
    if sum(m.file_size for m in members) > ZIP_MAX_BYTES:
        raise DataError(f"the zip unpacks to more than {ZIP_MAX_BYTES >> 20} MB: use a folder on this machine instead")
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", member.filename):
            raise DataError(f"the zip holds an unsafe path {member.filename!r}: nothing was extracted; zip the folder itself")
        if (member.external_attr >> 16) & 0o170000 == 0o120000:
            raise DataError(f"the zip holds a link {member.filename!r}: nothing was extracted; zip plain files only")


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path) -> None:
    destination = root / PurePosixPath(member.filename.replace("\\", "/"))
    destination.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(member) as source, open(destination, "wb") as target:
        written = 0
        for block in iter(lambda: source.read(1 << 20), b""):
            written += len(block)
            if written > member.file_size:
                raise DataError(f"{member.filename} unpacks to more than it declares: the zip is damaged or malicious")
            target.write(block)


def _tree_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (a zip of `dataset/cat/...`)."""
    entries = [p for p in folder.iterdir() if p.name != "__MACOSX"]
    while len(entries) == 1 and entries[0].is_dir():
        folder = entries[0]
        entries = list(folder.iterdir())
    return folder


def checkpoint_types() -> list[str]:
    """File name endings an uploaded model may have."""
    from .checkpoints import PROGRAM_SUFFIXES, STATE_SUFFIXES

    return sorted(suffix.lstrip(".") for suffix in STATE_SUFFIXES | PROGRAM_SUFFIXES)


def save_upload(folder: Path, name: str, data: bytes, limit_mb: int = UPLOAD_LIMIT_MB) -> Path:
    """Keep an uploaded file under `folder`, as `<content hash>/<cleaned file name>`."""
    if len(data) > limit_mb << 20:
        raise ValueError(f"{name} is {len(data) / 2**20:.0f} MB; the limit is {limit_mb} MB: give a smaller file")
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "upload"
    path = folder / hashlib.sha256(data).hexdigest()[:16] / clean
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temp, path)
    return path


def check_checkpoint(path: Path, architecture: str | None) -> str:
    """Read an uploaded model file without running code from it; one line saying what it holds.

    A state dict needs an architecture; a .pt2 or TorchScript archive is a whole model."""
    from .checkpoints import PROGRAM_SUFFIXES, STATE_SUFFIXES, CheckpointError, is_torchscript, load_program, read_state_dict

    name = path.name
    if path.suffix in PROGRAM_SUFFIXES or is_torchscript(path):
        model = load_program(path)
        kind = "torch.export program" if path.suffix == ".pt2" else "TorchScript model"
        return f"{name}: a {kind} with {sum(p.numel() for p in model.parameters()):,} parameters"
    if path.suffix not in STATE_SUFFIXES:
        raise CheckpointError(f"{name} has an unknown type: upload a state dict (.pt, .pth, .safetensors), a .pt2 or a TorchScript file")
    state = read_state_dict(path)
    if architecture is None:
        raise CheckpointError(f"{name} holds weights only: choose its architecture")
    return f"{name}: a state dict of {len(state)} tensors ({sum(t.numel() for t in state.values()):,} values) for {architecture}"
