"""Tests for pairwise order decisions between two compression methods."""

import json
import math
import statistics

import pytest

from ordercomp.order import OBJECTIVES, PairOutcome, decide_pair, incompatible_pair, only_order_pair, weighted_score


def test_consistent_gain_makes_first_the_winner():
    outcome = decide_pair("prune", "quant", [71.0, 71.2, 70.9], [69.0, 69.1, 68.8])
    assert outcome.winner == "prune"
    assert not outcome.tie
    assert outcome.mean_diff == pytest.approx(2.0667, abs=1e-3)
    assert outcome.margin == pytest.approx(outcome.mean_diff)
    assert outcome.spread == pytest.approx(statistics.stdev([71.0 - 69.0, 71.2 - 69.1, 70.9 - 68.8]))
    assert not outcome.weak_evidence
    assert outcome.incompatible is None


def test_reverse_order_better_makes_second_the_winner():
    outcome = decide_pair("prune", "quant", [60.0, 60.5], [65.0, 65.2])
    assert outcome.winner == "quant"
    assert outcome.mean_diff < 0


def test_difference_inside_noise_is_a_tie():
    outcome = decide_pair("prune", "quant", [70.0, 72.0, 69.0], [71.0, 70.0, 70.5])
    assert outcome.winner is None
    assert outcome.tie


def test_min_margin_turns_small_consistent_gain_into_tie():
    outcome = decide_pair("a", "b", [70.1, 70.1], [70.0, 70.0], min_margin=0.5)
    assert outcome.tie
    assert outcome.winner is None


def test_single_seed_decides_but_is_weak_evidence():
    outcome = decide_pair("a", "b", [70.0], [69.0])
    assert outcome.winner == "a"
    assert outcome.spread == 0.0
    assert outcome.weak_evidence


def test_borderline_win_is_weak_evidence():
    # diffs 0.65, 1.0, 1.35: mean 1.0, se 0.202; the 95 % half-width with 2 df is
    # 4.303 * 0.202 = 0.869, so the interval's near end (0.131) is within one se of 0.
    outcome = decide_pair("a", "b", [70.65, 71.0, 71.35], [70.0, 70.0, 70.0])
    assert outcome.winner == "a"
    assert outcome.low == pytest.approx(0.131, abs=1e-3)
    assert outcome.weak_evidence


def test_lower_is_better_flips_the_direction():
    latency_ab, latency_ba = [10.0, 10.1, 9.9], [12.0, 12.1, 11.9]
    lower = decide_pair("a", "b", latency_ab, latency_ba, higher_is_better=False)
    higher = decide_pair("a", "b", latency_ab, latency_ba, higher_is_better=True)
    assert lower.winner == "a"
    assert lower.mean_diff > 0
    assert higher.winner == "b"


def test_identical_scores_are_a_solid_tie():
    outcome = decide_pair("a", "b", [70.0, 70.0], [70.0, 70.0])
    assert outcome.tie
    assert not outcome.weak_evidence


@pytest.mark.parametrize(
    ("ab", "ba", "message"),
    [
        ([1.0, 2.0], [1.0], "one score per seed"),
        ([], [], "at least one seed"),
        ([1.0, math.nan], [1.0, 2.0], "finite"),
        ([1.0, "x"], [1.0, 2.0], "numbers"),
    ],
)
def test_invalid_scores_raise(ab, ba, message):
    with pytest.raises(ValueError, match=message):
        decide_pair("a", "b", ab, ba)


def test_same_method_twice_raises():
    with pytest.raises(ValueError, match="two different methods"):
        decide_pair("a", "a", [1.0], [1.0])


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"min_margin": -1.0}, "min_margin"), ({"confidence": 1.0}, "confidence")]
)
def test_invalid_thresholds_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        decide_pair("a", "b", [1.0], [0.0], **kwargs)


