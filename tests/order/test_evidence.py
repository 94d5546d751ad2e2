"""Tests for the pair-difference interval: t quantiles and calibration on synthetic A/A data."""

import math
import random
import statistics

import pytest

from ordercomp.order import decide_pair, difference_interval, simulate_pair, t_quantile


@pytest.mark.parametrize(
    ("probability", "df", "expected"),
    [
        (0.975, 1, 12.706205),
        (0.975, 2, 4.302653),
        (0.975, 3, 3.182446),
        (0.975, 10, 2.228139),
        (0.975, 30, 2.042272),
        (0.995, 5, 4.032143),
        (0.999, 1, 318.308839),
        (0.95, 2.5, 2.558219),
        (0.975, 1e7, 1.959964),
        (0.025, 4, -2.776445),
    ],
)
def test_t_quantile_matches_tables(probability, df, expected):
    assert t_quantile(probability, df) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("probability", "df"), [(0.0, 3), (1.0, 3), (0.9, 0)])
def test_t_quantile_rejects_impossible_arguments(probability, df):
    with pytest.raises(ValueError, match="must be"):
        t_quantile(probability, df)


def test_welch_satterthwaite_degrees_of_freedom():
    interval = difference_interval([1.0, 2.0, 3.0], [[1, 0, 1, 1]] * 3, [[0, 0, 1, 1]] * 3)
    seed_part, image_part = 1 / 3, 2500 / 4  # var(d)/k and var(D_i)/N with D = 100, 0, 0, 0
    assert interval.standard_error == pytest.approx(math.sqrt(seed_part + image_part))
    expected_df = (seed_part + image_part) ** 2 / (seed_part**2 / 2 + image_part**2 / 3)
    assert interval.degrees_of_freedom == pytest.approx(expected_df)


def test_one_seed_without_images_has_no_interval():
    interval = difference_interval([1.5])
    assert interval.low is None and interval.high is None and not interval.excludes_zero


def test_an_interval_on_one_side_of_zero_excludes_it_and_one_across_zero_does_not():
    assert difference_interval([2.0, 2.2, 1.8]).excludes_zero
    assert difference_interval([-2.0, -2.2, -1.8]).excludes_zero
    assert not difference_interval([2.0, -1.0, 0.5]).excludes_zero


def test_with_the_seeds_degrees_of_freedom_one_seed_has_no_interval_even_with_per_image_evidence():
    """The race compares orders on their common seeds with k - 1 degrees of freedom: on one common seed nothing
    measures the seed noise, so there is no interval (no drop, and an unbounded shortfall) rather than an error."""
    hits = ([[1, 0, 1, 1]], [[0, 0, 1, 1]])
    interval = difference_interval([25.0], *hits, seed_df=True)
    assert interval.low is None and interval.high is None and interval.images == 4 and not interval.excludes_zero
    assert difference_interval([25.0], *hits).low is not None  # Welch's df lean on the images


@pytest.mark.parametrize("differences", [[], [1.0, math.nan], [math.inf]])
def test_an_interval_needs_finite_differences(differences):
    with pytest.raises(ValueError, match="differences must be at least one finite number"):
        difference_interval(differences)


def _winner_rate(difference, simulations, rng_seed, rule):
    rng = random.Random(rng_seed)
    return statistics.fmean(rule(simulate_pair(rng, difference=difference)) for _ in range(simulations))


def _interval_rule(evidence):
    outcome = decide_pair(
        "a", "b", evidence.scores_first_then_second, evidence.scores_second_then_first,
        images_first_then_second=evidence.images_first_then_second,
        images_second_then_first=evidence.images_second_then_first,
    )
    return outcome.winner is not None


def _old_rule(evidence):
    """The rule before intervals: |mean| > max(0.5, 2 * se) over seeds."""
    diffs = [a - b for a, b in zip(evidence.scores_first_then_second, evidence.scores_second_then_first)]
    standard_error = statistics.stdev(diffs) / math.sqrt(len(diffs))
    return abs(statistics.fmean(diffs)) > max(0.5, 2 * standard_error)


def test_a_a_comparison_declares_a_winner_at_most_five_percent_of_the_time():
    # one order against itself: 359 images at ~97 %, ~0.4 points seed-to-seed, 3 seeds
    assert _winner_rate(0.0, 1000, 6, _interval_rule) <= 0.05


def test_a_true_two_point_difference_is_detected_most_of_the_time():
    assert _winner_rate(2.0, 200, 7, _interval_rule) >= 0.5


def test_the_old_rule_declared_more_false_winners():
    assert _winner_rate(0.0, 400, 8, _old_rule) > _winner_rate(0.0, 400, 8, _interval_rule)
