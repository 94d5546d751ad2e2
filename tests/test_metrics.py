"""Metrics: MACs from the FLOP counter match the layer arithmetic; BitOps, size and exits add up."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ordercomp.layers import to_quant
from ordercomp.metrics import expected_cost, measure, storage_bytes, unpack_hits
from ordercomp.models.zoo import StagedNet


def toy_net():
    torch.manual_seed(0)
    stem = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    stages = [nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.ReLU())]
    return StagedNet(stem, stages, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))


def test_macs_and_bitops_follow_the_layer_arithmetic():
    model = toy_net().eval()
    x = torch.randn(1, 1, 8, 8)
    macs, bitops = expected_cost(model, x, None)
    conv_macs = 8 * 8 * (4 * 1 * 9 + 8 * 4 * 9)
    assert macs == conv_macs + 8 * 10
    assert bitops == macs * 32 * 32
    model.stages[0][0] = to_quant(model.stages[0][0], 4, 8)
    _, quantised = expected_cost(model, x, None)
    assert quantised == bitops - 8 * 8 * 8 * 4 * 9 * (32 * 32 - 4 * 8)


def test_storage_counts_bits_and_sparse_storage():
    model = toy_net()
    full = storage_bytes(model)
    assert full == 4 * sum(p.numel() for p in model.parameters())
    layer = model.stages[0][0]
    layer.weight.data[:, :, :, :2] = 0
    layer.sparsity = 2 / 3
    sparse = storage_bytes(model)
    expected_layer = (layer.weight.numel() + int((layer.weight != 0).sum()) * 32) / 8
    assert sparse == pytest.approx(full - layer.weight.numel() * 4 + expected_layer)


def test_measure_reports_every_figure(digits, tiny_model):
    metrics = measure(tiny_model, digits, "test", repeats=3)
    assert 80 < metrics.accuracy <= 100
    # both timed; no relation between them is asserted: on a shared machine any call can be slowed
    assert all(0 < latency < float("inf") for latency in (metrics.latency_ms_b1, metrics.latency_ms_batch))
    assert metrics.peak_memory_bytes > metrics.size_bytes
    assert metrics.exit_fractions is None


def test_measure_keeps_which_images_were_right_for_paired_evidence(digits, tiny_model):
    metrics = measure(tiny_model, digits, "val", latency=False)
    hits = unpack_hits(metrics.correct)
    assert len(hits) == len(digits.val.tensors[1]) and set(hits) <= {0, 1}
    assert 100 * sum(hits) / len(hits) == pytest.approx(metrics.accuracy)
