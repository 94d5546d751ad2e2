"""Tests for the probability that each evaluated order is the best of them."""

import random
from statistics import NormalDist

import pytest

from ordercomp.order.evidence import t_cdf
from ordercomp.order.certainty import probability_best
from ordercomp.order.race import Trial, paired_interval

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


@pytest.mark.parametrize("diffs", [[1.0, -0.2], [1.0, 0.2, -0.3]])
def test_few_seeds_give_the_heavy_tails_of_the_paired_t_at_k_minus_one_degrees_of_freedom(diffs):
    k, shared = len(diffs), [0.5, -1.0, 0.3]  # seed noise both orders share cancels in the pairing
    evidence = {A: {s: Trial(90.0 + shared[s] + d) for s, d in enumerate(diffs)}, B: {s: Trial(90.0 + shared[s]) for s in range(k)}}
    mean = sum(diffs) / k
    se = (sum((d - mean) ** 2 for d in diffs) / (k - 1) / k) ** 0.5
    assert probability_best(evidence, draws=20000)[A] == pytest.approx(t_cdf(mean / se, k - 1), abs=0.008)


def test_seeds_and_per_image_evidence_give_the_spread_of_the_paired_interval():
    """The module's promise: the difference of two orders spreads as `paired_interval` says (seed and image parts)."""
    hits = {A: [(1, 1, 0, 1, 1, 0, 1, 1, 1, 0), (1, 1, 1, 1, 0, 0, 1, 1, 1, 1), (1, 0, 1, 1, 1, 0, 1, 1, 1, 0)],
            B: [(1, 1, 0, 0, 1, 0, 1, 1, 1, 0), (1, 0, 1, 1, 0, 0, 1, 1, 1, 0), (1, 1, 1, 1, 0, 0, 1, 0, 1, 0)]}
    evidence = {c: {s: Trial(100 * sum(h) / 10 + 0.5 * s, h) for s, h in enumerate(rows)} for c, rows in hits.items()}
    interval = paired_interval(evidence[A], evidence[B], True, 0.95)
    expected = t_cdf(interval.mean / interval.standard_error, interval.degrees_of_freedom)
    assert probability_best(evidence, draws=20000)[A] == pytest.approx(expected, abs=0.008)


def test_a_single_evaluated_order_is_certain():
    assert probability_best({A: {0: Trial(90.0)}}) == {A: 1.0}


def test_orders_without_noise_leave_no_doubt():
    assert probability_best({A: {s: Trial(90.0) for s in range(3)}, B: {s: Trial(89.0) for s in range(3)}}) == {A: 1.0, B: 0.0}


def test_an_order_sharing_one_seed_with_the_leader_gets_the_pooled_seed_noise_and_degrees_of_freedom():
    """B ran on seed 0 only: its one score has the variance of one seed of A, and the seeds' 2 degrees of freedom."""
    a = [91.0, 89.0, 90.5]
    evidence = {A: {s: Trial(v) for s, v in enumerate(a)}, B: {0: Trial(89.2)}}
    mean_a = sum(a) / 3
    variance = sum((v - mean_a) ** 2 for v in a) / 2
    z = (mean_a - 89.2) / (variance / 3 + variance) ** 0.5
    assert probability_best(evidence, draws=20000)[A] == pytest.approx(t_cdf(z, 2), abs=0.006)


def test_one_seed_with_per_image_evidence_gives_the_normal_probability_of_the_image_differences():
    hits = {A: (1, 1, 1, 1, 1, 1, 1, 1, 0, 0), B: (1, 1, 1, 1, 1, 1, 0, 0, 1, 0)}
    evidence = {c: {0: Trial(100 * sum(h) / len(h), h)} for c, h in hits.items()}
    differences = [100 * (x - y) for x, y in zip(hits[A], hits[B])]
    mean = sum(differences) / 10
    se = (sum((d - mean) ** 2 for d in differences) / 9 / 10) ** 0.5
    assert probability_best(evidence, draws=20000)[A] == pytest.approx(NormalDist().cdf(mean / se), abs=0.008)


def test_per_image_evidence_on_only_some_trials_falls_back_to_the_seeds():
    evidence = seeded({A: 90.0, B: 89.5}, 1.0, 3)
    mixed = {c: dict(trials) for c, trials in evidence.items()}
    mixed[A][0] = Trial(mixed[A][0].score, (1, 0, 1))
    assert probability_best(mixed) == probability_best(evidence)


@pytest.mark.parametrize("hits", [
    {A: [(1, 0, 1), (1, 0)], B: [(1, 1, 0), (0, 1, 1)]},  # one seed's images differ
    {A: [(1,), (0,)], B: [(1,), (1,)]},                   # one image is no spread
    {A: [(1, 0, 1), (1, 1, 1)], B: [(1, 0), (0, 1)]},     # the orders saw different images
])
def test_per_image_evidence_that_does_not_line_up_is_refused(hits):
    evidence = {c: {s: Trial(90.0 - s - (c == B), h) for s, h in enumerate(rows)} for c, rows in hits.items()}
    with pytest.raises(ValueError, match="per-image evidence"):
        probability_best(evidence)


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
