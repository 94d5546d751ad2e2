"""Files a user hands to the dashboard: uploaded checkpoints and zipped ImageFolder trees, kept
next to the job store and checked before anything uses them.

Nothing from an uploaded file is run: a checkpoint is read by `ordercomp.models.checkpoints` (weights only),
a zip is unpacked member by member under limits on names, links, encryption, file count, unpacked
size and compression ratio (declared, and counted while writing).

Every upload lives in a folder of its own named by its content's hash and marked with MARKER; only
marked folders are ever removed: an upload that is refused at once, and one that no job uses
ABANDONED_AFTER_S after it was last used (`sweep_abandoned`).
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from . import archives
from .fields import too_long
from .folders import write_atomically
from .data.datasets import IMAGE_SUFFIXES, MAX_PIXELS_PER_BYTE, DataError, check_layout, decoded_pixels, opened_image

UPLOAD_LIMIT_MB = 200
ZIP_LIMIT_MB = 200
ZIP_MAX_BYTES = 1 << 30          # unpacked
ZIP_MAX_FILES = 100_000
# what a zip's images may decode to in all, beyond MAX_PIXELS_PER_BYTE per byte of the zip: decoding takes ~10 ns a pixel,
# and a zip deflates a blank 4-megapixel PNG (11.7 kB, within the per-image limits) to 151 bytes
ZIP_FREE_PIXELS = 1_000_000_000
SPOOL_BYTES = 16 << 20          # an image member checked from memory up to this size, beyond it from a temporary file
NAME_MAX_BYTES = 255             # one path component, as most file systems allow
PATH_MAX_BYTES = 1024
MARKER = ".ordercomp-upload"
ABANDONED_AFTER_S = 7 * 24 * 3600
DATA_ROOTS_ENV = "ORDERCOMP_DATA_ROOTS"
CHECKPOINTS_FOLDER = "uploads"  # next to the job store: the checkpoints `keep_checkpoint` kept
KEPT_FOLDERS = (CHECKPOINTS_FOLDER, "datasets")  # next to the job store: checkpoints, unpacked zips
UPLOADS_GB_ENV = "ORDERCOMP_UPLOADS_GB"
UPLOADS_DEFAULT_GB = 10
DISK_RESERVE_BYTES = 1 << 30     # an upload never leaves the store's disk with less free


def check_data_path(text: str) -> str:
    """The folder of a CIFAR-10/100 or ImageFolder dataset, checked by its layout without loading it."""
    if not text.strip():
        raise DataError("give the path of a dataset folder on this machine")
    return str(check_layout(text.strip())[1].resolve())


def data_roots() -> list[Path]:
    """The folders a dashboard's users may read data from: those its operator lists in $ORDERCOMP_DATA_ROOTS
    (separated by os.pathsep), else the folder the server was started in, as a notebook server serves its own."""
    listed = [Path(part.strip()).expanduser() for part in os.environ.get(DATA_ROOTS_ENV, "").split(os.pathsep) if part.strip()]
    return [root.resolve() for root in listed or [Path.cwd()]]


def check_served_data_path(text: str, store_folder: Path) -> str:
    """`check_data_path` for a path typed into a served dashboard: it must lie in one of `data_roots()` or in the
    store's folder (uploaded zips), links resolved, before anything of it is read, so that no user of the server
    reads, or learns the layout of, a folder its operator did not offer."""
    if not text.strip():
        raise DataError("give the path of a dataset folder on this machine")
    refusal = too_long("the dataset folder's path", text)
    if refusal:
        raise DataError(f"{refusal}: give the path of a dataset folder on this machine")
    path, roots = Path(text.strip()).expanduser().resolve(), data_roots()
    if not any(path.is_relative_to(root) for root in [*roots, store_folder.resolve()]):
        raise DataError(f"{text.strip()} is outside the folders this server reads data from ({', '.join(map(str, roots))}): "
                        f"give a folder under one of them or upload a zip; the server's operator names others in "
                        f"${DATA_ROOTS_ENV} (e.g. /data{os.pathsep}/srv/datasets) before starting it")
    return check_data_path(str(path))


def extract_image_zip(data: bytes, folder: Path) -> str:
    """Unpack an uploaded ImageFolder zip under `folder` (once per content) and return its tree's root.

    Checks the upload's size and every member before writing anything (see `_check_members`), stops a
    member that unpacks to more than it declares, and removes what it wrote when the zip or the tree it
    holds is refused."""
    check_upload_size("the zip", data, ZIP_LIMIT_MB, "use a folder on this machine instead")
    try:
        archive = archives.open_zip(io.BytesIO(data), "the upload", ZIP_MAX_FILES)
    except archives.ZipRefused as refusal:
        raise DataError(f"{refusal}: zip the dataset folder (one sub-folder per class, at most {ZIP_MAX_FILES:,} files) "
                        "and upload that, or use a folder on this machine") from None
    members = [m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
    _check_members(members, len(data))
    _check_images(archive, members, len(data))
    target = folder / hashlib.sha256(data).hexdigest()[:16]
    if target.exists():
        _mark_used(target)
        return check_data_path(str(_tree_root(target)))
    check_room(folder, sum(member.file_size for member in members), "the zip's images")
    folder.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=folder, prefix=".unzip-"))
    placed = False
    try:
        (temp / MARKER).touch()
        for member in members:
            _extract_member(archive, member, temp)
        placed = _place(temp, target)
        return check_data_path(str(_tree_root(target)))
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        if placed:  # only what this call wrote: the same bytes unpacked by another upload meanwhile are that one's
            discard_upload(target)
        raise


def _place(temp: Path, target: Path) -> bool:
    """Move an unpacked tree to its content's folder; False when another upload of the same bytes got there first
    (its tree is the same, and this one is removed)."""
    try:
        os.replace(temp, target)
        return True
    except OSError:
        if not (target / MARKER).is_file():
            raise
        shutil.rmtree(temp, ignore_errors=True)
        _mark_used(target)
        return False


def _check_members(members: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Refuse, before anything is written, a zip that cannot be unpacked safely or is not what it claims."""
    if len(members) > ZIP_MAX_FILES:
        raise DataError(f"the zip holds {len(members)} files; the limit is {ZIP_MAX_FILES}: use a folder on this machine instead")
    unpacked = sum(m.file_size for m in members)
    if unpacked > ZIP_MAX_BYTES:
        raise DataError(f"the zip unpacks to more than {ZIP_MAX_BYTES >> 20} MB: use a folder on this machine instead")
    if archives.inflates_too_much(unpacked, archive_bytes):
        raise DataError(f"the zip unpacks to {unpacked / max(archive_bytes, 1):.0f} times its size (the limit is {archives.MAX_RATIO}:1): "
                        "nothing was extracted; images do not compress like that: zip the image files themselves")
    seen: set[str] = set()
    for member in members:
        name = _member_path(member)
        _check_member(member, name)
        if name.as_posix() in seen:
            raise DataError(f"the zip holds {member.filename!r} twice: nothing was extracted; zip the folder again")
        seen.add(name.as_posix())
    folders = {parent.as_posix() for name in map(_member_path, members) for parent in name.parents}
    clash = seen & folders
    if clash:
        raise DataError(f"the zip holds {sorted(clash)[0]!r} both as a file and as a folder: nothing was extracted; zip the folder again")


