"""Settings checked by the types their dataclass declares, in one place for every config.

Method configs, the fine-tuning budget and the exploration spec all pass their user-given values
through `typed_fields`: a number must be a finite int or float (an int field takes only whole
numbers), text must be text and a switch must be a bool, so NaN, infinity, `2.5` calibration
batches or `ratio=abc` are refused with the field's name before any work starts. Text a setting is
parsed from (model arguments as JSON, means and stds) is held to MAX_TYPED_CHARS first (`too_long`).
"""
from __future__ import annotations

import math
import types
import typing

# A setting typed by hand is a few hundred characters. A dashboard's text box takes whatever a websocket message holds
# (Streamlit's 200 MB), parsed in the server's own process: 64 MB of model arguments took 2.4 GB and 36 s there
MAX_TYPED_CHARS = 100_000


def too_long(name: str, text: str) -> str | None:
    """Why `text`, typed as `name`, is not parsed (longer than MAX_TYPED_CHARS), or None; the text is not quoted back."""
    if len(text) <= MAX_TYPED_CHARS:
        return None
    return f"{name} is {len(text):,} characters long, more than the {MAX_TYPED_CHARS:,} such a setting takes; nothing of it was read"


def number(name: str, value, kind: type) -> int | float:
    """`value` as `kind` (int or float); bools, text, NaN, infinities and (for int) fractions are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if kind is int:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value}")
        return int(value)
    return float(value)


def typed_fields(cls: type, values: dict, prefix: str = "") -> dict:
    """`values` for the fields of dataclass `cls`, each checked against (and numbers converted to) its declared type."""
    hints = typing.get_type_hints(cls)
    return {key: _typed(f"{prefix}{key}", value, hints.get(key)) for key, value in values.items()}


def _typed(name: str, value, kind):
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(option for option in options if option is not type(None))
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return value
    if kind in (int, float):
        return number(name, value, kind)
    if kind is str and not isinstance(value, str):
        raise ValueError(f"{name} must be text, got {value!r}")
    return value
