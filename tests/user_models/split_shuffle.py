"""A user's ShuffleNetV2 in the style of kuangliu/pytorch-cifar, small enough for 8x8 digits: its blocks split their
channels at `int(x.size(1) * ratio)`, which torch.fx cannot follow (a Python int of a traced size), and shuffle them
with view / permute / reshape. Tests load it as `tests/user_models/split_shuffle.py:SplitShuffleNet`.
`ShuffleUnits` chains units whose branch ends in a 1x1 convolution, as kuangliu's do: its inner channels can be pruned.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SplitBlock(nn.Module):
    def __init__(self, ratio: float):
        super().__init__()
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = int(x.size(1) * self.ratio)
        return x[:, :c, :, :], x[:, c:, :, :]


class ShuffleBlock(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.size()
        return x.view(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class Unit(nn.Module):
    """Half the channels pass, the other half go through 1x1 -> depthwise 3x3 -> 1x1; concatenated, then shuffled."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.split = SplitBlock(0.5)
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.shuffle = ShuffleBlock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.split(x)
        out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2))))))
        return self.shuffle(torch.cat([x1, out], 1))


class SplitShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = Unit(16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.layer2 = Unit(32)
        self.linear = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer1(F.relu(self.bn1(self.conv1(x))))          # N, 16, 8, 8
        out = self.layer2(F.relu(self.down(out)))                     # N, 32, 4, 4
        out = F.avg_pool2d(out, 4)
        return self.linear(out.view(out.size(0), -1))                 # N, classes


class BranchUnit(Unit):
    """A unit whose branch ends in a 1x1 convolution (kuangliu's SBasicBlock): the branch's inner width is its own."""

    def __init__(self, channels: int):
        super().__init__(channels)
        self.conv3 = nn.Conv2d(channels // 2, channels // 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.split(x)
        out = self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2))))))
        return self.shuffle(torch.cat([x1, F.relu(out)], 1))


class ShuffleUnits(SplitShuffleNet):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__(num_classes, in_channels)
        self.layer1 = nn.Sequential(BranchUnit(16), BranchUnit(16))
        self.layer2 = nn.Sequential(BranchUnit(32), BranchUnit(32))
