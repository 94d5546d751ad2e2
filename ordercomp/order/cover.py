"""Whole orders that place every method at every position before any model-guided proposal.

A model of where each method should go (search.py's surrogate) can only interpolate between
positions it has seen: from a few orders that never put a method first, it extrapolates what
putting it first would do. `covering_orders` picks orders that together put every method in every
position it can take: with nothing forced, a Latin square of n orders (each method once at each
position). When a pair can only be applied one way round (int8 can only come after a method that
trains), some cells cannot be filled, so the cover fills every *allowed* cell, and `uncoverable`
names the ones no allowed order reaches.

Among the orders that fill the most cells not yet filled, each pick is the one that agrees best
with the pair outcomes (then the lexicographically first, so the cover is deterministic). Filling
the most new cells first is enough for a Latin square: any k x n Latin rectangle extends to a
Latin square (Hall's marriage theorem), so an order filling n new cells always exists.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

Chain = tuple[str, ...]
Cell = tuple[str, int]  # a method and its 0-based position


def cells(chain: Sequence[str]) -> set[Cell]:
    """The (method, position) cells a chain fills."""
    return {(method, place) for place, method in enumerate(chain)}


def allowed_cells(methods: Sequence[str], allowed: Callable[[Chain], bool]) -> set[Cell]:
    """Every cell some allowed order of `methods` fills."""
    return {cell for chain in itertools.permutations(methods) if allowed(chain) for cell in cells(chain)}


def uncoverable(methods: Sequence[str], allowed: Callable[[Chain], bool]) -> list[Cell]:
    """Cells no allowed order fills (a forced pair keeps a method out of some positions), sorted."""
    every = {(method, place) for method in methods for place in range(len(methods))}
    return sorted(every - allowed_cells(methods, allowed))


def covering_orders(methods: Sequence[str], allowed: Callable[[Chain], bool], agreement: dict[Chain, float],
                    start: Sequence[Chain] = ()) -> list[Chain]:
    """Allowed orders that, with the `start` orders, fill every allowed cell; a Latin square when nothing is forced.

    `agreement` scores every order by how well it follows the pair outcomes (higher: better); the
    `start` orders (e.g. the pairwise chain) come first when allowed, and count as filling their cells.
    """
    candidates = [chain for chain in itertools.permutations(methods) if allowed(chain)]
    chosen = [tuple(chain) for chain in start if tuple(chain) in candidates]
    target = allowed_cells(methods, allowed)
    filled = set().union(*(cells(chain) for chain in chosen))
    while filled != target:
        best = min((chain for chain in candidates if chain not in chosen),
                   key=lambda chain: (-len(cells(chain) - filled), -agreement[chain], chain))
        chosen.append(best)
        filled |= cells(best)
    return chosen
