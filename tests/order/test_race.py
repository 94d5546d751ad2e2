"""Tests for the race: which orders get extra seeds, which are dropped, and what it spends."""

import random

import pytest

from ordercomp.order.evidence import difference_interval
from ordercomp.order.race import Trial, eliminated, paired_interval, race, shortfall, standing, unsettled
from ordercomp.order.search import prefix_cost
from ordercomp.order.synthetic import equal_orders

A, B, C, D = ("a", "b", "c"), ("b", "a", "c"), ("c", "a", "b"), ("a", "c", "b")


class World:
    """Known true means plus a fixed noise per (order, seed); records every run asked for."""

    def __init__(self, means, noise=0.5, fail=()):
        self.means, self.noise, self.fail, self.runs = means, noise, set(fail), []

    def trial(self, chain, seed):
        return Trial(self.means[chain] + self.noise * random.Random(f"{chain}|{seed}").gauss(0, 1))

    def evidence(self, seeds=3):
        return {chain: {s: self.trial(chain, s) for s in range(seeds)} for chain in self.means}

    def __call__(self, chains, seed):
        self.runs.append((list(chains), seed))
        return {chain: None if (chain, seed) in self.fail else self.trial(chain, seed) for chain in chains}


def test_an_order_far_below_the_leader_is_dropped_and_close_ones_stay():
    world = World({A: 90.0, B: 89.8, C: 70.0})
    assert eliminated(world.evidence(), [A, B, C], True, 0.95) == [C]


def test_the_race_runs_extra_seeds_only_for_the_better_half_of_the_contenders_within_its_budget():
    world = World({A: 90.0, B: 89.9, C: 89.8, D: 89.7}, noise=1.0)
    evidence = world.evidence()
    result = race(evidence, world, next_seed=3, budget=20)
    assert [seed for _, seed in world.runs] == list(range(3, 3 + len(world.runs))) == result.seeds_run
    assert all(len(chains) == 2 for chains, _ in world.runs)  # 4 contenders: the better half
    assert result.applications == sum(prefix_cost(chains) for chains, _ in world.runs) <= 20
    assert len(world.runs) >= 2
    for chains, seed in world.runs:
        assert all(seed in evidence[chain] for chain in chains)
    assert set(result.contenders) | set(result.dropped) == {A, B, C, D}


def test_a_race_ends_when_one_order_is_left_and_says_it_is_separated():
    world = World({A: 90.0, B: 80.0, C: 70.0}, noise=0.2)
    result = race(world.evidence(), world, next_seed=3, budget=100)
    assert result.contenders == [A] and result.separated and world.runs == []
    assert result.dropped == {B: 3, C: 3}


def test_equal_orders_are_not_separated_and_the_budget_bounds_the_seeds():
    world = World({A: 90.0, B: 90.0}, noise=1.0)
    result = race(world.evidence(), world, next_seed=3, budget=12)
    assert not result.separated and sorted(result.contenders) == sorted([A, B])
    assert result.applications == 12 and len(result.seeds_run) == 2  # both orders: 6 prefixes on each new seed


def test_an_order_that_fails_on_an_extra_seed_leaves_the_race():
    world = World({A: 90.0, B: 90.0, C: 89.0}, noise=1.0, fail={(B, 3)})
    result = race(world.evidence(), world, next_seed=3, budget=30)
    assert result.failed == [B] and B not in result.contenders and B not in result.dropped


def test_no_budget_means_no_extra_seed():
    world = World({A: 90.0, B: 90.0})
    result = race(world.evidence(), world, next_seed=3, budget=0)
    assert world.runs == [] and result.applications == 0 and len(result.contenders) == 2


@pytest.mark.parametrize("budget", [-1, 2.5, True])
def test_a_bad_budget_is_one_line(budget):
    with pytest.raises(ValueError, match="budget must be a whole number") as error:
        race({A: {0: Trial(1.0)}}, World({A: 1.0}), next_seed=1, budget=budget)
    assert "\n" not in str(error.value)


def test_the_comparison_is_paired_per_seed_and_per_image_with_the_seeds_degrees_of_freedom():
    world = equal_orders(random.Random(3), ["a", "b"], images=50)
    first = {s: Trial(*_trial(world.trial(("a", "b"), s))) for s in range(4)}
    second = {s: Trial(*_trial(world.trial(("b", "a"), s))) for s in range(1, 5)}  # common seeds: 1, 2, 3
    interval = paired_interval(first, second, True, 0.9)
    expected = difference_interval([first[s].score - second[s].score for s in (1, 2, 3)],
                                   [first[s].hits for s in (1, 2, 3)], [second[s].hits for s in (1, 2, 3)],
                                   confidence=0.9, seed_df=True)
    assert interval == expected and interval.images == 50 and interval.degrees_of_freedom == 2


def test_lower_is_better_orients_the_leader():
    world = World({A: 1.0, B: 5.0}, noise=0.1)
    assert eliminated(world.evidence(), [A, B], False, 0.95) == [B]


def test_an_order_could_be_better_by_the_far_end_of_the_paired_interval():
    world = World({A: 90.0, B: 89.0}, noise=1.0)
    evidence = world.evidence(seeds=4)
    points, interval = shortfall(evidence, A, B, True, 0.95)
    assert interval == paired_interval(evidence[A], evidence[B], True, 0.95) and points == max(0.0, -interval.low)
    one_seed = {A: {0: Trial(90.0)}, B: {0: Trial(89.0)}}
    assert shortfall(one_seed, A, B, True, 0.95)[0] == float("inf")  # one seed, no per-image evidence: nothing bounds it


