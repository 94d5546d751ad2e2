"""The int8 ONNX artifact computes what the float model computes, on the CPU that runs it."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ordercomp.deploy.export import INPUT_NAME, onnx_file
from ordercomp.deploy.onnx_int8 import quantize_onnx
from ordercomp.deploy.runtimes import onnx_session


def test_int8_sums_do_not_saturate_on_cpus_without_vnni(tmp_path):
    """Activations near the top of their uint8 range times weights at +127: on AVX2 CPUs without VNNI,
    onnxruntime adds pairs of such products in int16 (VPMADDUBSW), and 2 * 255 * 127 overflows it.
    That cost a pruned ResNet 15 points of accuracy on this machine; 7-bit weights cannot overflow."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 8, 3, bias=False), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.0)
    images = 0.6 + 0.4 * torch.rand(64, 16, 6, 6)
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx_file(model, images[:2], float_path)
    quantize_onnx(float_path, int8_path, images, INPUT_NAME)
    got = onnx_session(int8_path).run(None, {INPUT_NAME: images[:8].numpy()})[0]
    with torch.no_grad():
        expected = model(images[:8]).numpy()
    assert np.abs(got - expected).max() < 0.03 * np.abs(expected).max()
