"""An example of a model a user brings: their own class, not built from ordercomp's zoo.

It has what the zoo's classes avoid and users' classes often have: ReLU called as a function, a
residual add in a block, max and average pooling in the forward, a linear classifier `fc`, and a 1x1
projection `proj` registered after `fc` but used before it (so the last registered layer is not the
classifier). Tests load it as `tests/user_models/my_net.py:MyNet` (a class) or `...:my_net` (a
function returning one), at 8 px (digits) or larger.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    """Two 3x3 convolutions with a residual add."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class MyNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.block1 = Block(width)
        self.widen = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn_widen = nn.BatchNorm2d(2 * width)
        self.block2 = Block(2 * width)
        self.fc = nn.Linear(4 * width, num_classes)
        self.proj = nn.Conv2d(2 * width, 4 * width, 1)  # registered after fc, used before it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))           # N, w, H, W
        x = self.block1(x)
        x = F.max_pool2d(x, 2)                       # N, w, H/2, W/2
        x = F.relu(self.bn_widen(self.widen(x)))     # N, 2w, H/2, W/2
        x = self.block2(x)
        x = F.relu(self.proj(x))                     # N, 4w, H/2, W/2
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)   # N, 4w
        return self.fc(x)                            # N, classes


def my_net(num_classes: int, width: int = 16) -> MyNet:
    """A factory function, as training repositories often have one: one input channel, any width."""
    return MyNet(num_classes=num_classes, in_channels=1, width=width)
