"""Folders ordercomp writes (results, exports): it replaces its own files there and deletes nothing else.

A folder ordercomp creates carries a marker file saying what wrote it. An existing folder is
written into only when it is empty, carries the marker, or holds nothing but the files an older
ordercomp wrote; any other folder is refused before work starts. Files are written to a staging
folder first; a new destination is renamed into place whole, an existing one has only
ordercomp's own files replaced (each atomically) and every other file is left as it was.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator


def check_writable(out: Path, marker: str, what: str, own: Iterable[str] = ()) -> None:
    """Refuse, in one line, a destination that holds files ordercomp did not write."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder: choose a new or empty folder for the {what}")
    entries = set(os.listdir(out))
    if entries and marker not in entries and not entries <= set(own):
        others = ", ".join(sorted(entries - set(own))[:3])
        raise ValueError(f"{out} is not an ordercomp {what} folder (it holds {others}{', ...' if len(entries) > 3 else ''}): "
                         f"choose a new or empty folder for the {what}; nothing there was changed")


@contextmanager
def staged(out: Path, marker: str, what: str, *, own: Iterable[str] = (), stale: Iterable[str] = ()) -> Iterator[Path]:
    """A staging folder to write into; on success its files reach `out` and `stale` earlier files of ours
    that were not rewritten are removed. On failure only the staging folder goes."""
    out = Path(out).absolute()
    check_writable(out, marker, what, own)
    parent = out if out.is_dir() else out.parent
    parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=parent, prefix=".ordercomp-staging-"))
    try:
        (temp / marker).write_text(f"written by ordercomp ({what}); ordercomp replaces only its own files in this folder\n")
        yield temp
        _publish(temp, out, stale)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # the staging folder this function made, empty after publishing


def _publish(temp: Path, out: Path, stale: Iterable[str]) -> None:
    if not out.exists():
        os.replace(temp, out)
        return
    written = {path.name for path in temp.iterdir()}
    for name in sorted(written):
        os.replace(temp / name, out / name)
    for name in set(stale) - written:
        if Path(name).name == name:  # only a plain file name from our own record, never a path elsewhere
            (out / name).unlink(missing_ok=True)
