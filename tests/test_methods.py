"""Contract tests for every method in the registry, plus what 'B after A' keeps."""
from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from ordercomp.layers import bits_of, compute_layers, sparsity_of
from ordercomp.methods.base import Context, Incompatible, config_to_dict
from ordercomp.methods.early_exit import EarlyExitNet
from ordercomp.methods.registry import METHODS, get_method, parse_methods
from ordercomp.metrics import measure
from ordercomp.models.weights import tied_names
from ordercomp.models.zoo import create_model
from testkit import TRANSFORMER_ONLY

NAMES = list(METHODS)
CNN_NAMES = [name for name in METHODS if name not in TRANSFORMER_ONLY]  # the ones the tiny CNN takes
KEEP_EVERY_WEIGHT = {"quantize", "int8", "early_exit"}  # fewer bits or added exit heads: no weight is removed


def state_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def base_accuracy(tiny_model, digits) -> float:
    return measure(tiny_model, digits, "val", latency=False).accuracy


def accuracy_floor(name: str, base: float, classes: int) -> float:
    """What a method must keep of the base after one epoch of fine-tuning (the `context` budget): a method
    that keeps every weight holds the base within 3 points (11 of the 359 validation images); one that
    removes weights or channels keeps at least 40 % of what the base learned above chance."""
    if name in KEEP_EVERY_WEIGHT:
        return base - 3.0
    chance = 100 / classes
    return chance + 0.4 * (base - chance)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_apply_leaves_input_untouched_and_output_runs(name, tiny_model, context, digits, base_accuracy):
    before, structure = state_copy(tiny_model), str(tiny_model)
    method = get_method(name)
    compressed = method.apply(tiny_model, method.default_config(), context)
    assert str(tiny_model) == structure
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), f"{name} changed the input's {key}"
    logits = compressed.eval()(digits.test.tensors[0][:5])
    assert logits.shape == (5, digits.num_classes)
    assert measure(compressed, digits, "val", latency=False).accuracy >= accuracy_floor(name, base_accuracy, digits.num_classes)


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trips_through_json_form(name):
    method = get_method(name)
    record = config_to_dict(name, method.default_config())
    assert record["method"] == name and record["version"] >= 1
    fields = {k: v for k, v in record.items() if k not in ("method", "version")}
    assert method.make_config(**fields) == method.default_config()


@pytest.mark.parametrize("name, bad", [
    ("prune", {"ratio": 1.5}), ("prune", {"importance": "loudest"}), ("quantize", {"weight_bits": 3}),
    ("quantize", {"act_bits": 16}), ("distill", {"width": 0.0}), ("distill", {"width": 1.0}),
    ("early_exit", {"threshold": 1.2}), ("lowrank", {"rank_ratio": 0}), ("sparsify", {"sparsity": 1.0}),
    ("int8", {"calibration_batches": 0}), ("prune", {"speed": 2}), ("token_merge", {"r": 0}),
])
def test_impossible_settings_raise_value_error(name, bad):
    with pytest.raises(ValueError):
        get_method(name).make_config(**bad)


def typed_fields_of_every_config():
    """(method, field, declared type) for every field of every registered method's config."""
    import typing

    return [(name, field, kind) for name, method in METHODS.items()
            for field, kind in typing.get_type_hints(method.config_type).items()]


def wrong_values(kind):
    if kind is str:
        return [3, None, 0.5]
    if kind is bool:  # a switch takes true or false, not a number or text that reads like one
        return [1, 0, 1.0, "true", "False", None, float("nan")]
    wrong = [float("nan"), float("inf"), float("-inf"), "abc", "0.5", None, True, [1]]
    return wrong + ([2.5] if kind is int else [])


@pytest.mark.parametrize("name, field, value", [(name, field, value) for name, field, kind in typed_fields_of_every_config()
                                                for value in wrong_values(kind)])
def test_every_setting_refuses_nan_inf_and_wrong_types_by_name(name, field, value):
    with pytest.raises(ValueError, match=f"{name}.{field} must be"):
        get_method(name).make_config(**{field: value})


