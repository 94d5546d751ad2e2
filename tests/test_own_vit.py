"""Vision Transformers the user wrote (tests/user_models/own_vit.py, not torchvision's class): OwnViT in timm's layout
and EncoderViT on PyTorch's nn.TransformerEncoder. Every method applies to them or says why, pruning narrows what
their forward lets it and keeps their embedding, int8 converts them layer by layer, with their blocks named as stages
their exits read their tokens, and an encoder layer runs the layers quantize rewrote."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ordercomp.layers import bits_of, compute_layers, is_int8_converted
from ordercomp.methods.base import Context, Incompatible
from ordercomp.methods.early_exit import EarlyExitNet, TokenPool, select_exits
from ordercomp.methods.registry import METHODS, get_method
from ordercomp.metrics import expected_cost
from ordercomp.models.structure import structure_of, with_structure
from ordercomp.train import Budget, train
from tests.user_models.own_vit import CachedBiasViT, EncoderViT, KeptWidthsViT, OwnViT
from testkit import fewer


@pytest.fixture(scope="module")
def own_vit(digits):
    """The user's transformer trained on the 8-px digits (2x2 patches, 2 blocks, 2 heads, width 16, MLP 32)."""
    torch.manual_seed(0)
    model = train(OwnViT(), digits, Budget(epochs=30, lr=5e-3), seed=0, device=torch.device("cpu"))  # 95.5 % on the test split
    return model.eval()


def as_base(model: nn.Module, digits, **names) -> nn.Module:
    """The network as an exploration takes it: a copy, its classifier marked (and split at `stages` when named)."""
    return with_structure(model, digits.example_input(2), digits.num_classes, **names)