def _member_path(member: zipfile.ZipInfo) -> PurePosixPath:
    return PurePosixPath(member.filename.replace("\\", "/"))


def _shown(member: zipfile.ZipInfo) -> str:
    return member.filename[:80] + ("..." if len(member.filename) > 80 else "")


def _check_member(member: zipfile.ZipInfo, name: PurePosixPath) -> None:
    shown = _shown(member)
    if name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", member.filename):
        raise DataError(f"the zip holds an unsafe path {shown!r}: nothing was extracted; zip the folder itself")
    if (member.external_attr >> 16) & 0o170000 == 0o120000:
        raise DataError(f"the zip holds a link {shown!r}: nothing was extracted; zip plain files only")
    if member.flag_bits & 0x1:
        raise DataError(f"the zip holds an encrypted file {shown!r}: nothing was extracted; zip the folder without a password")
    if len(member.filename.encode()) > PATH_MAX_BYTES or any(len(part.encode()) > NAME_MAX_BYTES for part in name.parts):
        raise DataError(f"the zip holds a name longer than a file system allows ({shown!r}): nothing was extracted; "
                        "shorten the file and folder names")
    if archives.inflates_too_much(member.file_size, member.compress_size):
        raise DataError(f"{shown} unpacks to {member.file_size / max(member.compress_size, 1):.0f} times its packed size "
                        f"(the limit is {archives.MAX_RATIO}:1): nothing was extracted; the zip looks like a zip bomb")