def test_a_focused_race_runs_only_the_leader_and_the_orders_in_question_and_ends_when_none_is_left():
    """Settling: on 3 seeds C is second by mean but measured tightly against the leader A, so it could not be more than
    the margin better; B, third, could. Each new seed goes to A and B (halving would give it to A and C), until B could
    no longer be more than the margin better either."""
    world = World({A: 90.0, B: 89.6, C: 89.8}, noise=0.3)
    a = [90.2, 89.8, 90.0]
    evidence = {A: {s: Trial(v) for s, v in enumerate(a)},
                C: {s: Trial(v - 0.2 + w) for s, (v, w) in enumerate(zip(a, [0.2, -0.2, 0.0]))},
                B: {s: Trial(v - 0.4 + w) for s, (v, w) in enumerate(zip(a, [2.0, -2.0, 0.0]))}}
    focus = lambda contenders: unsettled(evidence, contenders, True, 0.95, 0.5)
    assert standing(evidence, True) == [A, C, B] and focus([A, C, B]) == [B] and not eliminated(evidence, [A, C, B], True, 0.95)
    result = race(evidence, world, next_seed=3, budget=200, focus=focus)
    assert len(world.runs) >= 2 and all(chains == [A, B] for chains, _ in world.runs)
    assert focus(result.contenders) == [] and result.applications < 200
    before = {chain: {s: t for s, t in trials.items() if s < world.runs[-1][1]} for chain, trials in evidence.items()}
    assert unsettled(before, standing(before, True), True, 0.95, 0.5)  # one seed earlier the choice was still open


def test_a_focused_race_drops_the_orders_significantly_worse_than_the_leader_once_at_the_end():
    world = World({A: 90.0, B: 80.0}, noise=0.2)
    asked = []
    result = race(world.evidence(), world, next_seed=3, budget=100, focus=lambda contenders: asked.append(contenders) or [])
    assert asked == [[A, B]] and world.runs == []  # B was still in when the focus was asked
    assert result.dropped == {B: 3} and result.separated


def _trial(trial):
    score, hits = trial
    return score, tuple(hits)


def test_a_single_order_needs_no_race():
    world = World({A: 90.0})
    result = race(world.evidence(), world, next_seed=3, budget=100)
    assert result.contenders == [A] and result.leader == A and result.separated
    assert world.runs == [] and result.dropped == {} and result.applications == 0


def test_a_race_needs_an_order_and_two_orders_need_a_common_seed():
    with pytest.raises(ValueError, match="at least one evaluated order"):
        race({}, World({}), next_seed=3, budget=10)
    with pytest.raises(ValueError, match="seeds both were measured on"):
        paired_interval({0: Trial(90.0)}, {1: Trial(89.0)}, True, 0.95)


def test_per_image_evidence_counts_only_when_both_orders_have_it_on_every_common_seed():
    hits = (1, 0, 1, 1)
    leader = {0: Trial(91.0, hits), 1: Trial(90.0, hits), 2: Trial(92.0, hits)}
    other = {0: Trial(90.0, (1, 0, 0, 1)), 1: Trial(89.5), 2: Trial(90.5, (0, 0, 1, 1))}
    expected = difference_interval([1.0, 0.5, 1.5], confidence=0.95, seed_df=True)
    assert paired_interval(leader, other, True, 0.95) == expected and expected.images == 0
    assert paired_interval(other, leader, True, 0.95).images == 0  # whichever of the two lacks it


def test_a_seed_on_which_every_contender_fails_ends_the_race_with_them_still_in():
    """Both orders left fail on the race's first extra seed: the race cannot go on, but it still has a leader (the
    better on the seeds they had), and the failures are reported."""
    world = World({A: 90.0, B: 90.0}, noise=1.0, fail={(A, 3), (B, 3)})
    evidence = world.evidence()
    result = race(evidence, world, next_seed=3, budget=100)
    assert sorted(result.failed) == sorted([A, B]) and result.seeds_run == [3] and len(world.runs) == 1
    assert sorted(result.contenders) == sorted([A, B]) and result.leader == standing(evidence, True)[0]


def test_two_orders_that_scored_the_same_on_every_seed_are_not_separated():
    """Two orders can build the same model (methods that commute): identical scores are no evidence that either is worse."""
    same = {s: Trial(v) for s, v in enumerate([90.0, 91.0, 89.5])}
    evidence = {A: dict(same), B: dict(same)}
    assert eliminated(evidence, [A, B], True, 0.95) == []
    assert unsettled(evidence, [A, B], True, 0.95, 0.0) == []


def test_an_order_clearly_below_the_leader_could_be_better_by_nothing_and_is_settled_at_any_margin():
    world = World({A: 90.0, C: 80.0}, noise=0.5)
    evidence = world.evidence()
    assert shortfall(evidence, A, C, True, 0.95)[0] == 0.0
    assert unsettled(evidence, [A, C], True, 0.95, 0.0) == []


def test_the_better_half_of_six_contenders_is_three():
    orders = [("a", "b", "c"), ("a", "c", "b"), ("b", "a", "c"), ("b", "c", "a"), ("c", "a", "b"), ("c", "b", "a")]
    world = World(dict.fromkeys(orders, 90.0), noise=3.0)
    race(world.evidence(), world, next_seed=3, budget=9)
    assert [len(chains) for chains, _ in world.runs] == [3]


def test_no_order_gets_more_than_max_seeds():
    world = World({A: 90.0, B: 90.0}, noise=1.0)
    evidence = world.evidence()
    result = race(evidence, world, next_seed=3, budget=1000, max_seeds=5)
    assert result.seeds_run == [3, 4] and all(len(trials) == 5 for trials in evidence.values())
