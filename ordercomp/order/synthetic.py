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


def _correctness(rng: random.Random, difficulty: list[float]) -> list[int]:
    """One trained model: its own training shift, then an independent flip per image."""
    shift = rng.gauss(0.0, TRAINING_NOISE)
    return [int(rng.random() >= 1 / (1 + math.exp(-(value + shift)))) for value in difficulty]


def _accuracy(correct: list[int]) -> float:
    return 100 * sum(correct) / len(correct)