@pytest.mark.parametrize("name", NAMES)
def test_numbers_in_range_are_converted_to_the_declared_type(name):
    method = get_method(name)
    defaults = method.default_config()
    given = {f.name: float(v) if isinstance(v := getattr(defaults, f.name), int) and not isinstance(v, bool) else v
             for f in dataclasses.fields(defaults)}
    assert method.make_config(**given) == defaults
    assert all(type(getattr(method.make_config(**given), k)) is type(getattr(defaults, k)) for k in given)


@pytest.mark.parametrize("name, field", [(name, field) for name, field, kind in typed_fields_of_every_config() if kind is float])
def test_configs_built_directly_refuse_nan(name, field):
    with pytest.raises(ValueError, match="finite"):
        get_method(name).config_type(**{field: float("nan")})


def test_unknown_method_names_are_refused():
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        parse_methods("prune,magic")


def test_prune_and_distill_shrink_macs_and_params(tiny_model, context, digits):
    base = measure(tiny_model, digits, "val", latency=False)
    for name in ("prune", "distill"):
        out = measure(get_method(name).apply(tiny_model, get_method(name).default_config(), context), digits, "val", latency=False)
        assert out.macs < 0.5 * base.macs and out.params < 0.5 * base.params


def test_four_bit_quantisation_cuts_bitops_four_times_against_eight_bit(tiny_model, context, digits):
    quantize = get_method("quantize")
    q8 = measure(quantize.apply(tiny_model, quantize.make_config(weight_bits=8, act_bits=8), context), digits, "val", latency=False)
    q4 = measure(quantize.apply(tiny_model, quantize.make_config(weight_bits=4, act_bits=4), context), digits, "val", latency=False)
    base = measure(tiny_model, digits, "val", latency=False)
    assert q8.bitops == pytest.approx(base.bitops / 16)
    assert q4.bitops == pytest.approx(q8.bitops / 4)
    assert q4.size_bytes < q8.size_bytes < base.size_bytes / 3


def test_sparsify_keeps_macs_but_stores_less_and_fine_tuning_keeps_zeros(tiny_model, context, digits):
    sparse = get_method("sparsify").apply(tiny_model, get_method("sparsify").make_config(sparsity=0.8), context)
    base, out = measure(tiny_model, digits, "val", latency=False), measure(sparse, digits, "val", latency=False)
    assert out.macs == base.macs and out.size_bytes < 0.5 * base.size_bytes
    marked = [layer for _, layer in compute_layers(sparse) if sparsity_of(layer) is not None]
    assert len(marked) == len(compute_layers(sparse)) - 1  # the classifier stays dense
    for layer in marked:  # zeroed to the mark, and kept zero by fine-tuning
        assert int((layer.weight == 0).sum()) >= round(0.8 * layer.weight.numel())


def test_int8_holds_real_int8_weights_and_blocks_later_training(tiny_model, context, digits):
    int8 = get_method("int8").apply(tiny_model, get_method("int8").default_config(), context)
    assert any(b.dtype == torch.int8 for b in int8.buffers())
    base, out = measure(tiny_model, digits, "val", latency=False), measure(int8, digits, "val", latency=False)
    assert out.bitops == pytest.approx(base.bitops / 16, rel=0.02)
    assert abs(out.accuracy - base.accuracy) < 3
    with pytest.raises(Incompatible, match="before int8"):
        get_method("prune").apply(int8, get_method("prune").default_config(), context)


def test_int8_converts_residual_blocks_whose_relu_is_called_twice(context, digits):
    # torchvision's BasicBlock calls one ReLU module twice; torchao's quantiser refused such blocks
    resnet = create_model("resnet_mini").eval()
    int8 = get_method("int8").apply(resnet, get_method("int8").default_config(), context)
    assert any(b.dtype == torch.int8 for b in int8.buffers())
    x = digits.val.tensors[0][:64]
    assert (int8(x).argmax(1) == resnet(x).argmax(1)).float().mean() >= 0.9


