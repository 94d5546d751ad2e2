"""The explicit list of compression methods. A new method is one file plus one line here."""
from __future__ import annotations

from . import distill, early_exit, int8, lowrank, prune, quantize, sparsify, token_merge
from .base import Method

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        distill.METHOD,
        prune.METHOD,
        sparsify.METHOD,
        quantize.METHOD,
        int8.METHOD,
        early_exit.METHOD,
        lowrank.METHOD,
        token_merge.METHOD,
    )
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: choose from {', '.join(METHODS)}")
    return METHODS[name]


def parse_methods(text: str) -> list[str]:
    """'distill, prune' -> ['distill', 'prune'], checking every name."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("no methods given: name at least one, e.g. distill,prune")
    for name in names:
        get_method(name)
    return names


def method_names(methods) -> list[str]:
    """Method names given as a sequence, or as the command line's comma-separated text (whose characters they are not)."""
    return parse_methods(methods) if isinstance(methods, str) else list(methods)
