"""A user's network written for CIFAR-10, as kuangliu/pytorch-cifar writes them: 3 input channels fixed, three
stride-2 stages, then `F.avg_pool2d(out, 4)` and `out.view(out.size(0), -1)`, so it runs on 32x32 images only.
Tests load it as `tests/user_models/cifar_net.py:CifarNet`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CifarNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layers = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                                    nn.ReLU()) for _ in range(3)])
        self.linear = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))  # N, 8, H/8, W/8
        out = F.avg_pool2d(out, 4)                           # N, 8, 1, 1 at 32 px
        out = out.view(out.size(0), -1)
        return self.linear(out)                              # N, classes
