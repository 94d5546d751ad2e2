"""A Vision Transformer as a base (issue 16): the zoo's torchvision VisionTransformer and the digits32_vit sample,
grey digits repeated to its 3 channels; pruning its width; quantising its attention; and every registered method on it
applying or saying why not."""
from __future__ import annotations

import copy

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import TensorDataset
from torchvision.models.vision_transformer import VisionTransformer

from ordercomp.exploration.explorer import prepare_base
from ordercomp.layers import QuantMultiheadAttention, bits_of, is_quantised, to_quant
from ordercomp.methods.base import Context, Incompatible
from ordercomp.methods.registry import METHODS, get_method
from ordercomp.metrics import expected_cost, measure, storage_bytes
from ordercomp.models.checkpoints import resolve_model, sample_card
from ordercomp.models.weights import CheckpointError
from ordercomp.models.zoo import create_model
from ordercomp.train import Budget


@pytest.fixture(scope="module")
def vit_base():
    """The shipped sample as an exploration takes it: 32-px digits, grey repeated to 3 channels, classifier marked."""
    base, source, data = prepare_base("digits32_vit", device="cpu")
    return base, data


def fewer(data, train: int = 256, held_out: int = 359):
    """A quarter of the training images (fine-tuning in seconds), all the validation images."""
    few = copy.copy(data)
    for name, count in (("train", train), ("val", held_out), ("test", held_out)):
        setattr(few, name, TensorDataset(*(t[:count] for t in getattr(data, name).tensors)))
    return few


def test_the_zoo_vit_is_torchvisions_class_as_it_is():
    model = create_model("vit_tiny_32", 10, 1)
    assert type(model) is VisionTransformer and model.conv_proj.in_channels == 3  # grey images are repeated to 3
    assert (model.image_size, model.patch_size, len(model.encoder.layers), model.hidden_dim, model.mlp_dim) == (32, 4, 4, 64, 128)
    assert model.encoder.layers[0].num_heads == 4 and model.heads.head.out_features == 10
    with pytest.raises(ValueError, match="takes 3-channel images .* got 2 channels"):
        create_model("vit_tiny_32", 10, 2)


def test_a_zoo_vit_gets_its_data_at_its_size_with_grey_repeated_and_a_wrong_size_is_one_line(tmp_path, digits):
    weights = tmp_path / "vit.safetensors"
    save_file(create_model("vit_tiny_32").state_dict(), str(weights))
    base, source, data = prepare_base("vit_tiny_32", weights=str(weights), device="cpu")
    assert (data.input_size, data.in_channels, source["in_channels"]) == (32, 3, 3)
    assert "repeated to the model's 3" in data.preprocessing["channel_handling"]
    with pytest.raises(CheckpointError, match=r"^vit_tiny_32 does not run on a batch of \(3, 1, 8, 8\) images .*"
                                              r"the zoo's vit_tiny_32 takes 32x32 images: --input-size 32$"):
        resolve_model("vit_tiny_32", digits, weights=str(weights))


def test_the_vit_sample_leaves_compression_something_to_lose(vit_base):
    base, data = vit_base
    card = sample_card("digits32_vit")
    assert card["architecture"] == "vit_tiny_32" and card["in_channels"] == 3 and card["input_size"] == 32
    assert "token_merge" in card["methods"]
    assert measure(base, data, "test", latency=False).accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=0.01)


def test_prune_narrows_the_vit_keeping_its_heads_and_it_runs(vit_base):
    base, data = vit_base
    method = get_method("prune")
    pruned = method.apply(base, method.default_config(), Context(fewer(data), Budget(epochs=0), seed=0))
    attention = pruned.encoder.layers[0].self_attention
    assert (pruned.hidden_dim, attention.embed_dim, attention.num_heads, attention.head_dim) == (32, 32, 4, 8)
    assert pruned.encoder.layers[0].mlp[0].out_features == 64 and pruned.heads.head.out_features == 10
    with torch.no_grad():
        assert pruned(data.test.tensors[0][:5]).shape == (5, 10)
    assert expected_cost(pruned, data.example_input(1), None)[0] < 0.4 * expected_cost(base, data.example_input(1), None)[0]


def test_quantize_makes_every_projection_and_product_of_the_vit_four_bit(vit_base):
    base, data = vit_base
    method = get_method("quantize")
    quantised = method.apply(base, method.default_config(), Context(fewer(data), Budget(epochs=0), seed=0))
    for block in quantised.encoder.layers:
        attention = block.self_attention
        assert isinstance(attention, QuantMultiheadAttention) and bits_of(attention) == bits_of(attention.out_proj) == (4, 4)
        assert is_quantised(block.mlp[0]) and is_quantised(block.mlp[3])
    example = data.example_input(1)
    assert expected_cost(quantised, example, None)[1] == expected_cost(base, example, None)[1] / 64  # 4 x 4 bits against 32 x 32
    in_projections = sum(block.self_attention.in_proj_weight.numel() for block in base.encoder.layers)
    assert storage_bytes(base) - storage_bytes(quantised) > in_projections * (4 - 0.5)  # read as raw weights, stored at 4 bits


def test_quantised_attention_at_full_bits_computes_what_multihead_attention_does(vit_base):
    base, data = vit_base
    attention = base.encoder.layers[0].self_attention
    tokens = torch.randn(3, 65, 64)
    mask = torch.randn(3 * 4, 65, 65)  # token merging's proportional attention adds one like it
    with torch.no_grad():
        for given in (None, mask):
            expected = attention(tokens, tokens, tokens, need_weights=False, attn_mask=given)[0]
            got = to_quant(copy.deepcopy(attention), 32, 32).eval()(tokens, tokens, tokens, need_weights=False, attn_mask=given)[0]
            assert torch.allclose(got, expected, atol=1e-5)


# What each method does on the ViT today: applies, or the reason it cannot
INCOMPATIBLE_ON_VIT = {"early_exit": "needs stage boundaries", "int8": "needs stage boundaries"}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_on_the_vit_applies_or_says_why(name, vit_base):
    base, data = vit_base
    method = get_method(name)
    context = Context(fewer(data, train=64, held_out=64), Budget(epochs=0.25), seed=0)
    if name in INCOMPATIBLE_ON_VIT:
        with pytest.raises(Incompatible, match=INCOMPATIBLE_ON_VIT[name]):
            method.apply(base, method.default_config(), context)
        return
    compressed = method.apply(base, method.default_config(), context)
    with torch.no_grad():
        assert compressed.eval()(data.test.tensors[0][:5]).shape == (5, 10)
