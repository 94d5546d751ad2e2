"""Folders ordercomp writes (results, exports): it replaces its own files there and deletes nothing else.

A folder is ordercomp's only when it carries ordercomp's marker file (`.ordercomp-results`,
`.ordercomp-export`); what its other files are named proves nothing. The marker records the SHA-256
of every file ordercomp wrote there, and a file counts as ordercomp's only while its name is one that
ordercomp writes in such a folder and its content still has the recorded checksum: a file you edited
or replaced is never overwritten or deleted, and even a planted marker can only claim files of
ordercomp's names with exactly the recorded content. A folder written before markers held checksums
is read through what that version recorded elsewhere (`FolderKind.legacy`).

Before any work, `check_destination` refuses in one line a folder that is not ordercomp's and not
empty, a file of ordercomp's name that is not ordercomp's, a path that cannot be created (through a
file, a dangling link, a read-only parent) and less free space than the estimate of what will be
written. `write_folder` writes into a staging folder first; a new destination is renamed into place
whole, an existing one has only ordercomp's own files replaced (each atomically); the folder and files
get the permissions the user's umask gives, not the staging folder's private ones. When the destination
fails at the end anyway, the files go to a new folder in the system's temporary folder and the error
line says where, so a finished run is never lost to a folder problem.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, NoReturn, TypeVar

MIB = 1 << 20
# errors of the folder rather than of what is written: a full disk or quota, a read-only or locked folder
FOLDER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
MAX_MARKER_BYTES = MIB  # a marker records a few checksums; a bigger one is not ordercomp's
MAX_RECORD_BYTES = 64 * MIB  # what an older ordercomp recorded in such a folder (exploration.json, manifest.json); ~100 kB
# JSON builds a Python object of ~60 bytes from as little as '[],': 64 MiB of them took 2.7 GB. A record's values are
# at most its commas and brackets; an exploration record of 100 kB holds about 10,000
MAX_RECORD_VALUES = 1_000_000
T = TypeVar("T")


def nothing_recorded(folder: Path) -> dict[str, str]:
    return {}


@dataclass(frozen=True)
class FolderKind:
    """One kind of folder ordercomp writes: its marker, what it holds (for messages), every file name
    ordercomp writes there, and `legacy`, the checksums an older ordercomp recorded elsewhere."""

    marker: str
    what: str
    names: frozenset[str]
    legacy: Callable[[Path], dict[str, str]] = nothing_recorded


def write_atomically(target: Path, fill: Callable[[str], object]) -> None:
    """`fill(temp)` writes a new temporary file beside `target`, which then replaces `target` whole: a reader never
    sees half a file, two writers never share a temporary file, and it is removed whatever stops `fill` (an error,
    an interrupt), so nothing is left behind."""
    handle, temp = tempfile.mkstemp(dir=Path(target).parent, prefix=".", suffix=".tmp")
    os.close(handle)
    try:
        fill(temp)
        os.replace(temp, target)
    finally:
        Path(temp).unlink(missing_ok=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def is_marked(folder: Path, kind: FolderKind) -> bool:
    return _plain_file(folder / kind.marker)


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def recorded_checksums(folder: Path, kind: FolderKind) -> dict[str, str]:
    """{file name: SHA-256} of what ordercomp wrote into `folder`, by its marker (or, for an older
    marker without checksums, by `kind.legacy`)."""
    record = read_record(folder / kind.marker, MAX_MARKER_BYTES)  # None: no marker, or an older one of plain text
    if not (isinstance(record, dict) and record.get("written_by") == "ordercomp" and isinstance(record.get("sha256"), dict)):
        return kind.legacy(folder)
    return {name: digest for name, digest in record["sha256"].items() if isinstance(digest, str)}


def read_record(path: Path, max_bytes: int | None = None):
    """The JSON value a file in a folder holds, or None when it is missing, longer than `max_bytes` (MAX_RECORD_BYTES), of
    more than MAX_RECORD_VALUES values, not JSON, or nested deeper than Python's recursion limit: anyone may have written
    it, so it is read with bounded memory and no traceback."""
    max_bytes = max_bytes or MAX_RECORD_BYTES
    try:
        with open(path, "rb") as stream:
            text = stream.read(max_bytes + 1)
        values = text.count(b",") + text.count(b"[") + text.count(b"{")
        return json.loads(text) if len(text) <= max_bytes and values <= MAX_RECORD_VALUES else None
    except (OSError, ValueError, RecursionError):
        return None


def owned_files(folder: Path, kind: FolderKind) -> set[str]:
    """The files in `folder` that ordercomp wrote and nobody changed since: name and checksum as recorded."""
    return {name for name, digest in recorded_checksums(folder, kind).items()
            if name in kind.names and _plain_file(folder / name) and sha256(folder / name) == digest}


def marker_state(out: Path, kind: FolderKind) -> str:
    """The checksum of `out`'s marker ('' when it has none): another value at the end of a run than at its start
    means that another run wrote its files there meanwhile."""
    marker = Path(out) / kind.marker
    return sha256(marker) if marker.is_file() else ""


def check_destination(out: Path, kind: FolderKind, writes: Iterable[str], need_bytes: int) -> str:
    """Refuse, in one line, a destination ordercomp cannot write `writes` into, or one with less than
    `need_bytes` free; nothing is left changed (a probe folder is made and removed again). Returns the
    destination's `marker_state`, for `write_folder` to see whether another run wrote there in the meantime."""
    out = Path(out).absolute()
    existing = _existing_folder(out, kind.what)
    if existing == out:
        _check_ours(out, kind, writes)
    _check_writable(existing, kind.what)
    free = shutil.disk_usage(existing).free
    if free < need_bytes:
        raise ValueError(f"{out} needs about {need_bytes / MIB:.0f} MiB free for the {kind.what} (a rough estimate), but its disk has "
                         f"{free / MIB:.0f} MiB: free some space or choose a folder on another disk")
    return marker_state(out, kind)


