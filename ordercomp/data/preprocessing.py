"""How images become a model's input: the normalisation (`--normalize`) and the channel handling.

    dataset      (the default) subtract the training split's mean and divide by its std, per channel
    none         the pixel values as loaded (digits and 8-bit images in 0..1)
    MEAN,STD     given numbers: one mean and one std for every channel, or the means of every channel
                 followed by their stds (e.g. 0.485,0.456,0.406,0.229,0.224,0.225)

A model trained on its own preprocessing keeps its accuracy only when it is fed the same numbers, so
the choice, the numbers it comes to and the channel handling are recorded in every result and export
manifest (`DataBundle.preprocessing`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..fields import too_long

NORMALIZE_MODES = ("dataset", "none")
NORMALIZE_HELP = ("dataset (the training split's mean and std, the default), none (pixel values as loaded), or MEAN,STD "
                  "(one mean and one std for every channel, or every channel's mean followed by every channel's std)")


@dataclass(frozen=True)
class Normalization:
    """`mode` is dataset, none or given; `mean` and `std` hold the given numbers."""

    mode: str = "dataset"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def parse(cls, text) -> "Normalization":
        """The normalisation a `--normalize` text names; a ValueError says what is wrong with it."""
        if not isinstance(text, str):
            raise ValueError(f"normalize must be text, {NORMALIZE_HELP}; got {text!r}")
        text = text.strip()
        if text in NORMALIZE_MODES:
            return cls(text)
        refusal = too_long("normalize", text)
        if refusal:
            raise ValueError(f"{refusal}: give {NORMALIZE_HELP}")
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            raise ValueError(f"normalize must be {NORMALIZE_HELP}; got {text!r}") from None
        if len(values) % 2 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"normalize {text!r} must be an even count of finite numbers: the means, then the stds")
        mean, std = tuple(values[:len(values) // 2]), tuple(values[len(values) // 2:])
        if min(std) <= 0:
            raise ValueError(f"normalize {text!r}: every std must be > 0")
        return cls("given", mean, std)

    @property
    def text(self) -> str:
        """The `--normalize` text that gives this normalisation."""
        return self.mode if self.mode != "given" else ",".join(f"{v:g}" for v in self.mean + self.std)

    def statistics(self, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each shaped (1, C, 1, 1), for images (N, C, H, W) whose training split is `train`."""
        channels = train.shape[1]
        if self.mode == "dataset":
            return train.mean(dim=(0, 2, 3), keepdim=True), train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        if self.mode == "none":
            return torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)
        if len(self.mean) not in (1, channels):
            raise ValueError(f"normalize gives {len(self.mean)} means and stds for images of {channels} channel(s): "
                             f"give one pair for every channel, or {channels} means followed by {channels} stds")
        shape = (1, -1, 1, 1)
        return (torch.tensor(self.mean).view(shape).expand(1, channels, 1, 1).clone(),
                torch.tensor(self.std).view(shape).expand(1, channels, 1, 1).clone())


def record(normalization: Normalization, mean: torch.Tensor, std: torch.Tensor, *, pixels: str, resize: str,
           input_size: int, crop: float | None = None) -> dict:
    """What a caller must do to an image to feed the model as the data fed it."""
    return {"normalize": normalization.text, "mean": mean.flatten().tolist(), "std": std.flatten().tolist(),
            "pixels": pixels, "resize": resize, "crop": crop,
            "input_size": input_size, "channels": mean.shape[1], "channel_handling": "as loaded"}


def describe_preprocessing(steps: dict) -> str:
    """One line: how an image becomes the model's input."""
    if not steps:
        return "preprocessing not recorded"
    numbers = lambda values: "/".join(f"{v:.4g}" for v in values)
    crop = f" (the centre of each image, crop {steps['crop']:g})" if steps.get("crop") else ""
    return (f"normalize {steps['normalize']} (mean {numbers(steps['mean'])}, std {numbers(steps['std'])}), pixels {steps['pixels']}, "
            f"{steps['input_size']} px{crop}, {steps['channels']} channel(s) ({steps['channel_handling']})")


def repeat_channels(bundle, channels: int):
    """The bundle with its one image channel repeated `channels` times (gray images for a colour model),
    after normalisation, recorded in its preprocessing."""
    def repeated(split):
        images, labels = split.tensors
        return type(split)(images.expand(-1, channels, -1, -1).contiguous(), labels)

    steps = dict(bundle.preprocessing)
    steps.update(mean=steps.get("mean", []) * channels, std=steps.get("std", []) * channels, channels=channels,
                 channel_handling=f"the data's 1 channel repeated to the model's {channels}, after normalisation")
    return replace(bundle, train=repeated(bundle.train), val=repeated(bundle.val), test=repeated(bundle.test),
                   in_channels=channels, preprocessing=steps)
