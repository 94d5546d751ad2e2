"""Whether a model fits the data: the channels its first convolution takes, and one logit per class.

A model that takes 3 channels (torchvision's classes, as they are) gets gray data with its one channel
repeated, recorded in the data's preprocessing; the model itself is not changed. Any other mismatch,
and a model that does not run on a batch of the data or does not give one logit per class, is one
`CheckpointError` line that says what to change.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.datasets import DataBundle
from ..data.preprocessing import repeat_channels
from .programs import ProgramError
from .weights import CheckpointError, first_line

CHECK_BATCH = 3


class _Reached(Exception):
    """Raised by a pre-hook to stop a forward pass at its first convolution."""


def first_conv_channels(model: nn.Module, images: torch.Tensor) -> int | None:
    """The input channels of the first Conv2d the model's forward calls, or None when it calls none
    (the forward stops there, so a model that cannot take the images' channels is still read)."""
    found: list[int] = []

    def stop(module, inputs):
        found.append(module.in_channels)
        raise _Reached

    hooks = [m.register_forward_pre_hook(stop) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(images)
    except Exception:  # _Reached, or the model fails before any convolution: check_logits says why
        pass
    finally:
        for hook in hooks:
            hook.remove()
    return found[0] if found else None


BUILD_HINT = "check that it fits the data's channels and size"
# The input sizes tried on a model that does not run on the data's, the sizes networks are most often written for first:
# CIFAR's, ImageNet's, MNIST's (a network that runs on several, as one pooling to 1x1, is told the first)
PROBE_SIZES = (32, 224, 28, 64, 16, 8)
PROGRAM_HINT = "export it for this data with a dynamic batch dimension (torch.export.Dim)"


def data_for(model: nn.Module, data: DataBundle, name: str, hint: str = BUILD_HINT, *, weighted: bool = False) -> DataBundle:
    """The data as `model` takes it (gray repeated to its first convolution's channels), checked by running it;
    `hint` says what to do when it does not run; `weighted`: the model holds weights from a file (whose classes are
    its own)."""
    wanted = first_conv_channels(model, data.example_input(CHECK_BATCH))
    if wanted is not None and wanted != data.in_channels:
        if data.in_channels != 1:
            raise CheckpointError(f"{name} takes {wanted} input channel(s) and the data has {data.in_channels}: build it for "
                                  f"{data.in_channels} (e.g. --model-args '{{\"in_channels\": {data.in_channels}}}') or give other data")
        data = repeat_channels(data, wanted)
    check_logits(model, data, name, hint, weighted=weighted)
    return data


def size_that_runs(model: nn.Module, images: torch.Tensor) -> str:
    """Where a model does not run on the data at their size, the first size of PROBE_SIZES it runs on, as the option
    that gives it (kuangliu's CIFAR networks pool a 4x4 map at the end: not at 8 px; a Linear after flatten takes the
    size the network was written for alone), or BUILD_HINT."""
    for size in (size for size in PROBE_SIZES if size != images.shape[-1]):
        try:
            with torch.no_grad():
                model(torch.zeros(1, images.shape[1], size, size))
        except Exception:  # whatever its forward raises at this size too
            continue
        return f"it runs on {size}x{size} images: give --input-size {size}"
    return BUILD_HINT


def check_logits(model: nn.Module, data: DataBundle, name: str, hint: str = BUILD_HINT, *, weighted: bool = False) -> None:
    """The model must take batches of the data's images and give one logit per class; a model that holds weights from a
    file (`weighted`) was trained for the classes it gives, so building it for others is no fix."""
    images = data.example_input(CHECK_BATCH)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(images)
    except ProgramError as refusal:  # a program refused before it ran: its own line says why
        raise CheckpointError(str(refusal)) from None
    except Exception as error:  # a model raises whatever its forward raises for an input it cannot take
        raise CheckpointError(f"{name} does not run on a batch of {tuple(images.shape)} images ({first_line(error)}): "
                              f"{size_that_runs(model, images) if hint is BUILD_HINT else hint}") from None
    finally:
        model.train(was_training)
    if not isinstance(logits, torch.Tensor):
        # (logits, features) or a dict: the methods compare, train and export by the forward's one tensor of logits
        raise CheckpointError(f"{name} returns a value of type {type(logits).__name__}, not a tensor of logits: give a model whose forward "
                              "returns the logits alone (e.g. a small nn.Module that calls yours and returns its logits)")
    if tuple(logits.shape) != (len(images), data.num_classes):
        given = logits.shape[-1]
        fix = (f"its weights are for {given} classes: fine-tune it on the data's classes first, or give data of {given} classes"
               if weighted and logits.dim() == 2 else
               f"build it for {data.num_classes} classes (e.g. --model-args '{{\"num_classes\": {data.num_classes}}}')")
        raise CheckpointError(f"{name} gives {tuple(logits.shape)} for {len(images)} images, not one logit per class ({data.num_classes}): {fix}")