def make_writable_folder(folder: Path, what: str) -> Path:
    """`folder`, created with its parents, after checking where it is or will be made that ordercomp can write
    there: one line (a ValueError) naming `what` when it cannot, with nothing created."""
    folder = Path(folder).absolute()
    _check_writable(_existing_folder(folder, what), what)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _existing_folder(out: Path, what: str) -> Path:
    """`out` when it exists, else its nearest existing ancestor, where it would be created."""
    path = out
    while not os.path.lexists(path):
        path = path.parent
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{path} is a link to {os.readlink(path)}, which does not exist: choose another folder for the {what}")
    if path == out and not path.is_dir():
        raise ValueError(f"{out} exists and is not a folder: choose a new or empty folder for the {what}")
    if not path.is_dir():
        raise ValueError(f"{out} cannot be created: {path} is a file, not a folder; choose another folder for the {what}")
    return path


def _check_ours(out: Path, kind: FolderKind, writes: Iterable[str], staging: str = "") -> set[str]:
    """The files of ordercomp's in the existing folder `out`; a ValueError when it is not ordercomp's folder or
    one of `writes` is there but not ordercomp's. `staging`: the name of this run's staging folder inside `out`,
    which makes no folder anyone's (an empty folder holds only it when the files are published)."""
    entries = sorted(name for name in os.listdir(out) if name != staging)
    if entries and not is_marked(out, kind):
        raise ValueError(f"{out} is not an ordercomp {kind.what} folder (it holds {', '.join(entries[:3])}{', ...' if len(entries) > 3 else ''}): "
                         f"choose a new or empty folder for the {kind.what}; nothing there was changed")
    owned = owned_files(out, kind)
    changed = sorted((set(writes) & set(entries)) - owned)
    if changed:
        raise ValueError(f"{out / changed[0]} was not written by ordercomp, or was changed since: move it away or choose another folder "
                         f"for the {kind.what}; nothing there was changed")
    return owned


def _check_writable(folder: Path, what: str) -> None:
    """Create and remove a folder of our own: permissions, read-only mounts and immutable folders all show."""
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder, prefix=".ordercomp-probe-"))
    except OSError as error:
        raise ValueError(f"cannot write the {what} into {folder} ({error.strerror or error}): choose a folder you can write to") from None