def test_int8_takes_batchnorms_no_convolution_precedes_as_their_scale_and_shift():
    """Stop 45: DenseNet's pre-activation BatchNorms reached convert_pt2e, which then tried every QAT conv-bn pattern,
    each made by torch.export: int8 took 116 s on a 13k-parameter DenseNet, 4 s on a plain CNN."""
    from ordercomp.layers import int8_weights
    from ordercomp.methods.int8 import _convert

    torch.manual_seed(0)
    part = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    for norm in (part[0], part[3]):  # statistics and affine terms that a wrong fold would show
        for tensor in (norm.weight, norm.bias, norm.running_mean):
            tensor.data = torch.randn_like(tensor)
        norm.running_var.data = torch.rand_like(norm.running_var) + 0.5
    samples = [torch.randn(16, 4, 8, 8) for _ in range(4)]
    converted = _convert(part, samples, None)
    assert not [node for node in converted.graph.nodes if node.op == "call_function" and "batch_norm" in str(node.target)]
    assert int8_weights(converted)
    with torch.no_grad():
        expected, got = part(samples[0]), converted(samples[0])
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()


def test_early_exit_cost_is_an_expectation_over_the_exits(tiny_model, context, digits):
    exits = get_method("early_exit").apply(tiny_model, get_method("early_exit").make_config(threshold=0.6), context)
    out, base = measure(exits, digits, "val", latency=False), measure(tiny_model, digits, "val", latency=False)
    assert sum(out.exit_fractions) == pytest.approx(1.0)
    assert out.exit_fractions[-1] < 1.0
    assert out.macs < base.macs


def test_later_steps_keep_what_earlier_steps_did(tiny_model, context):
    quantize, distill, prune = (get_method(n) for n in ("quantize", "distill", "prune"))
    q4 = quantize.apply(tiny_model, quantize.make_config(weight_bits=4, act_bits=4), context)
    student = distill.apply(q4, distill.default_config(), context)
    assert {bits_of(layer) for _, layer in compute_layers(student)} == {(4, 4)}
    q_again = quantize.apply(q4, quantize.make_config(weight_bits=8, act_bits=8), context)
    assert {bits_of(layer) for _, layer in compute_layers(q_again)} == {(4, 4)}
    exits = get_method("early_exit").apply(tiny_model, get_method("early_exit").default_config(), context)
    pruned = prune.apply(exits, prune.default_config(), context)
    assert isinstance(pruned, EarlyExitNet)
    assert pruned.exits[0][2].in_features < exits.exits[0][2].in_features


def test_lowrank_factors_inherit_sparsity(tiny_model, context):
    sparse = get_method("sparsify").apply(tiny_model, get_method("sparsify").make_config(sparsity=0.6), context)
    factored = get_method("lowrank").apply(sparse, get_method("lowrank").default_config(), context)
    factors = [layer for _, layer in compute_layers(factored) if sparsity_of(layer) is not None]
    assert len(factors) > len(compute_layers(tiny_model))
    # every factor re-sparsified to the mark it inherited (0.6), and fine-tuning kept those zeros
    assert all(sparsity_of(layer) == 0.6 and int((layer.weight == 0).sum()) >= round(0.6 * layer.weight.numel()) for layer in factors)


def test_method_config_types_are_frozen():
    for method in METHODS.values():
        config = method.default_config()
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(config, dataclasses.fields(config)[0].name, None)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_every_method_trains_under_the_gpu_recipe(name, tiny_model, context, digits, monkeypatch, base_accuracy):
    """bf16 autocast and channels_last (what training uses on a CUDA GPU), here on the CPU: each method
    still applies, learns, and hands on contiguous weights that export and safetensors can write."""
    from ordercomp import train

    monkeypatch.setattr(train, "accelerated", lambda device: True)
    method = get_method(name)
    compressed = method.apply(tiny_model, method.default_config(), context)
    assert all(t.is_contiguous() for t in compressed.state_dict().values())
    assert measure(compressed, digits, "val", latency=False).accuracy >= accuracy_floor(name, base_accuracy, digits.num_classes)