def _check_images(archive: zipfile.ZipFile, members: list[zipfile.ZipInfo], archive_bytes: int) -> None:
    """Refuse, before anything is written, an image that cannot be read or would decode out of
    proportion to its bytes (a 36-megapixel PNG of 35 kB zips to 2.5 kB, well within the zip's ratio),
    and images that together decode out of proportion to the zip (ZIP_FREE_PIXELS, then MAX_PIXELS_PER_BYTE):
    the header of each is read as `ordercomp.data.datasets` reads it when loading the tree."""
    pixels = 0
    for member in members:
        if _member_path(member).suffix.lower() in IMAGE_SUFFIXES:
            with _unpacked(archive, member) as source, opened_image(source, _shown(member), member.file_size) as image:
                pixels += decoded_pixels(image)
    if pixels > ZIP_FREE_PIXELS and pixels > MAX_PIXELS_PER_BYTE * archive_bytes:
        raise DataError(f"the zip's images decode to {pixels:,} pixels in all, {pixels // max(archive_bytes, 1):,} per byte of the zip "
                        f"(over {ZIP_FREE_PIXELS // 1_000_000_000} gigapixel the limit is {MAX_PIXELS_PER_BYTE}): nothing was extracted; "
                        "images do not compress like that: shrink them to about the input size, or use a folder on this machine")


@contextmanager
def _unpacked(archive: zipfile.ZipFile, member: zipfile.ZipInfo):
    """A member unpacked once into a seekable buffer (memory, then a temporary file): seeking back in zipfile's own stream
    inflates the member again from its start, and PIL seeks back for every TIFF tag whose value lies elsewhere in the
    file (30,000 tags in a 1 MiB member: two minutes of the server's CPU for one image)."""
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as buffer:
        with _unpacking(member), archive.open(member) as source:
            shutil.copyfileobj(source, buffer, 1 << 20)
        buffer.seek(0)
        yield buffer


@contextmanager
def _unpacking(member: zipfile.ZipInfo):
    """A member that cannot be unpacked is one DataError line."""
    try:
        yield
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError, zlib.error) as error:
        raise DataError(f"{member.filename} cannot be unpacked ({error}): the zip is damaged; zip the folder again") from None


def _extract_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, root: Path) -> None:
    """Write one member, counting the bytes actually written against what it declared."""
    destination = root / _member_path(member)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with _unpacking(member), archive.open(member) as source, open(destination, "xb") as target:
            written = 0
            for block in iter(lambda: source.read(1 << 20), b""):
                written += len(block)
                if written > member.file_size:
                    raise DataError(f"{member.filename} unpacks to more than it declares: the zip is damaged or malicious")
                target.write(block)
    except OSError as error:
        raise DataError(f"{member.filename} cannot be written ({error.strerror or error}): nothing was kept") from None


def _tree_root(folder: Path) -> Path:
    """Descend through folders that hold nothing but one folder (a zip of `dataset/cat/...`)."""
    entries = [p for p in folder.iterdir() if p.name not in ("__MACOSX", MARKER)]
    while len(entries) == 1 and entries[0].is_dir():
        folder = entries[0]
        entries = list(folder.iterdir())
    return folder