def write_folder(out: Path, kind: FolderKind, write: Callable[[Path], T], seen: str | None = None) -> T:
    """`write(folder)` into a staging folder, whose files then replace ordercomp's own in `out`; ordercomp's
    files there that were not written again are removed. A folder problem on the way (the staging folder
    cannot be made, a full disk, the destination changed during the run) writes everything elsewhere; so does
    another run's files reaching `out` since `check_destination` returned `seen`, so neither run's are lost."""
    out = Path(out).absolute()
    try:
        temp = Path(tempfile.mkdtemp(dir=out if out.is_dir() else _existing_folder(out, kind.what), prefix=".ordercomp-staging-"))
    except (OSError, ValueError) as problem:  # the destination changed since it was checked
        _write_elsewhere(out, kind, write, problem)
    try:
        try:
            value = write(temp)
            record_checksums(temp, kind)
            _usual_modes(temp)
        except OSError as problem:
            if problem.errno not in FOLDER_ERRNOS:
                raise
            _write_elsewhere(out, kind, write, problem)
        try:
            _publish(temp, out, kind, seen)
        except (OSError, ValueError) as problem:  # the destination changed during the run
            _write_elsewhere(out, kind, write, problem)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # the staging folder this function made, empty after publishing
    return value


def _usual_modes(folder: Path) -> None:
    """Give the staging folder and its files the permissions the user's umask gives a new folder and file:
    mkdtemp makes the folder private (0700), and a writer may make a file private too (safetensors: 0600),
    which a web server or a colleague could then not read."""
    probe = Path(folder) / ".ordercomp-mode-probe"
    probe.mkdir()
    folder_mode = probe.stat().st_mode & 0o7777
    probe.rmdir()
    for path in Path(folder).iterdir():
        path.chmod(folder_mode if path.is_dir() else folder_mode & 0o666)
    Path(folder).chmod(folder_mode)


def record_checksums(folder: Path, kind: FolderKind) -> None:
    """The marker, recording the checksum of every file in `folder`."""
    files = {path.name: sha256(path) for path in sorted(folder.iterdir()) if path.name != kind.marker}
    record = {"written_by": "ordercomp", "what": kind.what, "sha256": files,
              "note": "ordercomp replaces or removes only the files listed here, and only while they have these checksums"}
    (folder / kind.marker).write_text(json.dumps(record, indent=1) + "\n")


def _publish(temp: Path, out: Path, kind: FolderKind, seen: str | None) -> None:
    if seen is not None and marker_state(out, kind) != seen:
        raise ValueError(f"another run wrote its {kind.what} there while this one ran")
    if not os.path.lexists(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, out)
        return
    written = {path.name for path in temp.iterdir()}
    owned = _check_ours(out, kind, written - {kind.marker}, temp.name)  # again: files may have changed during the run
    for name in sorted(written - {kind.marker}) + [kind.marker]:
        os.replace(temp / name, out / name)
    for name in owned - written:
        (out / name).unlink(missing_ok=True)


def _write_elsewhere(out: Path, kind: FolderKind, write: Callable[[Path], object], problem: Exception) -> NoReturn:
    """Write everything again into a new folder in the system's temporary folder, and say so in one line."""
    elsewhere = None
    try:
        elsewhere = Path(tempfile.mkdtemp(prefix=f"ordercomp-{kind.what}-"))
        write(elsewhere)
        record_checksums(elsewhere, kind)
    except OSError as second:
        if elsewhere is not None:
            shutil.rmtree(elsewhere, ignore_errors=True)
        raise ValueError(f"could not write the {kind.what} to {out} ({_reason(problem)}) nor to the temporary folder "
                         f"({_reason(second)})") from None
    raise ValueError(f"could not write the {kind.what} to {out} ({_reason(problem)}); they were written to {elsewhere} instead") from None


def _reason(problem: Exception) -> str:
    if isinstance(problem, OSError) and problem.strerror:
        return problem.strerror
    lines = str(problem).splitlines()
    return lines[0] if lines else type(problem).__name__
