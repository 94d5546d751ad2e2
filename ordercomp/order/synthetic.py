"""Synthetic evidence with known truth, to calibrate pair decisions and compare chain searches.

`simulate_pair` draws the per-seed accuracies and per-image correctness of
two orders of a pair evaluated on the same validation images: each image
has a difficulty shared by both orders and all seeds (hard images are hard
for everyone), each trained model (order, seed) shifts all difficulties by
its own training noise, and each image then flips at random. The defaults
mimic the digits sample: 359 images, about 97 % accuracy, about 0.4 points
of seed-to-seed accuracy spread.

`Landscape` scores every prefix of every order of n methods from known
effects, so that exhaustive ground truth is free; see its docstring.
`EqualOrders` measures every order of n methods as equally good on the same
validation images, per seed and per image: the A/A check of the race.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

HARD_IMAGES = 0.02
BORDERLINE_IMAGES = 0.025
TRAINING_NOISE = 0.5


@dataclass(frozen=True)
class PairEvidence:
    """Per-seed accuracies (percent) and per-image 0/1 correctness of A->B and B->A."""

    scores_first_then_second: list[float]
    scores_second_then_first: list[float]
    images_first_then_second: list[list[int]]
    images_second_then_first: list[list[int]]


def simulate_pair(rng: random.Random, *, images: int = 359, seeds: int = 3, difference: float = 0.0) -> PairEvidence:
    """Both orders of one pair; B->A gets about `difference` points more errors than A->B.

    The difference is planted as round(difference% of images) easy images that
    B->A almost always gets wrong, so 0.0 is an A/A comparison.
    """
    difficulty = [_image_difficulty(rng) for _ in range(images)]
    harder = list(difficulty)
    easy = [i for i, value in enumerate(difficulty) if value < -4]
    for i in rng.sample(easy, min(len(easy), round(difference / 100 * images))):
        harder[i] = 3.0
    first = [_correctness(rng, difficulty) for _ in range(seeds)]
    second = [_correctness(rng, harder) for _ in range(seeds)]
    return PairEvidence([_accuracy(row) for row in first], [_accuracy(row) for row in second], first, second)


def _image_difficulty(rng: random.Random) -> float:
    """Log-odds of an error: a few hard images, some borderline, most easy."""
    kind = rng.random()
    if kind < HARD_IMAGES:
        return rng.gauss(3.0, 1.0)
    if kind < HARD_IMAGES + BORDERLINE_IMAGES:
        return rng.gauss(-1.0, 1.5)
    return rng.gauss(-8.0, 1.0)


def _correctness(rng: random.Random, difficulty: list[float] | tuple[float, ...], noise: float = TRAINING_NOISE) -> list[int]:
    """One trained model: its own training shift, then an independent flip per image."""
    shift = rng.gauss(0.0, noise)
    return [int(rng.random() >= 1 / (1 + math.exp(-(value + shift)))) for value in difficulty]


def _accuracy(correct: list[int]) -> float:
    return 100 * sum(correct) / len(correct)


@dataclass(frozen=True)
class EqualOrders:
    """Every prefix of every order of `methods` is the same model family: on seed s it gets the shared
    image difficulties shifted by its own training noise (`noise`, in log-odds: 0.5 gives about 0.4
    points of seed-to-seed sd, 3.0 about 3 points), then flips per image. No order is better than
    another, so any order the race finds significantly worse is a false elimination."""

    methods: tuple[str, ...]
    difficulty: tuple[float, ...]
    noise: float
    tag: str

    def trial(self, prefix: tuple[str, ...], seed: int) -> tuple[float, list[int]]:
        """(accuracy in percent, 0/1 correctness per image) of the prefix on one seed, the same on every call."""
        hits = _correctness(random.Random(f"{self.tag}|{prefix}|{seed}"), self.difficulty, self.noise)
        return _accuracy(hits), hits


def equal_orders(rng: random.Random, methods: list[str], *, images: int = 359, noise: float = TRAINING_NOISE) -> EqualOrders:
    return EqualOrders(tuple(methods), tuple(_image_difficulty(rng) for _ in range(images)), noise, str(rng.random()))


@dataclass(frozen=True)
class Landscape:
    """Known scores of every prefix of every order of `methods` (higher is better).

    true(prefix) = base - sum of each method's own cost
                 + sum over ordered pairs (a before b) of precedence[a, b]
                 - sum of damage[m] * p^growth for the method m at 0-based place p
                 + place[m, p] + a fixed interaction term per prefix.
    A measurement on seed s adds Gaussian seed noise of sd seed_noise, times
    exp(noise_spread * z) for a z fixed per prefix, so that with noise_spread > 0
    some orders are noisier than others (on the digits settings the seed-to-seed
    sd of one order ranges over a factor of 3). With growth 2, a method that
    hurts a model the others already compressed costs 1x as the second of a
    pair but 9x as the last of four, which no pair measured on the base can
    see; `place` holds the rest of the position effects.
    """

    methods: tuple[str, ...]
    base: float
    cost: dict[str, float]
    precedence: dict[tuple[str, str], float]
    damage: dict[str, float]
    growth: float
    place: dict[tuple[str, int], float]
    interaction: float
    seed_noise: float
    tag: str
    noise_spread: float = 0.0

    def true(self, prefix: tuple[str, ...]) -> float:
        """Noise-free score of a prefix."""
        score = self.base - sum(self.cost[method] for method in prefix)
        score += sum(self.precedence[a, b] for a, b in itertools.combinations(prefix, 2))
        score -= sum(self.damage[method] * place**self.growth - self.place[method, place]
                     for place, method in enumerate(prefix))
        return score + self.interaction * _unit_normal(f"{self.tag}|{prefix}")

    def measure(self, prefix: tuple[str, ...], seeds: int) -> list[float]:
        """Scores of a prefix on seeds 0 .. seeds-1."""
        return [self.score(prefix, seed) for seed in range(seeds)]

    def score(self, prefix: tuple[str, ...], seed: int) -> float:
        """The prefix measured on one seed: its true score plus seed noise, the same on every call."""
        return self.true(prefix) + self.noise(prefix) * _unit_normal(f"{self.tag}|{prefix}|{seed}")

    def noise(self, prefix: tuple[str, ...]) -> float:
        """Seed-to-seed standard deviation of the prefix's score."""
        return self.seed_noise * math.exp(self.noise_spread * _unit_normal(f"{self.tag}|{prefix}|noise"))


