"""Pairwise order decisions: given per-seed objective scores of the chains
A->B and B->A, decide which method should come first, or that it is a tie.

A decision is made on the paired per-seed differences, oriented so that a
positive difference always means "first -> second is better", whatever the
direction of the objective, and on a confidence interval of their mean that
can also use both orders' per-image correctness (see evidence.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from ordercomp.order.evidence import PerImage, difference_interval

OBJECTIVES: dict[str, tuple[bool, str]] = {
    "accuracy": (True, "top-1 accuracy of the compressed model in percent; higher is better"),
    "bitops": (False, "bit operations of one forward pass; lower is better"),
    "latency": (False, "inference latency in milliseconds; lower is better"),
    "weighted": (True, "accuracy + weight * log2(base_bitops / bitops); higher is better"),
    "weighted_latency": (True, "accuracy + weight * log2(base_latency / latency), latency in the chosen runtime; higher is better"),
}
ACCURACY_OBJECTIVES = ("accuracy", "weighted", "weighted_latency")  # decided with per-image evidence and min_margin
LATENCY_OBJECTIVES = ("latency", "weighted_latency")  # need latency measured on every step


@dataclass(frozen=True)
class PairOutcome:
    """Result of comparing the two orders of a pair of compression methods.

    `winner` is the method that should come FIRST in the chain: `first` when
    first -> second scored better, `second` when second -> first did, None on
    a tie or when the pair is incompatible. `only_order` holds the reason the
    reverse order cannot be applied when just one order works: then `winner`
    is forced, whatever the scores.

    `low`..`high` is the `confidence` interval of `mean_diff` (None when it
    could not be estimated: one seed and no per-image evidence, or no scores),
    `images` the number of validation images whose paired correctness it used
    (0: seed-to-seed variation only). Records written before these fields
    existed load with their defaults.
    """

    first: str
    second: str
    scores_first_then_second: tuple[float, ...]
    scores_second_then_first: tuple[float, ...]
    higher_is_better: bool
    mean_diff: float
    spread: float
    winner: str | None
    tie: bool
    weak_evidence: bool
    incompatible: str | None
    only_order: str | None = None
    low: float | None = None
    high: float | None = None
    confidence: float | None = None
    images: int = 0

    @property
    def margin(self) -> float:
        """Size of the mean paired difference, whatever its sign."""
        return abs(self.mean_diff)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields (score tuples become lists)."""
        record = asdict(self)
        record["scores_first_then_second"] = list(self.scores_first_then_second)
        record["scores_second_then_first"] = list(self.scores_second_then_first)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> PairOutcome:
        """Rebuild an outcome written by `to_dict`."""
        missing = sorted(_REQUIRED_FIELDS - record.keys())
        if missing:
            raise ValueError(
                f"PairOutcome record is missing fields {missing}; "
                "pass a dict produced by PairOutcome.to_dict()"
            )
        values = {name: record[name] for name in _FIELD_NAMES if name in record}
        values["scores_first_then_second"] = tuple(map(float, record["scores_first_then_second"]))
        values["scores_second_then_first"] = tuple(map(float, record["scores_second_then_first"]))
        return cls(**values)


_FIELD_NAMES = frozenset(field.name for field in fields(PairOutcome))
_REQUIRED_FIELDS = frozenset(field.name for field in fields(PairOutcome) if field.default is MISSING)


