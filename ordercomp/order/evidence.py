"""Confidence interval for the difference between the two orders of a pair.

Two sources of noise blur a measured difference between A->B and B->A:
training noise, which changes from seed to seed, and the sampling of the
validation images, which are the same for every seed, so that their noise
does not shrink with more seeds. The interval combines both:

    se^2 = var_seeds(d_s) / k + var_images(D_i) / N

where d_s is the oriented score difference of seed s (k seeds) and D_i is
the per-image correctness difference (in points, 100 * (c_AB - c_BA))
averaged over seeds, for N images. The half-width is a Student-t quantile
times se, with Welch-Satterthwaite degrees of freedom. Without per-image
evidence only the seed part is used (k - 1 degrees of freedom). With
`seed_df` the quantile takes the seeds' k - 1 degrees of freedom whatever the
image part: Welch's df lean on the image part's N - 1 while the seed variance
is itself estimated from k values, which the race (race.py) cannot afford: it
repeats its test every round against many orders (with Welch's df, 20 % of
A/A races at 2 points of seed noise dropped an equal order; with the seeds'
df, 3 %). The t quantile is computed here (regularised incomplete beta, inverted by a
safeguarded Newton iteration), so the package needs no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

PerImage = Sequence[Sequence[int | bool]]


@dataclass(frozen=True)
class DifferenceInterval:
    """Mean oriented difference with its two-sided confidence interval.

    `low` and `high` are None when there is no way to estimate the noise
    (one seed and no per-image evidence). `images` is N, 0 without per-image
    evidence.
    """

    mean: float
    low: float | None
    high: float | None
    standard_error: float
    degrees_of_freedom: float | None
    confidence: float
    images: int

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low is not None and (self.low > 0 or self.high < 0)


def difference_interval(
    differences: Sequence[float],
    images_first_then_second: PerImage | None = None,
    images_second_then_first: PerImage | None = None,
    *,
    confidence: float = 0.95,
    seed_df: bool = False,
) -> DifferenceInterval:
    """Interval for the mean of the oriented per-seed `differences`.

    The per-image arguments, when given, hold one list per seed (same seed
    order as `differences`) of 0/1 correctness on the same N validation
    images, in the same image order, for first->second and second->first.
    With `seed_df`, the t quantile has k - 1 degrees of freedom (none, so no
    interval, with one seed).
    """
    diffs = [float(value) for value in differences]
    if not diffs or not all(math.isfinite(value) for value in diffs):
        raise ValueError(f"differences must be at least one finite number, got {diffs}")
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    parts = _seed_part(diffs)
    if (images_first_then_second is None) != (images_second_then_first is None):
        raise ValueError("per-image evidence needs both orders' correctness, or neither")
    images = 0
    if images_first_then_second is not None:
        per_image = _image_differences(images_first_then_second, images_second_then_first, len(diffs))
        images = len(per_image)
        parts.append((statistics.variance(per_image) / images, images - 1))
    if seed_df and len(diffs) < 2:
        return DifferenceInterval(statistics.fmean(diffs), None, None, 0.0, None, confidence, images)
    return _interval(statistics.fmean(diffs), parts, confidence, images, len(diffs) - 1 if seed_df else None)


def t_quantile(probability: float, degrees_of_freedom: float) -> float:
    """Quantile of Student's t distribution; `degrees_of_freedom` may be fractional."""
    if not 0 < probability < 1:
        raise ValueError(f"probability must be in (0, 1), got {probability}")
    if not degrees_of_freedom > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {degrees_of_freedom}")
    if probability < 0.5:
        return -t_quantile(1 - probability, degrees_of_freedom)
    if probability == 0.5:
        return 0.0
    return _invert_t(probability, degrees_of_freedom)


def t_cdf(value: float, degrees_of_freedom: float) -> float:
    """P(T <= value) for Student's t with the given (possibly fractional) degrees of freedom."""
    x = degrees_of_freedom / (degrees_of_freedom + value * value)
    tail = 0.5 * _regularized_beta(x, degrees_of_freedom / 2, 0.5)
    return 1 - tail if value > 0 else tail


def _seed_part(diffs: list[float]) -> list[tuple[float, int]]:
    """[(variance of the mean from seed noise, its degrees of freedom)], empty with one seed."""
    if len(diffs) < 2:
        return []
    return [(statistics.variance(diffs) / len(diffs), len(diffs) - 1)]


def _image_differences(first: PerImage, second: PerImage, seeds: int) -> list[float]:
    """D_i: 100 * (first - second correctness) of image i, averaged over seeds."""
    if len(first) != seeds or len(second) != seeds:
        raise ValueError(
            f"per-image evidence needs one list per seed for both orders: {seeds} seeds, "
            f"got {len(first)} and {len(second)} lists"
        )
    rows = [_correctness(row) for row in (*first, *second)]
    count = len(rows[0])
    if count < 2 or any(len(row) != count for row in rows):
        raise ValueError(
            f"every per-image list must cover the same >= 2 images, got lengths {[len(row) for row in rows]}"
        )
    return [100 * (sum(row[i] for row in rows[:seeds]) - sum(row[i] for row in rows[seeds:])) / seeds for i in range(count)]


def _correctness(row: Sequence[int | bool]) -> list[int]:
    values = [int(value) for value in row]
    if any(value not in (0, 1) for value in values):
        raise ValueError("per-image correctness must be 0 or 1 for every image")
    return values


def _interval(mean: float, parts: list[tuple[float, int]], confidence: float, images: int,
              df: float | None = None) -> DifferenceInterval:
    """Combine the variance parts with a t interval: Welch-Satterthwaite degrees of freedom unless `df` is given."""
    if not parts:
        return DifferenceInterval(mean, None, None, 0.0, None, confidence, images)
    variance = sum(part for part, _ in parts)
    standard_error = math.sqrt(variance)
    if variance == 0:
        return DifferenceInterval(mean, mean, mean, 0.0, None, confidence, images)
    df = df if df is not None else variance**2 / sum(part**2 / dof for part, dof in parts)
    half_width = t_quantile(0.5 + confidence / 2, df) * standard_error
    return DifferenceInterval(mean, mean - half_width, mean + half_width, standard_error, df, confidence, images)


def _invert_t(probability: float, df: float) -> float:
    """Newton's method on t_cdf from the normal quantile, kept inside a shrinking bracket."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < probability:
        low, high = high, high * 2
    value = min(max(statistics.NormalDist().inv_cdf(probability), low), high)
    for _ in range(100):
        error = t_cdf(value, df) - probability
        if abs(error) < 1e-14 or high - low < 1e-12 * high:
            break
        if error > 0:
            high = value
        else:
            low = value
        step = value - error / _t_density(value, df)
        value = step if low < step < high else (low + high) / 2
    return value


def _t_density(value: float, df: float) -> float:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(value * value / df))


def _regularized_beta(x: float, a: float, b: float) -> float:
    """I_x(a, b) by Lentz's continued fraction (Numerical Recipes, betai)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1 - math.exp(log_front) * _beta_fraction(1 - x, b, a) / b


def _beta_fraction(x: float, a: float, b: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return result
