"""Pickles from users, measured before an unpickler builds anything from them.

An unpickler builds one object per opcode: a pickle of one-byte opcodes that each make an empty dict (`}`)
takes about 70 bytes of memory per byte of file, and the pure-Python unpicklers ordercomp and torch's
weights-only reader use spend microseconds on each. `check_opcodes` walks the opcodes without building
anything (pickletools) and refuses a pickle of more than a limit: a state dict takes ~30 per tensor, a
CIFAR batch a few per label, far below it.
"""
from __future__ import annotations

import pickletools
from typing import BinaryIO

MAX_OPCODES = 5_000_000  # at ~70 bytes each at most ~350 MB built; a 10,000-tensor state dict takes ~300,000


class PickleRefused(ValueError):
    """A pickle with more opcodes than allowed."""


def check_opcodes(stream: BinaryIO, limit: int | None = None, pickles: int = 1) -> None:
    """Walk `pickles` consecutive pickles from `stream` (each up to its STOP), refusing more than `limit` opcodes in all.
    Bytes that are no pickle end the walk quietly: an unpickler reads as far as the walk did and then fails on them."""
    limit = MAX_OPCODES if limit is None else limit
    count = 0
    try:
        for _ in range(pickles):
            for _ in pickletools.genops(stream):
                count += 1
                if count > limit:
                    raise PickleRefused(f"more than {limit:,} pickle operations")
    except PickleRefused:
        raise
    except Exception:  # an unknown opcode or a truncated argument: the unpickler stops there too, and says so itself
        return
