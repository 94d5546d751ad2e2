"""How sure the evidence is: the probability that each evaluated order is the best of them.

The orders' mean scores are treated as draws from a joint Student-t around the measured means,
with the covariance the pair decisions use, so that the spread of any difference of two orders
is the one `evidence.difference_interval` gives (se^2 = var over seeds / k + var over images / N):

    Sigma = V V^T + W W^T
    V[i, s] = (x_is - mean_i) / |S_i| * sqrt(|S_i| / (|S_i| - 1))   seed part, paired per seed
    W[i, j] = (a_ij - mean_j a_i) / sqrt(N (N - 1))                 image part, paired per image

x_is is order i's score on seed s of its seeds S_i, a_ij its correctness on image j (points,
averaged over its seeds). Both parts are Gram matrices, so Sigma is positive semi-definite even when
orders have different seeds (the race gives some more). An order measured on one seed gets the
pooled seed variance of the others. The degrees of freedom are those of the race's comparison of
the leader with the runner-up (k - 1 over their common seeds), so few seeds give heavy tails.

`probability_best` draws from that distribution with a seeded RNG (the same answer every time) and
counts how often each order comes out on top.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Mapping

from ordercomp.order.race import Trial, oriented, paired_interval, standing

Chain = tuple[str, ...]
DRAWS = 4000


def probability_best(evidence: Mapping[Chain, Mapping[int, Trial]], higher_is_better: bool = True, *,
                     draws: int = DRAWS, seed: int = 0) -> dict[Chain, float] | None:
    """{order: probability that it is the best of the evaluated orders}, or None when nothing measures
    the noise (every order on one seed, no per-image evidence)."""
    orders = standing(evidence, higher_is_better)
    if len(orders) == 1:
        return {orders[0]: 1.0}
    means = [oriented(statistics.fmean(t.score for t in evidence[c].values()), higher_is_better) for c in orders]
    covariance = _covariance([evidence[c] for c in orders], higher_is_better)
    if covariance is None:
        return None
    df = _degrees_of_freedom(evidence, orders, higher_is_better)
    wins = _count_wins(means, _cholesky(covariance), df, draws, random.Random(seed))
    return {chain: count / draws for chain, count in zip(orders, wins)}


def _degrees_of_freedom(evidence: Mapping[Chain, Mapping[int, Trial]], orders: list[Chain], higher_is_better: bool) -> float | None:
    """The leader against the runner-up, as the race compares them (the seeds' k - 1 degrees of freedom);
    with fewer than two common seeds, the pooled seeds' degrees of freedom of every order."""
    paired = paired_interval(evidence[orders[0]], evidence[orders[1]], higher_is_better, 0.95).degrees_of_freedom
    if paired is not None:
        return paired
    pooled = sum(len(evidence[chain]) - 1 for chain in orders)
    return pooled or None


def _covariance(trials: list[Mapping[int, Trial]], higher_is_better: bool) -> list[list[float]] | None:
    """Sigma = V V^T + W W^T (module docstring); None when no part can be estimated."""
    seed_rows = _seed_rows(trials, higher_is_better)
    image_rows = _image_rows(trials)
    if seed_rows is None and image_rows is None:
        return None
    size = len(trials)
    covariance = [[0.0] * size for _ in range(size)]
    for rows in (seed_rows, image_rows):
        if rows is not None:
            for i in range(size):
                for j in range(i, size):
                    covariance[i][j] += _dot(rows[i], rows[j])
                    covariance[j][i] = covariance[i][j]
    return covariance


def _seed_rows(trials: list[Mapping[int, Trial]], higher_is_better: bool) -> list[list[float]] | None:
    """V: one row per order over every seed any order has, with the pooled variance for single-seed orders."""
    seeds = sorted(set().union(*trials))
    variances = [statistics.variance([t.score for t in order.values()]) for order in trials if len(order) >= 2]
    if not variances:
        return None
    pooled = statistics.fmean(variances)
    rows = []
    for index, order in enumerate(trials):
        row = [0.0] * (len(seeds) + len(trials))
        if len(order) >= 2:
            mean = statistics.fmean(t.score for t in order.values())
            scale = math.sqrt(len(order) / (len(order) - 1)) / len(order)
            for position, seed in enumerate(seeds):
                if seed in order:
                    row[position] = oriented(order[seed].score - mean, higher_is_better) * scale
        else:  # its own column: independent of the others, with the pooled variance of one seed
            row[len(seeds) + index] = math.sqrt(pooled)
        rows.append(row)
    return rows


def _image_rows(trials: list[Mapping[int, Trial]]) -> list[list[float]] | None:
    """W: one row per order over the validation images, None unless every trial has per-image evidence."""
    if any(t.hits is None for order in trials for t in order.values()):
        return None
    rows = []
    for order in trials:
        hits = [t.hits for t in order.values()]
        count = len(hits[0])
        if count < 2 or any(len(h) != count for h in hits):
            raise ValueError("per-image evidence must cover the same >= 2 images on every seed")
        points = [100 * sum(h[image] for h in hits) / len(hits) for image in range(count)]
        mean, scale = statistics.fmean(points), math.sqrt(count * (count - 1))
        rows.append([(value - mean) / scale for value in points])
    if len({len(row) for row in rows}) != 1:
        raise ValueError("every order's per-image evidence must cover the same validation images")
    return rows


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b))


def _cholesky(matrix: list[list[float]]) -> list[list[float]]:
    """Lower-triangular L with L L^T = matrix + a tiny ridge (a Gram matrix can be singular)."""
    size = len(matrix)
    ridge = 1e-10 * max(max(matrix[i][i] for i in range(size)), 1e-12)
    lower = [[0.0] * size for _ in range(size)]
    for i in range(size):
        for j in range(i + 1):
            total = matrix[i][j] + (ridge if i == j else 0.0) - _dot(lower[i][:j], lower[j][:j])
            lower[i][j] = math.sqrt(max(total, 0.0)) if i == j else (total / lower[j][j] if lower[j][j] > 0 else 0.0)
    return lower


def _count_wins(means: list[float], lower: list[list[float]], df: float | None, draws: int, rng: random.Random) -> list[int]:
    """How often each order has the highest of `draws` joint Student-t draws (normal when df is None)."""
    size = len(means)
    wins = [0] * size
    for _ in range(draws):
        normal = [rng.gauss(0.0, 1.0) for _ in range(size)]
        stretch = 1.0 if df is None else math.sqrt(df / rng.gammavariate(df / 2, 2.0))
        values = [means[i] + stretch * _dot(lower[i][: i + 1], normal[: i + 1]) for i in range(size)]
        wins[max(range(size), key=values.__getitem__)] += 1
    return wins
