"""A user's network with reparametrized weights, as GAN discriminators and audio models write them: `NormNet` with
torch's parametrizations (`weight_norm` on two convolutions and the classifier, `spectral_norm` on the third),
`HookNormNet` with the older hooks (`torch.nn.utils.weight_norm`, `torch.nn.utils.spectral_norm`), whose weight
after a forward with gradients is no graph leaf. Tests load them as `tests/user_models/norm_net.py:NormNet`, at 8 px.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.nn.utils import parametrizations


class NormNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.conv1 = parametrizations.weight_norm(nn.Conv2d(in_channels, width, 3, padding=1))
        self.conv2 = parametrizations.weight_norm(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1))
        self.conv3 = parametrizations.spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1))
        self.fc = parametrizations.weight_norm(nn.Linear(2 * width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))  # N, 2w, H/4, W/4
        return self.fc(x.mean((2, 3)))                                                 # N, classes


class HookNormNet(NormNet):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 8):
        super().__init__(num_classes, in_channels, width)
        with warnings.catch_warnings():  # torch.nn.utils.weight_norm is deprecated, and still in users' code
            warnings.simplefilter("ignore", FutureWarning)
            self.conv1 = nn.utils.weight_norm(nn.Conv2d(in_channels, width, 3, padding=1))
        self.conv3 = nn.utils.spectral_norm(nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1))
        self.fc = nn.Linear(2 * width, num_classes)
