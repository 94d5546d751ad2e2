"""The library's training loop: a base it trains (a zoo architecture, or a user's class given without weights) and
every fine-tuning step are ready for eval mode, their BatchNorm statistics those of their weights; a cached base
loads again; a forward that gives no logits in training says so in one line."""
import pytest
import torch
from torch import nn

from ordercomp.exploration import explorer
from ordercomp.exploration.cache import StepCache
from ordercomp.data.datasets import load_data
from ordercomp.data.preprocessing import repeat_channels
from ordercomp.exploration.explorer import _train_base
from ordercomp.metrics import accuracy_and_exits
from ordercomp.methods.early_exit import EarlyExitNet
from ordercomp.train import Budget, settle_batchnorm, train


def slow_statistics_net() -> nn.Module:
    """A small CNN whose BatchNorms keep their running statistics where they started: the limit of torchvision's
    MobileNetV3, whose BatchNorms keep 0.99 of them per step (momentum 0.01)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16, momentum=0.0), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32, momentum=0.0), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def eval_and_batch_accuracy(model: nn.Module, data) -> tuple[float, float]:
    """Validation accuracy in eval mode (running statistics), and of the same weights with the split's own statistics."""
    evaluated = accuracy_and_exits(model, data, "val", torch.device("cpu"))[0]
    images, labels = data.val.tensors
    with torch.no_grad():
        return evaluated, 100 * (model.train()(images).argmax(1) == labels).float().mean().item()


def test_a_base_trained_here_keeps_its_accuracy_in_eval_mode(tmp_path):
    """MobileNetV3-Small, trained by the library for the architecture benchmark, scored 6.1 % in eval mode against
    96.9 % with batch statistics: 340 steps at momentum 0.01 leave its running statistics far from its weights'."""
    data = load_data("digits")
    model = _train_base(slow_statistics_net(), data, torch.device("cpu"), StepCache(tmp_path), lambda event: None)
    evaluated, with_batch_statistics = eval_and_batch_accuracy(model, data)
    assert evaluated > 90 and evaluated >= with_batch_statistics - 2, (evaluated, with_batch_statistics)


def test_a_fine_tuning_step_leaves_statistics_that_belong_to_its_weights():
    """Every method fine-tunes through `train`: a MobileNetV3 step after one epoch scored far below its base
    (cells of -86 to -89 points in the architecture benchmark) while its BatchNorms still held the base's statistics."""
    data = load_data("digits")
    model = train(slow_statistics_net(), data, Budget(epochs=1, lr=1e-2), seed=0, device=torch.device("cpu"))
    evaluated, with_batch_statistics = eval_and_batch_accuracy(model, data)
    assert evaluated > 40 and evaluated >= with_batch_statistics - 2, (evaluated, with_batch_statistics)


def ordinary_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_only_bases_the_recipe_changes_are_trained_again(tmp_path, monkeypatch):
    """Recomputing slow BatchNorms leaves a base at PyTorch's default momentum as it was, so its cached weights stay
    valid (the architecture benchmark's ResNet, RegNet and EfficientNet bases took hours to train); a base with slow
    BatchNorms, trained before the recipe, is trained again."""
    monkeypatch.setattr(explorer, "BASE_BUDGET", Budget(epochs=0.05))
    data, cache = load_data("digits"), StepCache(tmp_path)
    saved = lambda: sorted(path.name for path in tmp_path.glob("base-*"))
    for net in (ordinary_net, slow_statistics_net):
        _train_base(net(), data, torch.device("cpu"), cache, lambda event: None)
    before = saved()
    monkeypatch.setattr(explorer, "BASE_RECIPE", "another recipe")
    _train_base(ordinary_net(), data, torch.device("cpu"), cache, lambda event: None)
    assert saved() == before
    _train_base(slow_statistics_net(), data, torch.device("cpu"), cache, lambda event: None)
    assert len(saved()) == len(before) + 1


def test_an_early_exit_model_settles_every_stage_on_every_image():
    """Settling ran the model in eval mode, where an early-exit model sends only the unconfident images on: its later
    stages saw fewer images or none (MobileNetV3's early_exit step then failed on a batch of one at a 1x1 map:
    "Expected more than 1 value per channel when training")."""
    data = load_data("digits")
    torch.manual_seed(0)
    stage = lambda width_in, width: nn.Sequential(nn.Conv2d(width_in, width, 3, stride=2, padding=1),
                                                  nn.BatchNorm2d(width, momentum=0.01), nn.ReLU())
    exit_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    model = EarlyExitNet(nn.Identity(), nn.ModuleList([stage(1, 8), stage(8, 16)]),
                         nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)), [exit_head], threshold=0.0)
    settle_batchnorm(model, data, torch.device("cpu"))  # threshold 0: in eval mode every image leaves at the first exit
    last = model.stages[1][1]
    images = data.train.tensors[0]
    with torch.no_grad():
        inputs = model.stages[1][0](model.stages[0](images))
    assert torch.allclose(last.running_mean, inputs.mean((0, 2, 3)), atol=0.01)  # (batch means of batch statistics)


def test_a_cached_base_of_a_class_that_checks_its_version_loads_again(tmp_path, monkeypatch):
    """The cache gives back tensors without module versions, which torchvision's MNASNet refuses ("version should be
    set to 1 or 2 instead of None"): its base trained once could not be read back."""
    import torchvision

    monkeypatch.setattr(explorer, "BASE_BUDGET", Budget(epochs=0.02))
    data, cache = repeat_channels(load_data("digits", input_size=32), 3), StepCache(tmp_path)
    new = lambda: torch.manual_seed(0) and torchvision.models.mnasnet0_5(num_classes=10)  # the same initial weights: one key
    trained = _train_base(new(), data, torch.device("cpu"), cache, lambda event: None)
    again = _train_base(new(), data, torch.device("cpu"), cache, lambda event: None)
    assert len(list(tmp_path.glob("base-*"))) == 1
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))


def test_a_forward_with_auxiliary_outputs_in_training_is_one_clear_line():
    """torchvision's GoogLeNet with its default auxiliary classifiers returns GoogLeNetOutputs in training mode; a
    fine-tuning step failed with the loss's own TypeError ("cross_entropy_loss(): argument 'input' (position 1) must be
    Tensor, not GoogLeNetOutputs"), which says nothing of what to change."""
    import torchvision

    data = repeat_channels(load_data("digits", input_size=32), 3)
    with pytest.raises(ValueError, match=r"^the model's forward gives GoogLeNetOutputs in training mode, not a tensor of "
                                        r"logits: build it without auxiliary outputs .*aux_logits=False"):
        train(torchvision.models.googlenet(num_classes=10, init_weights=False), data, Budget(epochs=0.01), seed=0, device=torch.device("cpu"))


def test_a_base_with_tied_weights_is_cached_and_loads_again(tmp_path, monkeypatch):
    """A user's class whose two layers share one weight trained, then failed with safetensors' "Some tensors share
    memory" traceback as its base was cached: `ordercomp explore` and `measure` ended there."""
    from tests.user_models.tied_net import TiedNet

    monkeypatch.setattr(explorer, "BASE_BUDGET", Budget(epochs=0.05))
    data, cache = load_data("digits"), StepCache(tmp_path)
    new = lambda: torch.manual_seed(0) and TiedNet()
    trained = _train_base(new(), data, torch.device("cpu"), cache, lambda event: None)
    again = _train_base(new(), data, torch.device("cpu"), cache, lambda event: None)
    assert len(list(tmp_path.glob("base-*"))) == 1
    assert again.conv2.weight is again.conv1.weight
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), again.state_dict().values()))
