"""Model architectures: the CNNs in one staged shape (stem -> stages -> head), and a Vision Transformer.

The stage boundaries are where early exits attach and where a depth factor may drop blocks,
so every CNN in the registry is expressed as a `StagedNet`. The `*_small_input` ones are
ordercomp's own adaptations of torchvision's ResNets, MobileNetV2 and VGG11-BN to small inputs and any
number of classes and channels: other classes, with other layer names, than torchvision's (which load
as they are with `--model torchvision.models:resnet18`). They were named `resnet18` etc. before; those
names now say where each went (`RENAMED`).

`vit_tiny_32` is torchvision's own `VisionTransformer` class as torchvision defines it, in a small
configuration for 32-px images: its patch embedding takes 3 channels, and grey images are repeated to
them (`models.fitting.data_for`, recorded in the data's preprocessing), as for torchvision's other classes.
An architecture that takes one image size only says so in `INPUT_SIZES`, so its data is loaded at that size.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import mobilenet_v2, resnet18, resnet34, vgg11_bn
from torchvision.models.resnet import BasicBlock
from torchvision.models.vision_transformer import VisionTransformer

from ..layers import mark_logits_layer


class StagedNet(nn.Module):
    """A CNN split into a stem, a list of stages and a classifier head."""

    splits_into_stages = True  # layers.is_staged

    def __init__(self, stem: nn.Module, stages: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(x)


def classifier_head(features: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), mark_logits_layer(nn.Linear(features, num_classes)))


def conv_bn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def plain_cnn(widths: tuple[int, ...], num_classes: int, in_channels: int) -> StagedNet:
    """Stages of two 3x3 conv-BN-ReLU blocks; each stage after the first halves the resolution."""
    stem = conv_bn_relu(in_channels, widths[0])
    stages, cin = [], widths[0]
    for index, width in enumerate(widths):
        stages.append(nn.Sequential(conv_bn_relu(cin, width, 1 if index == 0 else 2), conv_bn_relu(width, width)))
        cin = width
    return StagedNet(stem, stages, classifier_head(cin, num_classes))


def mini_resnet(widths: tuple[int, ...], blocks: int, num_classes: int, in_channels: int) -> StagedNet:
    """A CIFAR-style ResNet built from torchvision's BasicBlock with small widths."""
    stem = conv_bn_relu(in_channels, widths[0])
    stages, cin = [], widths[0]
    for index, width in enumerate(widths):
        stride = 1 if index == 0 else 2
        stages.append(nn.Sequential(*_basic_blocks(cin, width, stride, blocks)))
        cin = width
    return StagedNet(stem, stages, classifier_head(cin, num_classes))


def _basic_blocks(cin: int, cout: int, stride: int, count: int) -> list[nn.Module]:
    downsample = None
    if stride != 1 or cin != cout:
        downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    return [BasicBlock(cin, cout, stride, downsample)] + [BasicBlock(cout, cout) for _ in range(count - 1)]


def _small_input_stem(in_channels: int, width: int) -> nn.Sequential:
    return conv_bn_relu(in_channels, width)


def _torchvision_resnet(factory: Callable, num_classes: int, in_channels: int) -> StagedNet:
    net = factory(weights=None, num_classes=num_classes)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4]
    return StagedNet(_small_input_stem(in_channels, 64), stages, classifier_head(net.fc.in_features, num_classes))


def _mobilenet_v2(num_classes: int, in_channels: int) -> StagedNet:
    features = mobilenet_v2(weights=None, num_classes=num_classes).features
    features[0][0] = nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False)
    # Stage boundaries at the resolution changes of the inverted-residual sequence.
    cuts = [(1, 4), (4, 7), (7, 14), (14, 19)]
    stages = [nn.Sequential(*features[a:b]) for a, b in cuts]
    return StagedNet(features[0], stages, classifier_head(1280, num_classes))


