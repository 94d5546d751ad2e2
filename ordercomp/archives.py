"""Zip archives from users (model files, uploaded image trees, .npz arrays), opened with memory bounded by a member count
and unpacked only in proportion to their bytes.

zipfile builds one object for every central directory entry before a caller can check anything, so a
small file of millions of empty entries takes gigabytes (2M entries in 98 MB took 1.7 GB). Every such
entry starts with a signature: counting those first refuses the file before zipfile builds anything.
"""
from __future__ import annotations

import zipfile
from typing import BinaryIO

CENTRAL_DIRECTORY_ENTRY = b"PK\x01\x02"
MAX_RATIO = 100              # unpacked : packed; images barely compress, a zip bomb does by 1000:1 and more
RATIO_FROM_BYTES = 1 << 20   # small members and archives may compress well (text, blank images)


class ZipRefused(ValueError):
    """Not a zip archive, or one with more members than the caller allows; the message says which."""


class TooManyMembers(ZipRefused):
    """More central directory entries than the caller allows."""


def open_zip(source: BinaryIO, what: str, max_members: int) -> zipfile.ZipFile:
    """`source` as a ZipFile, refused (ZipRefused) when it holds more than `max_members` entries or is no zip."""
    count, tail = 0, b""
    for block in iter(lambda: source.read(1 << 20), b""):
        count, tail = count + (tail + block).count(CENTRAL_DIRECTORY_ENTRY), block[-3:]
    if count > max_members:
        raise TooManyMembers(f"{what} holds more than {max_members:,} members")
    source.seek(0)
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError):
        raise ZipRefused(f"{what} is not a zip archive") from None


def inflates_too_much(unpacked: int, packed: int) -> bool:
    """Whether `packed` bytes unpack to more than MAX_RATIO times themselves (and over RATIO_FROM_BYTES): a bomb, not images."""
    return unpacked > RATIO_FROM_BYTES and unpacked > MAX_RATIO * max(packed, 1)