def test_incompatible_pair_has_no_winner_and_no_tie():
    outcome = incompatible_pair("quant", "prune", "pruning cannot run on quantized weights")
    assert outcome.winner is None
    assert not outcome.tie
    assert outcome.incompatible == "pruning cannot run on quantized weights"
    assert outcome.scores_first_then_second == ()
    with pytest.raises(ValueError, match="reason"):
        incompatible_pair("quant", "prune", " ")


@pytest.mark.parametrize(
    "outcome",
    [
        decide_pair("a", "b", [70.0, 71.0], [69.0, 69.5], higher_is_better=False),
        incompatible_pair("a", "b", "shape mismatch"),
    ],
)
def test_pair_outcome_json_round_trip(outcome):
    restored = PairOutcome.from_dict(json.loads(json.dumps(outcome.to_dict())))
    assert restored == outcome


def test_from_dict_missing_fields_raises():
    record = decide_pair("a", "b", [1.0], [0.0]).to_dict()
    del record["winner"]
    with pytest.raises(ValueError, match="winner"):
        PairOutcome.from_dict(record)


def test_weighted_score_rewards_fewer_bitops():
    assert weighted_score(70.0, 100.0, 100.0, 2.0) == pytest.approx(70.0)
    assert weighted_score(70.0, 25.0, 100.0, 2.0) == pytest.approx(74.0)
    assert weighted_score(70.0, 200.0, 100.0, 2.0) == pytest.approx(68.0)


@pytest.mark.parametrize(("bitops", "base"), [(0.0, 1.0), (1.0, -1.0), (math.inf, 1.0)])
def test_weighted_score_rejects_non_positive_bitops(bitops, base):
    with pytest.raises(ValueError, match="cost"):
        weighted_score(70.0, bitops, base, 1.0)


def test_objectives_declare_direction():
    assert set(OBJECTIVES) == {"accuracy", "bitops", "latency", "weighted", "weighted_latency"}
    assert OBJECTIVES["accuracy"][0] and OBJECTIVES["weighted"][0]
    assert not OBJECTIVES["bitops"][0] and not OBJECTIVES["latency"][0]


def test_interval_uses_student_t_with_seed_degrees_of_freedom():
    outcome = decide_pair("a", "b", [71.0, 72.0, 73.0], [70.0, 70.0, 70.0])
    # diffs 1, 2, 3: mean 2, se 1/sqrt(3); t(0.975, 2) = 4.3027
    half_width = 4.302653 / math.sqrt(3)
    assert (outcome.low, outcome.high) == pytest.approx((2 - half_width, 2 + half_width), abs=1e-5)
    assert outcome.confidence == 0.95 and outcome.images == 0
    assert outcome.tie  # the interval reaches below 0


def test_per_image_evidence_gives_one_seed_an_interval():
    first = [[1] * 90 + [0] * 10]
    second = [[1] * 80 + [0] * 20]
    outcome = decide_pair("a", "b", [90.0], [80.0], images_first_then_second=first, images_second_then_first=second)
    # D_i is 100 on 10 images and 0 on 90: var 909.09, se 3.015, 99 df
    assert outcome.images == 100
    assert outcome.high - outcome.mean_diff == pytest.approx(1.984217 * math.sqrt(909.0909 / 100), abs=1e-3)
    assert outcome.winner == "a"
    assert outcome.weak_evidence  # one seed: training noise is not measured


def test_per_image_evidence_widens_the_seed_interval():
    scores_ab, scores_ba = [91.0, 90.0, 92.0], [90.0, 89.0, 90.0]
    seed_only = decide_pair("a", "b", scores_ab, scores_ba)
    rows_ab = [[1] * 91 + [0] * 9, [1] * 90 + [0] * 10, [1] * 92 + [0] * 8]
    rows_ba = [[0] * 10 + [1] * 90, [0] * 11 + [1] * 89, [0] * 10 + [1] * 90]
    both = decide_pair("a", "b", scores_ab, scores_ba, images_first_then_second=rows_ab, images_second_then_first=rows_ba)
    assert both.mean_diff == pytest.approx(seed_only.mean_diff)
    assert both.high - both.low > seed_only.high - seed_only.low


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images_first_then_second": [[1, 0]]}, "both orders"),
        ({"images_first_then_second": [[1, 0]], "images_second_then_first": [[1, 0], [1, 1]]}, "one list per seed"),
        ({"images_first_then_second": [[1, 0]], "images_second_then_first": [[1, 0, 1]]}, "same >= 2 images"),
        ({"images_first_then_second": [[1, 2]], "images_second_then_first": [[1, 0]]}, "0 or 1"),
        ({"images_first_then_second": [[1, 0]], "images_second_then_first": [[1, 0]], "higher_is_better": False}, "accuracy evidence"),
    ],
)
def test_invalid_per_image_evidence_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        decide_pair("a", "b", [50.0], [50.0], **kwargs)


