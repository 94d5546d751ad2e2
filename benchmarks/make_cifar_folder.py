"""Write a CIFAR-10-format folder of generated 32-px colour images, for CIFAR-scale runs without a download.

    python benchmarks/make_cifar_folder.py /tmp/cifar-like                   # 50,000 train + 10,000 test
    python benchmarks/make_cifar_folder.py /tmp/cifar-like --train 5000 --test 1000

Each image is one of scikit-learn's handwritten digits (the label), upscaled to a random size of
18-30 px, placed at a random position on a 32x32 canvas, in a random ink and background colour, with
pixel noise: a learnable 10-class task of CIFAR-10's shape (uint8 32x32x3, pickled batches), read by
`--data FOLDER` like the real one.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from ordercomp.data.cifar import write_cifar


def generated(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(digits.target), count)
    glyphs = torch.from_numpy(digits.images[picks] / 16.0).float().unsqueeze(1)
    images = np.empty((count, 32, 32, 3), dtype=np.uint8)
    for index in range(count):
        size = int(rng.integers(18, 31))
        glyph = F.interpolate(glyphs[index:index + 1], size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
        top, left = rng.integers(0, 33 - size, 2)
        mask = np.zeros((32, 32, 1), dtype=np.float32)
        mask[top:top + size, left:left + size, 0] = glyph.clip(0, 1)
        ink, paper = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        picture = mask * ink + (1 - mask) * paper + rng.normal(0, 12, (32, 32, 3))
        images[index] = picture.clip(0, 255).astype(np.uint8)
    return images, digits.target[picks].astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = write_cifar(args.out, generated(args.train, args.seed), generated(args.test, args.seed + 1))
    print(f"wrote {args.train} train and {args.test} test images to {root}/cifar-10-batches-py")


if __name__ == "__main__":
    main()