def _vgg11_bn(num_classes: int, in_channels: int) -> StagedNet:
    features = vgg11_bn(weights=None, num_classes=num_classes).features
    features[0] = nn.Conv2d(in_channels, 64, 3, 1, 1)
    pools = [i for i, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
    # Small inputs: keep only the three middle max-pools; each stage ends where a pool stood.
    features[pools[0]], features[pools[-1]] = nn.Identity(), nn.Identity()
    bounds = [3] + [p + 1 for p in pools[1:]]
    stages = [nn.Sequential(*features[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    return StagedNet(nn.Sequential(*features[:3]), stages, classifier_head(512, num_classes))


def _vision_transformer(num_classes: int, in_channels: int, *, image_size: int, **sizes) -> VisionTransformer:
    """torchvision's VisionTransformer, unchanged: it takes 3-channel images, so grey ones are repeated to them."""
    if in_channels not in (1, 3):
        raise ValueError(f"torchvision's VisionTransformer takes 3-channel images (grey ones are repeated to 3), "
                         f"got {in_channels} channels: give grey or RGB images")
    vit = VisionTransformer(image_size=image_size, num_classes=num_classes, **sizes)
    mark_logits_layer(vit.heads.head)
    return vit


VIT_TINY_32 = dict(image_size=32, patch_size=4, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128)

ARCHITECTURES: dict[str, tuple[Callable[[int, int], nn.Module], str]] = {
    "cnn_tiny": (lambda c, i: plain_cnn((8, 16, 32), c, i), "3-stage plain CNN, widths 8/16/32"),
    "cnn_small": (lambda c, i: plain_cnn((16, 32, 64), c, i), "3-stage plain CNN, widths 16/32/64"),
    "cnn_medium": (lambda c, i: plain_cnn((32, 64, 128), c, i), "3-stage plain CNN, widths 32/64/128"),
    "resnet_mini": (lambda c, i: mini_resnet((32, 64, 128), 2, c, i), "CIFAR-style ResNet, 3 stages x 2 BasicBlocks, widths 32/64/128"),
    "resnet18_narrow": (lambda c, i: mini_resnet((16, 32, 64, 128), 2, c, i), "ResNet-18 layout (4 stages x 2 BasicBlocks), widths 16/32/64/128"),
    "resnet18_half": (lambda c, i: mini_resnet((32, 64, 128, 256), 2, c, i), "ResNet-18 layout (4 stages x 2 BasicBlocks), widths 32/64/128/256 (half of ResNet-18's)"),
    "resnet18_small_input": (lambda c, i: _torchvision_resnet(resnet18, c, i), "torchvision's ResNet-18 stages, 3x3 stem, no max-pool"),
    "resnet34_small_input": (lambda c, i: _torchvision_resnet(resnet34, c, i), "torchvision's ResNet-34 stages, 3x3 stem, no max-pool"),
    "mobilenet_v2_small_input": (_mobilenet_v2, "torchvision's MobileNetV2 blocks, stride-1 stem"),
    "vgg11_bn_small_input": (_vgg11_bn, "torchvision's VGG11-BN features, global-pool classifier"),
    "vit_tiny_32": (lambda c, i: _vision_transformer(c, i, **VIT_TINY_32),
                    "torchvision's VisionTransformer: 32x32 input, patch 4 (64 tokens + class token), 4 blocks, 4 heads, width 64, MLP 128"),
}
INPUT_SIZES = {"vit_tiny_32": VIT_TINY_32["image_size"]}  # a ViT's position embeddings fix its image size
RENAMED = {name.removesuffix("_small_input"): name for name in ARCHITECTURES if name.endswith("_small_input")}


def renamed_message(name: str) -> str:
    """Where an old zoo name went, and how to get torchvision's own class of that name."""
    return (f"the zoo's {name} is now named {RENAMED[name]} (ordercomp's adaptation to small inputs, not torchvision's class); "
            f"torchvision's own {name}: --model torchvision.models:{name} --model-args '{{\"num_classes\": N}}'")


def list_architectures() -> list[str]:
    return sorted(ARCHITECTURES)


def create_model(name: str, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Build an untrained architecture from the registry."""
    if name in RENAMED:
        raise ValueError(renamed_message(name))
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}: choose one of {', '.join(list_architectures())}")
    if num_classes < 2 or in_channels < 1:
        raise ValueError(f"need at least 2 classes and 1 input channel, got {num_classes} and {in_channels}")
    return ARCHITECTURES[name][0](num_classes, in_channels)