def predictions(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(images).argmax(1)


# what cannot apply to the user's own transformer, and the reason's words
INCOMPATIBLE_ON_OWN_VIT = {"token_merge": "torchvision's VisionTransformer", "early_exit": "stage boundaries"}


@pytest.mark.parametrize("network", ["own_vit", "encoder_vit"])
@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_on_a_users_own_transformer_applies_or_says_why(name, network, digits, request):
    # before, on own_vit: prune and distill failed (Torch-Pruning cut the attention's packed projection that the forward
    # reshapes to its heads), int8 was incompatible (no stage boundaries); on encoder_vit: int8 failed ('LayerAttention'
    # object has no attribute 'batch_first') and lowrank failed ('Sequential' object has no attribute 'weight'):
    # nn.TransformerEncoderLayer reads its parts' attributes to choose its path
    user_model = request.getfixturevalue(network)
    method = get_method(name)
    context = Context(fewer(digits, train=64, held_out=64), Budget(epochs=0.5), seed=0)
    if name in INCOMPATIBLE_ON_OWN_VIT:
        with pytest.raises(Incompatible, match=INCOMPATIBLE_ON_OWN_VIT[name]):
            method.apply(as_base(user_model, digits), method.default_config(), context)
        return
    compressed = method.apply(as_base(user_model, digits), method.default_config(), context)
    with torch.no_grad():
        assert compressed.eval()(digits.test.tensors[0][:5]).shape == (5, 10)


def test_prune_narrows_the_mlps_of_a_users_transformer_and_keeps_the_widths_its_forward_reshapes(own_vit, digits):
    pruned = get_method("prune").apply(as_base(own_vit, digits), get_method("prune").make_config(ratio=0.5),
                                       Context(digits, Budget(epochs=0), seed=0))
    for block in pruned.blocks:
        assert (block.mlp[0].out_features, block.mlp[2].in_features) == (16, 16)  # half the hidden units
        assert (block.attn.qkv.out_features, block.attn.proj.out_features) == (48, 16)  # heads x head width, as reshaped
    assert pruned.patch_embed.out_channels == 16 and pruned.head.out_features == 10
    assert own_vit.blocks[0].mlp[0].out_features == 32  # the user's model is left as it was
    images = digits.test.tensors[0]
    assert (predictions(pruned, images) == predictions(own_vit, images)).float().mean() > 0.5  # the strongest units kept


def test_prune_keeps_the_embedding_of_a_transformer_whose_attention_keeps_its_widths_in_attributes(digits):
    # before: timm's ViT lost half its embedding (patch embedding, class token, position embeddings, every block's output)
    torch.manual_seed(0)
    pruned = get_method("prune").apply(as_base(KeptWidthsViT().eval(), digits), get_method("prune").make_config(ratio=0.5),
                                       Context(digits, Budget(epochs=0), seed=0))
    assert (pruned.patch_embed.out_channels, pruned.cls_token.shape[-1], pruned.pos_embed.shape[-1]) == (16, 16, 16)
    assert [block.mlp[0].out_features for block in pruned.blocks] == [16, 16]  # half the hidden units


def test_an_attention_caching_its_biases_in_evaluation_is_traced_as_one_call_and_pruned(digits):
    # before: its helper's other operations in evaluation left the forward untraced, and then pruning failed on copying a
    # model that Torch-Pruning had run (deepcopy refuses the cached bias, which it computed)
    torch.manual_seed(0)
    base = as_base(CachedBiasViT().eval(), digits)
    assert structure_of(base).traced and structure_of(base).classifier == "head"
    pruned = get_method("prune").apply(base, get_method("prune").make_config(ratio=0.5), Context(digits, Budget(epochs=0), seed=0))
    assert [block.mlp[0].out_features for block in pruned.blocks] == [16, 16]


def test_prune_of_a_network_whose_forward_holds_every_width_is_incompatible_in_one_line(digits):
    class Held(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden, self.fc = nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            h = self.hidden(x.flatten(1))
            return self.fc(h.view(h.shape[0], 4, 8).relu().flatten(1))  # four groups of eight, as it was built

    with pytest.raises(Incompatible, match="no layer whose channels this network's forward can lose") as raised:
        get_method("prune").apply(as_base(Held(), digits), get_method("prune").default_config(),
                                  Context(digits, Budget(epochs=0), seed=0))
    assert "\n" not in str(raised.value)


@pytest.fixture(scope="module")
def int8_context(digits):
    return Context(fewer(digits, train=128), Budget(epochs=0), seed=0)


@pytest.fixture(scope="module")
def own_vit_int8(own_vit, digits, int8_context):
    """The user's transformer converted to int8 as an exploration converts it (no stages: layer by layer)."""
    return get_method("int8").apply(as_base(own_vit, digits), get_method("int8").make_config(calibration_batches=2), int8_context)


def test_int8_converts_a_users_transformer_layer_by_layer_and_predicts_as_it_did(own_vit_int8, own_vit, digits):
    converted = own_vit_int8
    assert is_int8_converted(converted) and not compute_layers(converted)  # patch embedding, projections, MLPs, head
    images = digits.test.tensors[0]
    assert (predictions(converted, images) == predictions(own_vit, images)).float().mean() >= 0.95


def test_early_exit_on_a_users_transformer_split_at_its_blocks_reads_their_tokens(own_vit, digits):
    # before: exits pooled feature maps (N, C, H, W) only, and a block's tokens (N, T, C) were incompatible
    base = as_base(own_vit, digits, stages=("blocks.0", "blocks.1"))
    method = get_method("early_exit")
    exits = method.apply(base, method.make_config(threshold=0.8), Context(digits, Budget(epochs=3), seed=0))
    assert isinstance(exits, EarlyExitNet) and len(exits.exits) == 1 and isinstance(exits.exits[0][0], TokenPool)
    images, labels = digits.test.tensors
    with torch.no_grad():
        outputs = exits.eval().forward_all(images)
        chosen, leaves_at = select_exits(outputs, 0.8)
        assert torch.allclose(exits(images), chosen, atol=1e-5)
    assert 0.1 < (leaves_at == 0).float().mean() < 0.9  # some images leave after the first block, not all (37 %)
    accuracy = lambda logits: (logits.argmax(1) == labels).float().mean().item()
    assert accuracy(outputs[0]) > 0.5  # the exit learned to read the first block's tokens (71 %)
    assert accuracy(chosen) >= accuracy(outputs[-1]) - 0.03  # 94.4 % against 95.5 %


def test_int8_counts_the_attention_products_it_leaves_float_at_full_bits_whether_split_at_blocks_or_not(
        own_vit_int8, own_vit, digits, int8_context):
    # before: split at its blocks, each block was one int8 part and its QK^T and AV, which the quantiser leaves float,
    # counted at 8 x 8 bits: 16x fewer BitOps claimed against 3.9x converted layer by layer
    example = digits.example_input(1)
    blocks = as_base(own_vit, digits, stages=("blocks.0", "blocks.1"))
    by_blocks = get_method("int8").apply(copy.deepcopy(blocks), get_method("int8").make_config(calibration_batches=2), int8_context)
    reduction = lambda base, converted: expected_cost(base, example, None)[1] / expected_cost(converted, example, None)[1]
    by_layers = reduction(as_base(own_vit, digits), own_vit_int8)
    assert reduction(blocks, by_blocks) == pytest.approx(by_layers) and 2 < by_layers < 8, (reduction(blocks, by_blocks), by_layers)


@pytest.fixture(scope="module")
def encoder_vit(digits):
    """The user's ViT on nn.TransformerEncoder, trained on the 8-px digits (93.0 % on the validation split)."""
    torch.manual_seed(0)
    return train(EncoderViT(), digits, Budget(epochs=20, lr=5e-3), seed=0, device=torch.device("cpu")).eval()


def test_a_quantised_transformer_encoder_layer_runs_its_quantised_layers_when_measured(encoder_vit, digits):
    # before: in eval mode without gradients nn.TransformerEncoderLayer's fused path read the float weights of the
    # layers quantize had rewritten, so the accuracy reported for a 4-bit model was that of a float one
    quantised = get_method("quantize").apply(as_base(encoder_vit, digits), get_method("quantize").default_config(),
                                             Context(fewer(digits, train=64), Budget(epochs=0), seed=0))
    layers = [layer for name, layer in quantised.named_modules() if name.endswith(("linear1", "linear2", "self_attn"))]
    assert len(layers) == 6 and all(bits_of(layer) == (4, 4) for layer in layers)
    images = digits.test.tensors[0]
    with torch.no_grad():
        measured = quantised.eval()(images)  # as measure() and an export run it
        torch.backends.mha.set_fastpath_enabled(False)  # PyTorch's switch for that path: every layer called
        try:
            stepwise = quantised(images)
        finally:
            torch.backends.mha.set_fastpath_enabled(True)
    assert torch.equal(measured, stepwise)


def test_prune_keeps_the_embedding_of_a_vit_built_on_pytorch_s_transformer_layers(encoder_vit, digits):
    # before: the residual stream (patch embedding, each layer's attention and linear2) lost half its width, as
    # torchvision's ViT never does, and the pruned ViT stood at chance (8.4 % before fine-tuning, 86.6 % now)
    context = Context(digits, Budget(epochs=0), seed=0)
    images = digits.test.tensors[0]
    for heads in (False, True):
        pruned = get_method("prune").apply(as_base(encoder_vit, digits), get_method("prune").make_config(ratio=0.5, heads=heads), context)
        for layer in pruned.blocks.layers:
            assert (layer.linear1.in_features, layer.linear1.out_features, layer.linear2.out_features) == (16, 16, 16)
            assert layer.self_attn.num_heads == (1 if heads else 2)
        assert pruned.patch_embed.out_channels == 16 and pruned.cls_token.shape[-1] == 16
        if not heads:
            assert (predictions(pruned, images) == predictions(encoder_vit, images)).float().mean() > 0.7
