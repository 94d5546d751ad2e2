"""A user's network with tied weights: two convolutions share one weight tensor (`conv2.weight = conv1.weight`),
as weight-tied and recurrent-style networks do. Its state dict names the shared tensor twice; safetensors'
`save_model` writes it once. Tests load it as `tests/user_models/tied_net.py:TiedNet`, at 8 px (digits).
`TiedInside` puts the tied pair behind two convolutions of their own, whose channels can be pruned without it.
"""
from __future__ import annotations

import torch
from torch import nn


class TiedNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2.weight = self.conv1.weight  # tied: one parameter under two names
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))                       # N, w, H, W
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))                     # N, classes


class TiedInside(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv0 = nn.Conv2d(width, width, 3, padding=1)  # its input channels (the stem's output) touch no tied weight
        self.tied = TiedNet(num_classes, width, width)     # its stem, conv1 and conv2 carry channels into or out of the tie

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tied(torch.relu(self.conv0(torch.relu(self.stem(x)))))
