"""Errors as the one line a user reads: the error's type and the first line of its message.

Torch-free, so the job worker can use it before torch is imported.
"""
from __future__ import annotations

LIMIT = 300


def one_line(error: BaseException) -> str:
    """'TypeName: first line of the message' (cut at 300 characters), or the type alone for an empty message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:LIMIT]}" if lines else type(error).__name__