def random_landscape(rng: random.Random, methods: list[str], *, trap: bool, interaction: float = 0.3,
                     seed_noise: float = 0.4, noise_spread: float = 0.0) -> Landscape:
    """A landscape with random effects in points; with `trap`, one method hurts a compressed model
    (in the last place as much as 1-3 points x place^2, growing as place^1 to place^3) while every pair
    says it should go after the others. `seed_noise` and `noise_spread`: see Landscape."""
    precedence_scale = rng.uniform(0.2, 1.5)
    precedence: dict[tuple[str, str], float] = {}
    for a, b in itertools.combinations(methods, 2):
        effect = rng.gauss(0.0, precedence_scale)
        precedence[a, b], precedence[b, a] = effect, -effect
    growth = rng.choice([1.0, 1.5, 2.0, 3.0])
    scale = (len(methods) - 1) ** (2 - growth)  # the same damage in the last place as with growth 2
    damage = {method: abs(rng.gauss(0.0, 0.1)) * scale for method in methods}
    if trap:
        victim = rng.choice(methods)
        damage[victim] = rng.uniform(1.0, 3.0) * scale
        for other in methods:
            if other != victim:
                lure = damage[victim] + rng.uniform(0.2, 1.0)
                precedence[other, victim], precedence[victim, other] = lure, -lure
    cost = {method: rng.uniform(0.5, 3.0) for method in methods}
    place = {(method, index): rng.gauss(0.0, 0.3) for method in methods for index in range(len(methods))}
    return Landscape(tuple(methods), 98.0, cost, precedence, damage, growth, place, interaction, seed_noise,
                     str(rng.random()), noise_spread)


def _unit_normal(key: str) -> float:
    """A standard normal number fixed by `key` (string seeds are hashed the same in every run)."""
    return random.Random(key).gauss(0.0, 1.0)
