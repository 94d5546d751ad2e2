"""Tests for the probability that each evaluated order is the best of them."""

import random

import pytest

from ordercomp.order.evidence import t_cdf
from ordercomp.order.certainty import probability_best
from ordercomp.order.race import Trial

A, B, C = ("a", "b"), ("b", "a"), ("c", "a")


def seeded(means, noise, seeds, tag="x"):
    return {chain: {s: Trial(mean + noise * random.Random(f"{tag}|{chain}|{s}").gauss(0, 1)) for s in range(seeds)}
            for chain, mean in means.items()}


def test_probabilities_sum_to_one_and_are_the_same_every_time():
    evidence = seeded({A: 90.0, B: 89.5, C: 89.0}, 1.0, 3)
    first = probability_best(evidence)
    assert sum(first.values()) == pytest.approx(1.0) and first == probability_best(evidence)
    assert max(first, key=first.get) == max(evidence, key=lambda c: sum(t.score for t in evidence[c].values()))


def test_a_clear_best_is_near_certain_and_equal_orders_share():
    assert probability_best(seeded({A: 90.0, B: 80.0}, 0.5, 3))[A] > 0.99
    deviations = [1.0, -1.0, 0.5, -0.5, 0.0, 0.0]  # the same mean, each order noisy on other seeds
    equal = {chain: {s: Trial(90.0 + deviations[(s + 2 * shift) % 6]) for s in range(6)} for shift, chain in enumerate((A, B, C))}
    assert all(0.2 < share < 0.47 for share in probability_best(equal).values())


def test_two_orders_match_the_paired_t_distribution():
    evidence = seeded({A: 90.0, B: 89.7}, 1.0, 12, tag="t")
    diffs = [evidence[A][s].score - evidence[B][s].score for s in range(12)]
    mean = sum(diffs) / 12
    se = (sum((d - mean) ** 2 for d in diffs) / 11 / 12) ** 0.5
    probability = probability_best(evidence)[A] if mean > 0 else probability_best(evidence)[B]
    assert probability == pytest.approx(t_cdf(abs(mean) / se, 11), abs=0.02)


def test_lower_is_better_favours_the_smaller_mean():
    probabilities = probability_best(seeded({A: 1.0, B: 2.0}, 0.1, 3), higher_is_better=False)
    assert probabilities[A] > 0.99


def test_one_seed_without_per_image_evidence_measures_no_noise():
    assert probability_best(seeded({A: 90.0, B: 89.0}, 1.0, 1)) is None


def test_per_image_evidence_is_paired_image_by_image():
    """The same seed scores; in one case both orders miss the same hard images and differ on 4 of 100,
    in the other they miss different images: only the first difference is consistent image by image."""
    scores = {A: [90.0, 91.0, 89.0], B: [86.0, 87.5, 85.0]}
    hard = [1] * 90 + [0] * 10
    shared = {A: tuple(hard), B: tuple(hard[:86] + [0] * 4 + hard[90:])}
    apart = {A: tuple(hard), B: tuple([0] * 14 + [1] * 86)}

    def evidence(hits):
        return {c: {s: Trial(v, hits[c]) for s, v in enumerate(values)} for c, values in scores.items()}

    assert probability_best(evidence(shared))[A] > probability_best(evidence(apart))[A]


def test_an_order_on_one_seed_gets_the_pooled_seed_noise():
    evidence = seeded({A: 90.0, B: 89.0}, 1.0, 4)
    evidence[C] = {0: Trial(90.6)}
    probabilities = probability_best(evidence)
    assert 0.4 < probabilities[C] < 0.9  # ahead on one seed, by less than the pooled seed sd