def test_distillation_runs_its_frozen_teacher_once_per_training_image(tiny_model, digits):
    """The teacher never changes while its student trains, so three epochs ask it about each training image once;
    the outputs the loss reads are still the teacher's own for the batch at hand."""
    from ordercomp.methods.distill import DistillConfig, TeacherOutputs, kd_loss
    from ordercomp.train import Budget, train

    asked = []

    class CountingTeacher(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = tiny_model

        def forward(self, x):
            asked.append(len(x))
            return self.model(x)

    teacher = CountingTeacher().eval()
    student = create_model("cnn_tiny", digits.num_classes, digits.in_channels)
    train(student, digits, Budget(epochs=3), seed=0, device=torch.device("cpu"),
          loss_fn=kd_loss(teacher, DistillConfig(width=0.5), len(digits.train)))
    assert sum(asked) == len(digits.train)

    remembered = TeacherOutputs(tiny_model.eval(), len(digits.train))
    loader = digits.loader("train", 64, shuffle=True, seed=1)
    for _ in range(2):
        for x, _, rows in loader.with_indices():
            with torch.no_grad():
                assert torch.allclose(remembered(x, rows)[0], tiny_model(x), atol=1e-5)


def test_int8_imports_torchao_without_printing_a_notice_meant_for_torchaos_authors():
    """Stop 44: every run with int8 printed torch's "<enum 'KernelPreference'> is an Enum subclass … register_constant() …
    is deprecated" line among its progress, as torchao registered that enum on import."""
    run = subprocess.run([sys.executable, "-c", "import ordercomp.methods.int8; "
                          "import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "Enum subclass" not in run.stderr, run.stderr


# --- a weight tied between two layers (one parameter, two uses) stays tied, or the step says why not ----------------------

def tied_view(digits, name: str):
    from ordercomp.models.checkpoints import resolve_model
    from ordercomp.models.structure import with_structure
    from testkit import TIED_NET

    model, _ = resolve_model(f"{TIED_NET}:{name}", digits, train_base=lambda untrained, data: untrained)
    return with_structure(model, digits.example_input(2), digits.num_classes)


class TiedLogits(nn.Module):
    """A tied weight whose second layer gives the logits: its outputs cannot narrow, so neither can the first's."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.conv1 = nn.Conv2d(num_classes, num_classes, 3, padding=1)
        self.conv2 = nn.Conv2d(num_classes, num_classes, 3, padding=1)
        self.conv2.weight = self.conv1.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(torch.relu(self.stem(x))))).mean((2, 3))


@pytest.mark.parametrize("model, name, settings, width", [
    ("TiedNet", "prune", {}, 4), ("TiedNet", "distill", {"width": 0.5}, 4), ("TiedInside", "prune", {}, 4),
])
def test_prune_and_distill_narrow_a_tied_weight_alike_in_both_layers_and_keep_it_tied(digits, model, name, settings, width):
    """Stop 44: Torch-Pruning cut each tied layer's copy by the channels of its own groups, so each layer held a weight of
    its own and storage counted both (TiedNet: conv1 and conv2 share one weight)."""
    from ordercomp.metrics import count_params, storage_bytes
    from ordercomp.train import Budget

    view = tied_view(digits, model)
    prefix = "tied." if model == "TiedInside" else ""
    method = get_method(name)
    out = method.apply(view, method.config_type(**settings), Context(digits, Budget(epochs=0.05), seed=0))
    weights = dict(out.named_parameters(remove_duplicate=False))
    assert tied_names(out) == [[f"{prefix}conv1.weight", f"{prefix}conv2.weight"]]
    assert weights[f"{prefix}conv1.weight"].shape == (width, width, 3, 3) and weights["stem.weight"].shape[0] < 8
    assert storage_bytes(out) == 4 * count_params(out) < 4 * sum(p.numel() for p in weights.values())
    assert out(digits.example_input(2)).shape == (2, 10)


@pytest.mark.parametrize("name", ["prune", "distill"])
def test_narrowing_a_network_whose_tied_weight_cannot_narrow_alike_is_incompatible_and_says_why(digits, name):
    from ordercomp.models.structure import with_structure
    from ordercomp.train import Budget

    view = with_structure(TiedLogits().eval(), digits.example_input(2), 10, classifier="conv2")
    method = get_method(name)
    with pytest.raises(Incompatible, match=r"^every channel Torch-Pruning could remove feeds or leaves conv1.weight and "
                                           r"conv2.weight, one weight tied between layers, whose channels cannot narrow alike"):
        method.apply(view, method.config_type(), Context(digits, Budget(epochs=0.05), seed=0))


def test_lowrank_factors_a_tied_weight_once_and_both_layers_share_the_factors(digits):
    """Stop 44: each tied layer got factors of its own (two copies of one weight's factors, both stored)."""
    from ordercomp.metrics import storage_bytes
    from ordercomp.train import Budget

    method = get_method("lowrank")
    out = method.apply(tied_view(digits, "TiedNet"), method.config_type(), Context(digits, Budget(epochs=0.05), seed=0))
    assert tied_names(out) == [["conv1.0.weight", "conv2.0.weight"], ["conv1.1.weight", "conv2.1.weight"]]
    assert out.conv1[1].bias is not out.conv2[1].bias  # each layer keeps its own bias, as it had
    assert storage_bytes(out) == 4 * sum(p.numel() for p in out.parameters())


# --- a channel shuffle (view / permute / reshape in a module of its own) keeps its width ---------------------------------

def test_prune_keeps_the_widths_a_channel_shuffle_regroups_and_narrows_the_branches_inside(digits):
    """Stop 44: Torch-Pruning mapped channel indices through every shuffle both ways, a walk that grows with the chained
    shuffles (kuangliu's ShuffleNetV2 at 32 px ran to the 120 s bound): a shuffle is now a layer of its own to
    Torch-Pruning, and the groups on either side keep their width."""
    from ordercomp.exploration.pipeline import run_step
    from ordercomp.metrics import count_params
    from ordercomp.models.structure import with_structure
    from ordercomp.train import Budget
    from tests.user_models.split_shuffle import ShuffleUnits

    torch.manual_seed(0)
    view = with_structure(ShuffleUnits().eval(), digits.example_input(2), 10)
    pruned, result = run_step(view, ("prune",), {"prune": get_method("prune").config_type()}, Context(digits, Budget(epochs=0.05), seed=0))
    assert result.status == "ok", result.reason
    assert count_params(pruned) < count_params(view)
    assert shuffled_widths(pruned, digits.example_input(2)) == shuffled_widths(view, digits.example_input(2)) == [16, 16, 32, 32]


@torch.no_grad()
def shuffled_widths(model, images) -> list[int]:
    """The channels each channel shuffle of `model` regroups on `images`."""
    from tests.user_models.split_shuffle import ShuffleBlock

    widths = []
    handles = [module.register_forward_hook(lambda module, args, out: widths.append(args[0].shape[1]))
               for module in model.modules() if isinstance(module, ShuffleBlock)]
    model.eval()(images)
    for handle in handles:
        handle.remove()
    return widths


def test_prune_of_a_network_whose_every_channel_passes_a_channel_shuffle_is_incompatible_and_names_it(digits):
    from ordercomp.models.structure import with_structure
    from ordercomp.train import Budget
    from tests.user_models.split_shuffle import SplitShuffleNet

    torch.manual_seed(0)
    view = with_structure(SplitShuffleNet().eval(), digits.example_input(2), 10)
    with pytest.raises(Incompatible, match=r"^every channel Torch-Pruning could remove feeds or leaves stages\.\S+\.shuffle, which "
                                           r"shuffles channels"):
        get_method("prune").apply(view, get_method("prune").config_type(), Context(digits, Budget(epochs=0.05), seed=0))
