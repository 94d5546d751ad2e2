"""Training and evaluation loops shared by every method, so every step gets the same budget.

A model with early exits (`forward_all`) is trained on the mean loss of all its exits; layers
marked sparse keep their zeros; parameters without gradients (int8-converted parts) are skipped.
On a CUDA GPU with bfloat16 the data stays resident on the GPU, the forward pass runs under bf16
autocast and convolutions in channels_last (faster there, slower on a CPU, so CPU runs keep fp32).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data.datasets import DataBundle
from .fields import typed_fields
from .layers import all_outputs, sparse_masks

Progress = Callable[[str, float], None]
LossFn = Callable[[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (exits' logits, x, y, rows) -> loss


@dataclass(frozen=True)
class Budget:
    """The fine-tuning budget every compression step gets."""

    epochs: float = 3.0
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 0.0

    def __post_init__(self):
        for name, value in typed_fields(Budget, asdict(self)).items():
            object.__setattr__(self, name, value)  # frozen: store the checked, converted value
        if not 0 <= self.epochs <= 1000:
            raise ValueError(f"epochs must be between 0 and 1000, got {self.epochs}")
        if not 0 < self.lr <= 1:
            raise ValueError(f"learning rate must be in (0, 1], got {self.lr}")
        if not 1 <= self.batch_size <= 65536:
            raise ValueError(f"batch size must be between 1 and 65536, got {self.batch_size}")
        if self.weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {self.weight_decay}")

    def to_dict(self) -> dict:
        return asdict(self)


def cross_entropy(outputs: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return sum(F.cross_entropy(out, y) for out in outputs) / len(outputs)


def train(model: nn.Module, data: DataBundle, budget: Budget, *, seed: int, device: torch.device,
          loss_fn: LossFn = cross_entropy, params: list[nn.Parameter] | None = None,
          progress: Progress | None = None, label: str = "fine-tune") -> nn.Module:
    """Train `model` in place for `budget.epochs` epochs (fractions allowed) on the training split."""
    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    if budget.epochs == 0 or not params:
        return model
    torch.manual_seed(seed)
    fast = accelerated(device)
    model.to(device).train()
    if fast:
        model.to(memory_format=torch.channels_last)
    _freeze_frozen_batchnorm(model)
    optimizer = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay, foreach=True)
    loader = data.loader("train", budget.batch_size, shuffle=True, seed=seed, device=device)
    total_steps = max(1, round(budget.epochs * len(loader)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, budget.lr, total_steps=total_steps, pct_start=0.15)
    masks = sparse_masks(model)
    step = 0
    while step < total_steps:
        for x, y, rows in loader.with_indices():
            if fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
                loss = loss_fn(logits_in_training(model, x), x, y, rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            _reapply(masks)
            step += 1
            if progress and (step % 10 == 0 or step == total_steps):
                progress(label, step / total_steps)
            if step >= total_steps:
                break
    if fast:
        model.to(memory_format=torch.contiguous_format)  # export and safetensors want contiguous weights
    return settle_batchnorm(model, data, device)


def logits_in_training(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits in training mode; a forward that gives something else there (torchvision's GoogLeNet and
    Inception add their auxiliary classifiers' outputs) is one clear line, not the loss's TypeError: a ValueError, the
    user's input that does not fit, so the command line says it in one line when it trains such a model as the base."""
    outputs = all_outputs(model, x)
    odd = next((out for out in outputs if not isinstance(out, torch.Tensor)), None)
    if odd is not None:
        raise ValueError(f"the model's forward gives {type(odd).__name__} in training mode, not a tensor of logits: build it "
                        "without auxiliary outputs (torchvision's GoogLeNet and Inception: aux_logits=False)")
    return outputs


DEFAULT_BATCHNORM_MOMENTUM = 0.1  # PyTorch's: an average over the last few dozen steps follows the annealed weights


@torch.no_grad()
def settle_batchnorm(model: nn.Module, data: DataBundle, device: torch.device, batch_size: int = 256) -> nn.Module:
    """Recompute the running mean and variance of every BatchNorm with a slow running average (momentum below
    PyTorch's 0.1) as the exact average over the training split, for the weights the model has now; `train` does it
    at its end, for a base as for every fine-tuning step. A slow average lags training: torchvision's MobileNetV3
    keeps 0.99 of the old statistics per step (momentum 0.01), and after the library's 20 epochs on the digits it
    scored 6.1 % in eval mode against 96.9 % with batch statistics (97.5 % once recomputed). BatchNorms at the
    default momentum are left as trained: recomputing theirs changed the bases every test and sample was built on
    (the int8 check of a tiny test CNN then fell from 99 % agreement to 95.5 %)."""
    norms = slow_batchnorms(model)
    if not norms:
        return model.eval()
    momenta = [norm.momentum for norm in norms]
    model.to(device).eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: every batch counts the same
        norm.train()
    for x, _ in data.loader("train", batch_size, device=device):
        if len(x) > 1:  # one image has no variance to average (and a 1x1 map then raises in training mode)
            all_outputs(model, x)  # every exit on every image: in eval mode an early-exit model runs later stages on fewer
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()


def slow_batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorms whose running average is slower than PyTorch's default (the ones `settle_batchnorm` recomputes)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.momentum is not None and m.momentum < DEFAULT_BATCHNORM_MOMENTUM]


def accelerated(device: torch.device) -> bool:
    """Whether training on `device` uses bf16 autocast and channels_last (CUDA GPUs with bfloat16)."""
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _freeze_frozen_batchnorm(model: nn.Module) -> None:
    """A BatchNorm whose parameters are frozen keeps its running statistics too."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None and not module.weight.requires_grad:
            module.eval()


@torch.no_grad()
def _reapply(masks) -> None:
    for weight, mask in masks:
        weight.mul_(mask)


@torch.no_grad()
def predict(model: nn.Module, data: DataBundle, split: str, device: torch.device, batch_size: int = 256):
    """(all-exit logits per batch, labels) over a split; used for accuracy and exit statistics."""
    model.to(device).eval()
    logits, labels = [], []
    for x, y in data.loader(split, batch_size, device=device):
        logits.append([out.cpu() for out in all_outputs(model, x)])
        labels.append(y.cpu())
    return [torch.cat(outs) for outs in zip(*logits)], torch.cat(labels)