def checkpoint_types() -> list[str]:
    """File name endings an uploaded model may have."""
    from .models.checkpoints import PROGRAM_SUFFIXES, STATE_SUFFIXES, TIMM_ENDING

    return sorted(suffix.lstrip(".") for suffix in STATE_SUFFIXES | PROGRAM_SUFFIXES | {TIMM_ENDING})


def check_upload_size(name: str, data: bytes, limit_mb: int, remedy: str) -> None:
    """Refuse an upload over its limit (the page's file uploader states it; this holds it whatever sent the bytes)."""
    if len(data) > limit_mb << 20:
        raise DataError(f"{name} is larger than the {limit_mb} MB an upload may be ({len(data) / 2**20:.1f} MB): {remedy}")


def save_upload(folder: Path, name: str, data: bytes, limit_mb: int = UPLOAD_LIMIT_MB) -> Path:
    """Keep an uploaded file under `folder`, as `<content hash>/<cleaned file name>`."""
    check_upload_size(name, data, limit_mb, "give a smaller file")
    clean = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name).lstrip(".") or "upload"
    path = folder / hashlib.sha256(data).hexdigest()[:16] / clean
    if not path.exists():
        check_room(folder, len(data), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    _mark_used(path.parent)
    if not path.exists():
        write_atomically(path, lambda temp: Path(temp).write_bytes(data))
    return path


def check_room(folder: Path, incoming: int, name: str) -> None:
    """Refuse an upload that would take the store's kept uploads (`KEPT_FOLDERS` beside `folder`) beyond the
    $ORDERCOMP_UPLOADS_GB its operator allows, or leave its disk with less than DISK_RESERVE_BYTES free: users
    of a served dashboard share that disk with the step cache, the job store and the exports."""
    quota_gb = _uploads_quota_gb()
    held = sum(_bytes_under(folder.parent / kept) for kept in KEPT_FOLDERS)
    if held + incoming > quota_gb * 1e9:
        raise DataError(f"{name} would take {incoming / 1e6:,.1f} MB, and this server's uploads already hold "
                        f"{held / 1e9:.2f} of the {quota_gb:g} GB its operator allows (${UPLOADS_GB_ENV}): uploads no job "
                        f"uses go a week after their last use; ask the operator for more room, or use a smaller file")
    free = shutil.disk_usage(folder.parent).free
    if free - incoming < DISK_RESERVE_BYTES:
        raise DataError(f"{name} would take {incoming / 1e6:,.1f} MB, and the disk holding this server's store has "
                        f"{free / 1e9:.2f} GB free, which must stay above {DISK_RESERVE_BYTES / 1e9:.2f} GB: ask the "
                        "operator to free space")


def _uploads_quota_gb() -> float:
    text = os.environ.get(UPLOADS_GB_ENV, "").strip()
    try:
        quota = float(text) if text else UPLOADS_DEFAULT_GB
    except ValueError:
        quota = -1.0
    if not quota >= 0:
        raise DataError(f"${UPLOADS_GB_ENV} is {text!r}: the operator sets it to the gigabytes uploads may hold, e.g. 10")
    return quota


def _bytes_under(folder: Path) -> int:
    """The bytes of the files under `folder` (links not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for file in files:
            try:
                total += os.lstat(os.path.join(root, file)).st_size
            except OSError:  # removed meanwhile by a sweep
                pass
    return total


def _mark_used(upload: Path) -> None:
    """Mark a folder as an upload ordercomp wrote, and note that it is in use now."""
    (upload / MARKER).touch()


def discard_upload(upload: Path) -> bool:
    """Remove an upload's folder (`<hash>`, or the file in it) if ordercomp wrote it; returns whether it did."""
    upload = upload if upload.is_dir() else upload.parent
    if not (upload / MARKER).is_file():
        return False
    shutil.rmtree(upload, ignore_errors=True)
    return True


def sweep_abandoned(folder: Path, in_use: set[str], max_age_s: float = ABANDONED_AFTER_S) -> list[Path]:
    """Remove the uploads under `folder` that no job uses (no path in `in_use` lies inside them) and
    that were last used over `max_age_s` ago; returns what was removed. Only marked folders go."""
    removed = []
    for upload in folder.iterdir() if folder.is_dir() else ():
        marker = upload / MARKER
        if not marker.is_file() or time.time() - marker.stat().st_mtime < max_age_s:
            continue
        if any(Path(path).is_relative_to(upload) for path in in_use) or not discard_upload(upload):
            continue
        removed.append(upload)
    return removed


def keep_checkpoint(folder: Path, name: str, data: bytes) -> Path:
    """Save an uploaded model file and read it once (running nothing from it); an unreadable file is
    refused with a CheckpointError saying why, and removed again whatever stopped the reading.
    TorchScript is not read here: loading it runs its code (see `read_checkpoint`); it is not even kept
    where this server's operator has not allowed TorchScript."""
    from .models.checkpoints import CheckpointError, is_torchscript
    from .models.factories import server_runs_torchscript, torchscript_refused

    kept_before = _kept_files(folder / hashlib.sha256(data).hexdigest()[:16])
    path = save_upload(folder, name, data)
    try:
        if not is_torchscript(path):
            read_checkpoint(path)
        elif not server_runs_torchscript():
            raise CheckpointError(torchscript_refused(name))
    except Exception:
        _discard_refused(path, kept_before)
        raise
    return path


def is_kept_checkpoint(text: str, store_folder: Path) -> bool:
    """Whether `text` names a checkpoint `keep_checkpoint` kept in the store's CHECKPOINTS_FOLDER (links resolved), told
    before anything of it is read: the only model files a served dashboard's jobs may read, since a spec written by a
    stale or crafted session would otherwise load, compress and hand out any model file on the server."""
    folder = (store_folder / CHECKPOINTS_FOLDER).resolve()
    return not too_long("", text) and Path(text).expanduser().resolve().is_relative_to(folder)


def _kept_files(upload: Path) -> set[str]:
    """The files an upload's folder holds besides its marker (the same bytes uploaded before under other names)."""
    return {entry.name for entry in upload.iterdir() if entry.name != MARKER} if upload.is_dir() else set()


def _discard_refused(path: Path, kept_before: set[str]) -> None:
    """Remove a refused upload: its whole folder when nothing else was kept in it, else only the file this upload
    added (the same bytes under another name, e.g. model.pt beside a refused model.safetensors, stay for the jobs
    that use them)."""
    others = kept_before - {path.name}
    if not others:
        discard_upload(path)
    elif path.name not in kept_before:
        path.unlink(missing_ok=True)


def read_checkpoint(path: Path, *, trust_torchscript: bool = False, ema: bool = False):
    """A whole model (.pt2, or TorchScript when the user trusts the file), or the `Weights` of an uploaded file (its
    EMA weights' entry with `ema`, where they have one).

    Loading TorchScript runs code stored in the file (it can read and write files), so a TorchScript
    file is refused, unread, unless this server's operator allows TorchScript and `trust_torchscript` is set."""
    from .models.checkpoints import PROGRAM_SUFFIXES, CheckpointError, is_state_file, is_torchscript, load_program
    from .models.weights import read_weights
    from .models.factories import server_runs_torchscript, torchscript_refused

    if is_torchscript(path):
        if not server_runs_torchscript():
            raise CheckpointError(torchscript_refused(path.name))
        if not trust_torchscript:
            raise CheckpointError(f"{path.name} is TorchScript: loading it runs code stored in the file, so nothing from it was "
                                  "run; tick 'I trust this file' if you made it yourself, or upload a state dict")
        return load_program(path, trust_torchscript=True)
    if path.suffix in PROGRAM_SUFFIXES:
        return load_program(path)
    if not is_state_file(path):
        raise CheckpointError(f"{path.name} has an unknown type: upload a state dict (.pt, .pth, .pth.tar, .ckpt, .safetensors), a .pt2 or a TorchScript file")
    return read_weights(path, ema=ema)


def check_checkpoint(path: Path, architecture: str | None, *, trust_torchscript: bool = False, ema: bool = False) -> str:
    """One line saying what an uploaded model file holds; a state dict (its EMA weights with `ema`) is checked against
    `architecture`.

    A state dict needs an architecture; a .pt2 or TorchScript archive is a whole model."""
    from .models.checkpoints import CheckpointError
    from .models.weights import Weights

    content = read_checkpoint(path, trust_torchscript=trust_torchscript, ema=ema)
    if not isinstance(content, Weights):
        if ema:
            raise CheckpointError(f"{path.name} is a whole program, not a checkpoint with EMA weights: untick 'EMA weights'")
        kind = "torch.export program" if path.suffix == ".pt2" else "TorchScript model (its code runs: you trust it)"
        return f"{path.name}: a {kind} with {sum(p.numel() for p in content.parameters()):,} parameters"
    if architecture is None:
        raise CheckpointError(f"{path.name} holds weights only: choose its architecture")
    mismatch = state_dict_mismatch(content, architecture, path.name, ema=ema)
    if mismatch:
        raise CheckpointError(f"{path.name} does not fit {architecture}: {mismatch}; choose the architecture it was saved from")
    return _state_dict_line(path, content, ema, f" for {architecture}")


def check_weights(path: Path, *, ema: bool = False) -> str:
    """One line saying what an uploaded weights file for a registered factory holds (its EMA weights with `ema`), read
    without the model: the factory is built, and the names and shapes checked, only by the job that uses them. A file
    without EMA weights (no entry of their own, no name under an EMA prefix) is refused with `ema` here already."""
    from .models.weights import has_ema_names, no_ema_weights, read_weights

    weights = read_weights(path, ema=ema)
    if ema and not weights.ema and not has_ema_names(weights.tensors):
        raise no_ema_weights(path.name, weights, {})
    return _state_dict_line(path, weights, ema)


def _state_dict_line(path: Path, weights, ema: bool, fits: str = "") -> str:
    """'w.pt: a state dict of 12 tensors (4,934 values) for cnn_tiny, its EMA weights read': an upload check's line."""
    tensors = weights.tensors.values()
    return (f"{path.name}: a state dict of {len(tensors)} tensors ({sum(t.numel() for t in tensors):,} values){fits}"
            + (", its EMA weights read" if ema else ""))


def state_dict_mismatch(weights, architecture: str, file: str, *, ema: bool = False) -> str | None:
    """What keeps `weights` (their EMA weights with `ema`) from loading into `architecture` (built for the classes and
    input channels the weights themselves have): missing and unexpected keys and shape mismatches; None if it fits.
    A framework's prefix on the names (module., model.) is left out, as it is when the weights load; EMA weights the
    file lacks are refused as they are then.
    The model is built on torch's meta device: only its names and shapes are compared, and the classes and channels
    come from the file (a 1 kB file may declare a billion classes in a stride-0 tensor), so nothing is allocated."""
    import torch

    from .models.weights import no_ema_weights, within_prefix
    from .models.zoo import create_model

    with torch.device("meta"):
        expected = create_model(architecture, *_classes_and_channels(weights.tensors)).state_dict()
    prefix, state = within_prefix(weights.tensors, expected, ema=ema and not weights.ema)
    if prefix is None:
        raise no_ema_weights(file, weights, expected)
    missing, unexpected = [k for k in expected if k not in state], [k for k in state if k not in expected]
    wrong = [f"{k} is {tuple(state[k].shape)}, needs {tuple(expected[k].shape)}" for k in expected
             if k in state and state[k].shape != expected[k].shape]
    parts = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
             for what, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if keys]
    return "; ".join(parts) or None


def _classes_and_channels(state: dict) -> tuple[int, int]:
    """The classes of the last matrix and the input channels of the first convolution in a state dict (10 and 1 if absent)."""
    matrices = [t for k, t in state.items() if k.endswith("weight") and t.dim() == 2]
    kernels = [t for k, t in state.items() if k.endswith("weight") and t.dim() == 4]
    return (matrices[-1].shape[0] if matrices else 10), (kernels[0].shape[1] if kernels else 1)
