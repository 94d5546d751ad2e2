"""Metrics: MACs from the FLOP counter match the layer arithmetic; BitOps, size and exits add up."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import torchvision.models as tv

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


def test_a_weight_tied_to_two_layers_is_stored_once():
    """A user's network whose two convolutions share one weight was counted at 92.3 KiB for its 14,412 parameters
    (56.3 KiB): the tied weight once per layer, which inflated every size reduction against it."""
    from tests.user_models.tied_net import TiedNet

    model = TiedNet()
    assert storage_bytes(model) == 4 * sum(p.numel() for p in model.parameters())


def test_a_traced_network_split_into_stages_counts_what_it_counted_whole(digits):
    """Stop 45: the stem, stages and head of a traced network are GraphModules, and every buffer of a GraphModule was
    counted as an int8 graph's weight, so batch norm's running statistics added to the parameters and the storage of
    every traced network (a user's 24,058-parameter CNN read 24,285) and of each of its steps."""
    from ordercomp.metrics import count_params
    from ordercomp.models.structure import structure_of, with_structure
    from tests.user_models.my_net import MyNet

    model = MyNet().eval()
    view = with_structure(model, digits.example_input(2), 10)
    assert structure_of(view).stages
    assert count_params(view) == sum(p.numel() for p in model.parameters()) == count_params(model)
    assert storage_bytes(view) == storage_bytes(model)


def tiny_vit():
    """8x8 grey images in 4x4 patches: 4 tokens and the class token, width 8, 2 heads, MLP 16, 2 blocks."""
    torch.manual_seed(0)
    vit = tv.VisionTransformer(image_size=8, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16, num_classes=10)
    vit.conv_proj = nn.Conv2d(1, 8, 4, 4)
    return vit.eval()


TOKENS, WIDTH, MLP = 5, 8, 16
PROJECTIONS = TOKENS * WIDTH * 3 * WIDTH + TOKENS * WIDTH * WIDTH  # in-projection (q, k, v), out_proj: 960 + 320
PRODUCTS = 2 * TOKENS * TOKENS * WIDTH  # QK^T and AV over all heads: heads x tokens^2 x head width, twice: 400
BLOCK = PROJECTIONS + PRODUCTS + 2 * TOKENS * WIDTH * MLP  # + the MLP's two layers: 2960
PATCHES, HEAD = 2 * 2 * 8 * (1 * 4 * 4), WIDTH * 10  # patch embedding (4 outputs of a 4x4 conv to 8 channels), class token to logits


def test_vit_macs_count_every_projection_and_the_attention_products():
    # before: nn.MultiheadAttention's fused fast path was invisible to the counter: 3,152 of 6,512 MACs were counted
    macs, bitops = expected_cost(tiny_vit(), torch.randn(1, 1, 8, 8), None)
    assert macs == PATCHES + 2 * BLOCK + HEAD == 6512
    assert bitops == macs * 32 * 32
    assert torch.backends.mha.get_fastpath_enabled()  # counting on the slow path leaves the setting as it was


def test_vit_attention_bitops_take_weight_bits_for_projections_and_activation_bits_for_products():
    model = tiny_vit()
    attention = model.encoder.layers[0].self_attention
    attention.weight_bits, attention.act_bits = 4, 8  # the marks a quantised layer carries (layers.bits_of)
    _, bitops = expected_cost(model, torch.randn(1, 1, 8, 8), None)
    assert bitops == (PATCHES + BLOCK + HEAD + 2 * TOKENS * WIDTH * MLP) * 32 * 32 + PROJECTIONS * 4 * 8 + PRODUCTS * 8 * 8


def test_vit_storage_counts_the_in_projection_read_as_a_raw_parameter_at_its_bits():
    model = tiny_vit()
    full = storage_bytes(model)
    assert full == 4 * sum(p.numel() for p in model.parameters())
    attention = model.encoder.layers[1].self_attention
    attention.weight_bits = 4
    assert storage_bytes(model) == full - 3 * WIDTH * WIDTH * (4 - 0.5)


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


def test_peak_memory_counts_a_storage_until_the_last_tensor_on_it_is_released():
    # before: a storage stopped counting with the first tensor on it, so a tensor sharing it that outlived that one
    # held memory the peak did not see (here 4,000 bytes: the peak read 4,008 where 8,008 bytes were held at once)
    from ordercomp.live_memory import LiveStorage

    def forward(x):
        kept = (x * 2).detach()  # the product's own tensor is released at once; its 4,000 bytes live on in the alias
        return kept.sum() + (x * 3).sum()

    x, tracker = torch.ones(1000), LiveStorage()
    with tracker:
        forward(x)
    assert tracker.peak == 2 * 4000 + 2 * 4 and tracker.live == 0
