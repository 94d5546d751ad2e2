"""A user's network with tied weights: two convolutions share one weight tensor (`conv2.weight = conv1.weight`),
as weight-tied and recurrent-style networks do. Its state dict names the shared tensor twice; safetensors'
`save_model` writes it once. Tests load it as `tests/user_models/tied_net.py:TiedNet`, at 8 px (digits).
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