def decide_pair(
    first: str,
    second: str,
    scores_first_then_second: tuple[float, ...] | list[float],
    scores_second_then_first: tuple[float, ...] | list[float],
    *,
    higher_is_better: bool = True,
    min_margin: float = 0.0,
    confidence: float = 0.95,
    images_first_then_second: PerImage | None = None,
    images_second_then_first: PerImage | None = None,
) -> PairOutcome:
    """Decide which of two methods should be applied first.

    Seeds are paired: the s-th score of first -> second is compared with the
    s-th score of second -> first. With k seeds, d_s is the oriented paired
    difference, `mean_diff` and `spread` its mean and sample standard
    deviation. The optional per-image arguments hold, per seed, each order's
    0/1 correctness on the same validation images (accuracy evidence, so only
    for higher-is-better objectives); `difference_interval` turns both into
    a `confidence` interval [low, high] with standard error se.

    There is a winner when the interval excludes 0 AND |mean| > min_margin,
    that is |mean| > threshold = max(min_margin, half-width). A single seed
    without per-image evidence has no interval and only needs min_margin.
    Otherwise the pair is a tie.

    `weak_evidence` is True when there is a single seed (nothing measures
    training noise), or when | |mean| - threshold | < se: shifting the mean
    by one standard error would flip win <-> tie. When the half-width sets
    the threshold, this says the interval's near end (the bound closer to 0)
    lies within one standard error of 0.
    """
    _check_names(first, second)
    ab = _as_scores(scores_first_then_second, "scores_first_then_second")
    ba = _as_scores(scores_second_then_first, "scores_second_then_first")
    if len(ab) != len(ba):
        raise ValueError(
            f"both orders need one score per seed: got {len(ab)} and {len(ba)} scores"
        )
    if not ab:
        raise ValueError("at least one seed per order is needed to decide a pair")
    if not math.isfinite(min_margin) or min_margin < 0:
        raise ValueError(f"min_margin must be a finite number >= 0, got {min_margin}")
    if images_first_then_second is not None and not higher_is_better:
        raise ValueError("per-image correctness is accuracy evidence: pass it only with higher_is_better=True")

    diffs = _oriented_differences(ab, ba, higher_is_better)
    seeds = len(diffs)
    interval = difference_interval(
        diffs, images_first_then_second, images_second_then_first, confidence=confidence
    )
    mean_diff = interval.mean
    half_width = 0.0 if interval.low is None else interval.high - mean_diff
    threshold = max(min_margin, half_width)
    decided = abs(mean_diff) > threshold
    weak = seeds < 2 or abs(abs(mean_diff) - threshold) < interval.standard_error

    winner = None
    if decided:
        winner = first if mean_diff > 0 else second
    return PairOutcome(
        first=first,
        second=second,
        scores_first_then_second=ab,
        scores_second_then_first=ba,
        higher_is_better=higher_is_better,
        mean_diff=mean_diff,
        spread=statistics.stdev(diffs) if seeds >= 2 else 0.0,
        winner=winner,
        tie=not decided,
        weak_evidence=weak,
        incompatible=None,
        low=interval.low,
        high=interval.high,
        confidence=confidence,
        images=interval.images,
    )


def incompatible_pair(
    first: str, second: str, reason: str, *, higher_is_better: bool = True
) -> PairOutcome:
    """Outcome for a pair where one or both orders could not be applied."""
    _check_names(first, second)
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError(
            "reason must be a non-empty string explaining why the pair is incompatible"
        )
    return PairOutcome(
        first=first,
        second=second,
        scores_first_then_second=(),
        scores_second_then_first=(),
        higher_is_better=higher_is_better,
        mean_diff=0.0,
        spread=0.0,
        winner=None,
        tie=False,
        weak_evidence=False,
        incompatible=reason,
    )


def only_order_pair(first: str, second: str, working_first: str, reason: str, *, higher_is_better: bool = True) -> PairOutcome:
    """Outcome for a pair where only `working_first` -> other can be applied: that order is forced."""
    _check_names(first, second)
    if working_first not in (first, second):
        raise ValueError(f"working_first must be {first!r} or {second!r}, got {working_first!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("reason must be a non-empty string explaining why the other order cannot be applied")
    return PairOutcome(first, second, (), (), higher_is_better, 0.0, 0.0, working_first, False, False, None, reason)


def weighted_score(accuracy: float, cost: float, base_cost: float, weight: float) -> float:
    """Accuracy (percent) plus a bonus of `weight` per halving of the cost (BitOps or latency).

    score = accuracy + weight * log2(base_cost / cost), so a cheaper
    model scores higher at equal accuracy.
    """
    if not all(math.isfinite(value) and value > 0 for value in (cost, base_cost)):
        raise ValueError(f"cost and base cost must be finite and > 0, got cost={cost}, base cost={base_cost}")
    if not math.isfinite(accuracy) or not math.isfinite(weight):
        raise ValueError(f"accuracy and weight must be finite, got {accuracy} and {weight}")
    return accuracy + weight * math.log2(base_cost / cost)


def _oriented_differences(
    ab: tuple[float, ...], ba: tuple[float, ...], higher_is_better: bool
) -> list[float]:
    """Per-seed differences, positive when first -> second is better."""
    if higher_is_better:
        return [a - b for a, b in zip(ab, ba)]
    return [b - a for a, b in zip(ab, ba)]


def _check_names(first: str, second: str) -> None:
    for name in (first, second):
        if not isinstance(name, str) or not name:
            raise ValueError(f"method names must be non-empty strings, got {name!r}")
    if first == second:
        raise ValueError(f"a pair needs two different methods, got {first!r} twice")


def _as_scores(values: tuple[float, ...] | list[float], label: str) -> tuple[float, ...]:
    """Convert one per-seed score series to a tuple of finite floats."""
    try:
        scores = tuple(float(value) for value in values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{label} must be a sequence of numbers: {error}") from error
    if not all(math.isfinite(score) for score in scores):
        raise ValueError(f"{label} must be finite numbers, got {scores}")
    return scores
