"""Which compression chains to apply, and how many applications each
exploration strategy costs.

Pairwise exploration applies every single method and every ordered pair.
Exhaustive exploration applies every prefix of every permutation once, so
chains sharing a prefix reuse the compressed model of that prefix.
"""

from __future__ import annotations

import itertools
import math

MAX_EXHAUSTIVE_METHODS = 6
ARROW = " → "  # between the methods of a chain, wherever a chain is written for people (pages, report, log, CLI)


def chain_text(chain) -> str:
    """A chain as people read it: 'prune → quantize'."""
    return ARROW.join(chain)


def pairwise_plan(methods: list[str]) -> list[tuple[str, ...]]:
    """Chains for pairwise exploration: every (a,), then every ordered (a, b), a != b."""
    _check_methods(methods)
    singles = [(method,) for method in methods]
    pairs = list(itertools.permutations(methods, 2))
    return singles + pairs


def exhaustive_plan(methods: list[str]) -> list[tuple[str, ...]]:
    """Every distinct prefix of every permutation, shortest first.

    Within one length, chains follow itertools.permutations order of
    `methods`, so each chain's prefix is always scheduled before it.
    """
    _check_methods(methods)
    if len(methods) > MAX_EXHAUSTIVE_METHODS:
        raise ValueError(
            f"exhaustive exploration of {len(methods)} methods needs "
            f"{exhaustive_applications(len(methods))} applications; use at most "
            f"{MAX_EXHAUSTIVE_METHODS} methods or the pairwise plan"
        )
    return [
        chain
        for length in range(1, len(methods) + 1)
        for chain in itertools.permutations(methods, length)
    ]


def pairwise_applications(n: int) -> int:
    """Applications in the pairwise plan: n singles + n(n-1) ordered pairs."""
    _check_count(n)
    return n + n * (n - 1)


def exhaustive_applications(n: int) -> int:
    """Applications in the exhaustive plan with prefix sharing: sum of n!/(n-k)!, k=1..n."""
    _check_count(n)
    return sum(math.perm(n, length) for length in range(1, n + 1))


def naive_exhaustive_applications(n: int) -> int:
    """Applications when every full permutation is built from scratch: n * n!."""
    _check_count(n)
    return n * math.factorial(n)


def _check_methods(methods: list[str]) -> None:
    for method in methods:
        if not isinstance(method, str) or not method:
            raise ValueError(f"method names must be non-empty strings, got {method!r}")
    if len(set(methods)) != len(methods):
        duplicates = sorted({method for method in methods if methods.count(method) > 1})
        raise ValueError(f"methods must be distinct; duplicated: {duplicates}")
    if len(methods) < 2:
        raise ValueError(f"comparing orders needs at least 2 methods, got {list(methods)}")


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of methods must be a positive integer, got {n!r}")
