"""Tests for the cover of every (method, position): Latin squares, forced pairs, agreement with the pairs."""

import itertools

import pytest

from ordercomp.order.cover import allowed_cells, cells, covering_orders, uncoverable


def agreement_with(reference):
    """Every order scored by how close each method sits to its place in `reference` (higher: closer)."""
    place = {method: index for index, method in enumerate(reference)}
    return {chain: -sum(abs(index - place[m]) for index, m in enumerate(chain)) for chain in itertools.permutations(reference)}


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_without_forced_pairs_the_cover_is_a_latin_square_starting_with_the_given_order(n):
    methods = tuple(f"m{i}" for i in range(n))
    start = tuple(reversed(methods))
    cover = covering_orders(methods, lambda chain: True, agreement_with(methods), [start])
    assert cover[0] == start and len(cover) == n == len(set(cover))
    for place in range(n):
        assert sorted(chain[place] for chain in cover) == sorted(methods)  # each method once at each position


def test_each_added_order_is_the_best_agreeing_one_that_fills_only_new_cells():
    methods = ("a", "b", "c", "d")
    agreement = agreement_with(methods)
    cover = covering_orders(methods, lambda chain: True, agreement, [methods])
    for index in range(1, len(cover)):
        filled = set().union(*(cells(chain) for chain in cover[:index]))
        fresh = [chain for chain in itertools.permutations(methods) if not cells(chain) & filled]
        assert agreement[cover[index]] == max(agreement[chain] for chain in fresh)


def test_a_forced_pair_leaves_cells_uncoverable_and_the_cover_fills_every_allowed_one():
    methods = ("a", "b", "c", "int8")
    last = lambda chain: chain[-1] == "int8"  # int8 can only come after the methods that train
    assert uncoverable(methods, last) == [("a", 3), ("b", 3), ("c", 3), ("int8", 0), ("int8", 1), ("int8", 2)]
    cover = covering_orders(methods, last, agreement_with(methods), [("c", "b", "a", "int8")])
    assert all(last(chain) for chain in cover) and len(cover) == 3
    assert set().union(*map(cells, cover)) == allowed_cells(methods, last)


def test_a_start_order_that_is_not_allowed_is_left_out():
    methods = ("a", "b", "int8")
    last = lambda chain: chain[-1] == "int8"
    cover = covering_orders(methods, last, agreement_with(methods), [("int8", "a", "b")])
    assert ("int8", "a", "b") not in cover and set().union(*map(cells, cover)) == allowed_cells(methods, last)
