"""A user's network whose weights are reparametrized (weight_norm, spectral_norm; torch's parametrizations and its
older hooks) is folded into plain weights when it is loaded, so every method reads and replaces weights it can change."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ordercomp.exploration.pipeline import OK, make_configs, run_step
from ordercomp.methods.base import Context
from ordercomp.models.checkpoints import describe_source, resolve_model
from ordercomp.models.factories import load_factory
from ordercomp.models.plain_weights import fold_reparametrizations_
from ordercomp.models.weights import CheckpointError
from ordercomp.models.structure import with_structure
from ordercomp.train import Budget
from testkit import NORM_NET, fewer


def trained_once(model, data):
    """What training the base leaves behind: a forward with gradients (the older hooks' weight is then no leaf)."""
    model.train()
    model(data.example_input(4)).sum().backward()
    return model


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(layer for layer in model.modules() if isinstance(layer, nn.Conv2d))


def loaded(data, name: str, width: int = 8):
    model, source = resolve_model(f"{NORM_NET}:{name}", data, model_args={"width": width}, train_base=trained_once)
    return with_structure(model, data.example_input(2), data.num_classes), source


@pytest.mark.parametrize("name", ["NormNet", "HookNormNet"])
def test_a_reparametrized_network_loads_as_plain_weights_computing_what_it_computed(digits, name):
    """Stop 45: the older hooks' network ended the exploration in deepcopy's traceback ("Only Tensors created explicitly
    by the user (graph leaves) support the deepcopy protocol"), and the parametrized one kept its parametrizations."""
    torch.manual_seed(0)
    original = trained_once(load_factory(f"{NORM_NET}:{name}")(), digits).eval()
    model, source = loaded(digits, name)
    images = digits.example_input(8)
    with torch.no_grad():
        assert torch.allclose(model(images), original(images), atol=1e-5)
    assert not any(hasattr(m, "parametrizations") or m._forward_pre_hooks for m in model.modules())
    assert all(isinstance(layer.weight, nn.Parameter) for layer in model.modules() if isinstance(layer, (nn.Conv2d, nn.Linear)))
    assert "folded weight_norm of conv1.weight" in describe_source(source)


def test_an_instance_with_the_older_hooks_after_training_is_taken_and_left_as_it_was(digits):
    held = trained_once(load_factory(f"{NORM_NET}:HookNormNet")(), digits)
    model, source = resolve_model(held, digits)
    assert "weight_g" not in dict(model.conv1.named_parameters()) and "weight_g" in dict(held.conv1.named_parameters())
    assert "spectral_norm of conv3.weight" in describe_source(source)


@pytest.mark.parametrize("name", ["NormNet", "HookNormNet"])
def test_weights_saved_after_removing_the_reparametrizations_load_into_the_class_that_applies_them(digits, tmp_path, name):
    """Stop 45: a state dict saved for inference after `remove_weight_norm` / `remove_parametrizations` (plain `weight`
    keys) was refused: "4 missing keys (... conv1.parametrizations.weight.original0 ...), 4 unexpected (... conv1.weight)"."""
    torch.manual_seed(1)
    exported = trained_once(load_factory(f"{NORM_NET}:{name}")(), digits).eval()
    fold_reparametrizations_(exported)
    torch.save(exported.state_dict(), tmp_path / "inference.pt")
    model, source = resolve_model(f"{NORM_NET}:{name}", digits, weights=str(tmp_path / "inference.pt"))
    images = digits.example_input(8)
    with torch.no_grad():
        assert torch.allclose(model(images), exported(images), atol=1e-5)
    line = describe_source(source)
    assert "the model's folded before loading" in line and "weight_norm of conv2.weight" in line


def test_plain_weights_saved_for_other_classes_say_so_once_folded(digits, tmp_path):
    exported = load_factory(f"{NORM_NET}:NormNet")(num_classes=5)
    fold_reparametrizations_(exported)
    torch.save(exported.state_dict(), tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match="its fc gives 5 outputs in the file and 10 in the model"):
        resolve_model(f"{NORM_NET}:NormNet", digits, weights=str(tmp_path / "five.pt"))


def test_weights_fitting_neither_the_class_nor_its_folded_layers_keep_their_own_line(digits, tmp_path):
    torch.save({"conv1.weight": torch.zeros(8, 1, 3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing keys .*original0"):
        resolve_model(f"{NORM_NET}:NormNet", digits, weights=str(tmp_path / "other.pt"))


@pytest.mark.parametrize("method", ["lowrank", "prune", "distill"])
def test_methods_that_replace_weights_apply_to_a_reparametrized_network(digits, method):
    """Stop 45: on NormNet prune and distill were incompatible ("attribute 'weight' already exists"), lowrank failed
    (a shape error); on HookNormNet prune left the weight_norm layers at their width."""
    data = fewer(digits)
    model, _ = loaded(data, "NormNet", width=16)  # wide enough that lowrank factors the first convolutions
    context = Context(data, Budget(epochs=0.05), seed=0, device=torch.device("cpu"))
    compressed, result = run_step(model, (method,), make_configs([method]), context)
    assert result.status == OK, result.reason
    if method in ("prune", "distill"):
        assert first_conv(compressed).out_channels < first_conv(model).out_channels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_an_instance_in_half_precision_is_taken_in_float32_and_left_as_it_was(digits, dtype):
    """Stop 45: refused as not running on the data, "check that it fits the data's channels and size"."""
    from tests.user_models.my_net import MyNet

    held = MyNet().to(dtype).eval()
    model, source = resolve_model(held, digits)
    assert {p.dtype for p in model.parameters()} == {torch.float32} and {p.dtype for p in held.parameters()} == {dtype}
    images = digits.example_input(8)
    with torch.no_grad():
        assert torch.allclose(model(images), held.float()(images))
    assert describe_source(source).endswith(f"its {str(dtype).removeprefix('torch.')} weights made float32, as the methods train and measure")


@pytest.mark.parametrize("wrap, said", [(torch.compile, "torch.compile"), (nn.DataParallel, "DataParallel"),
                                        (lambda m: torch.compile(nn.DataParallel(m)), "torch.compile and DataParallel")])
def test_a_compiled_or_data_parallel_instance_is_taken_as_the_module_it_wraps(digits, wrap, said):
    """Stop 45: torch.compile's OptimizedModule was taken as the network: no forward of its own to trace, so every method
    needing the classifier or the stages was incompatible ("Module [OptimizedModule] is missing the required forward")."""
    from ordercomp.models.structure import structure_of
    from tests.user_models.my_net import MyNet

    model, source = resolve_model(wrap(MyNet().eval()), digits)
    assert type(model) is MyNet and source["class"] == "tests.user_models.my_net.MyNet"
    assert describe_source(source).endswith(f"; taken out of {said}")
    assert structure_of(with_structure(model, digits.example_input(2), 10)).classifier == "fc"