def test_older_records_without_interval_fields_still_load():
    record = decide_pair("a", "b", [71.0, 71.2, 70.9], [69.0, 69.1, 68.8]).to_dict()
    for name in ("low", "high", "confidence", "images", "only_order"):
        del record[name]
    restored = PairOutcome.from_dict(record)
    assert restored.low is None and restored.images == 0 and restored.winner == "a"


def test_interval_round_trips_through_json():
    outcome = decide_pair("a", "b", [70.0], [60.0], images_first_then_second=[[1, 1, 0]], images_second_then_first=[[1, 0, 0]])
    assert PairOutcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_a_small_consistent_lead_of_the_reverse_order_puts_the_second_method_first(higher_is_better):
    """second -> first better by half a point on every seed, whichever way the objective points."""
    better, worse = [70.5, 71.5, 69.5], [70.0, 71.0, 69.0]
    ab, ba = (worse, better) if higher_is_better else (better, worse)
    outcome = decide_pair("a", "b", ab, ba, higher_is_better=higher_is_better)
    assert outcome.winner == "b" and not outcome.tie and outcome.mean_diff == pytest.approx(-0.5)
    flipped = decide_pair("a", "b", ba, ab, higher_is_better=higher_is_better)
    assert flipped.winner == "a" and flipped.mean_diff == pytest.approx(0.5)


def test_a_forced_or_incompatible_pair_is_neither_a_tie_nor_weak_evidence():
    forced = only_order_pair("int8", "prune", "prune", "int8 weights cannot be pruned")
    assert forced.winner == "prune" and forced.only_order and not forced.tie and not forced.weak_evidence
    assert forced.margin == 0.0 and forced.spread == 0.0 and forced.higher_is_better
    incompatible = incompatible_pair("quantize", "int8", "neither order applies")
    assert incompatible.winner is None and not incompatible.tie and not incompatible.weak_evidence
    assert incompatible.margin == 0.0 and incompatible.spread == 0.0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: only_order_pair("a", "b", "c", "why"), "working_first must be 'a' or 'b'"),
    (lambda: only_order_pair("a", "b", "a", " "), "reason must be a non-empty string"),
    (lambda: only_order_pair("a", "b", "a", None), "reason must be a non-empty string"),
    (lambda: only_order_pair("a", "a", "a", "why"), "two different methods"),
    (lambda: incompatible_pair("a", "a", "why"), "two different methods"),
    (lambda: incompatible_pair("a", "b", None), "reason must be a non-empty string"),
    (lambda: decide_pair("", "b", [1.0], [1.0]), "non-empty strings"),
    (lambda: decide_pair(None, "b", [1.0], [1.0]), "non-empty strings"),
    (lambda: decide_pair("a", "b", [1.0], [1.0], min_margin=math.nan), "min_margin must be a finite number"),
    (lambda: decide_pair("a", "b", [1.0], [1.0], min_margin=-0.1), "min_margin must be a finite number"),
    (lambda: weighted_score(math.nan, 1.0, 1.0, 1.0), "accuracy and weight must be finite"),
    (lambda: weighted_score(70.0, 1.0, 1.0, math.inf), "accuracy and weight must be finite"),
    (lambda: weighted_score(70.0, math.inf, 1.0, 1.0), "cost and base cost must be finite and > 0"),
])
def test_bad_pair_inputs_say_what_was_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()
