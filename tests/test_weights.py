"""Weights as training frameworks save them: nested entries, name prefixes and Python objects beside the
weights are recognised and said so; nothing in a file runs; names that do not fit say which and why."""
from __future__ import annotations

import argparse
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from ordercomp.models.checkpoints import CheckpointError, resolve_model
from ordercomp.models.weights import fit_weights, read_weights
from testkit import MY_NET, TIED_NET


class Payload:
    """Unpickling this would write the marker file (shutil is not one of the modules torch blocks outright)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (shutil.copyfile, (__file__, str(self.marker)))


def prefixed(state: dict, prefix: str) -> dict:
    return {prefix + name: tensor for name, tensor in state.items()}


@pytest.fixture()
def state(tiny_model):
    return tiny_model.state_dict()


LAYOUTS = {
    "lightning": (lambda s, m: {"epoch": 3, "global_step": 50, "state_dict": prefixed(s, "model."), "optimizer_states": [],
                                "hyper_parameters": argparse.Namespace(lr=0.1)},
                  ["read its 'state_dict' entry (left out: epoch, global_step, optimizer_states, hyper_parameters)",
                   "left out Python objects beside the weights (argparse.Namespace), read without running them",
                   "stripped the prefix 'model.'"]),
    "torchvision references": (lambda s, m: {"model": s, "optimizer": {"state": {}}, "epoch": 9, "args": argparse.Namespace(lr=0.1)},
                               ["read its 'model' entry (left out: optimizer, epoch, args)",
                                "left out Python objects beside the weights (argparse.Namespace), read without running them"]),
    "timm": (lambda s, m: {"epoch": 9, "arch": "cnn_tiny", "state_dict": s, "state_dict_ema": s, "args": Payload(m)},
             ["read the training weights, its 'state_dict' entry (left out: epoch, arch, state_dict_ema, args)",
              "the EMA weights in 'state_dict_ema' were not read: --ema (ema=True) reads them",
              "left out Python objects beside the weights (shutil.copyfile), read without running them"]),
    "DataParallel": (lambda s, m: prefixed(s, "module."), ["stripped the prefix 'module.'"]),
    "torch.compile inside DataParallel": (lambda s, m: prefixed(s, "module._orig_mod."), ["stripped the prefix 'module._orig_mod.'"]),
    "a teacher beside the student": (lambda s, m: {"state_dict": prefixed(s, "student.") | prefixed(s, "teacher.")},
                                     ["read its 'state_dict' entry", "stripped the prefix 'student.'",
                                      "left out {count} tensor(s) outside 'student.'"]),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_framework_checkpoints_load_and_say_what_was_recognised(tmp_path, digits, tiny_model, state, layout):
    """Issue 14: {"state_dict": ...} with prefixes, {"model": ...} and module. prefixes were refused or mismatched."""
    make, notes = LAYOUTS[layout]
    marker = tmp_path / "marker"
    torch.save(make(state, marker), tmp_path / "w.ckpt")
    model, source = resolve_model(f"{tmp_path / 'w.ckpt'}", digits, architecture="cnn_tiny")
    x = digits.example_input(4)
    assert torch.equal(model(x), tiny_model.eval()(x))
    assert not marker.exists()
    found = fit_weights(model, read_weights(tmp_path / "w.ckpt"), "w.ckpt", "cnn_tiny", "-").notes
    assert found == [note.format(count=len(state)) for note in notes]


def test_safetensors_with_a_prefix_load(tmp_path, digits, tiny_model, state):
    save_file(prefixed(state, "module."), str(tmp_path / "w.safetensors"))
    model, _ = resolve_model("cnn_tiny", digits, weights=str(tmp_path / "w.safetensors"))
    assert torch.equal(model(digits.example_input(2)), tiny_model.eval()(digits.example_input(2)))


def test_objects_among_the_weights_are_refused_and_never_run(tmp_path, digits, state):
    marker = tmp_path / "marker"
    torch.save({"state_dict": {**state, "stem.0.weight": Payload(marker)}}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="holds more than tensors"):
        resolve_model(str(tmp_path / "w.pt"), digits, architecture="cnn_tiny")
    torch.save({"weight": Payload(marker), "args": Payload(marker)}, tmp_path / "flat.pt")
    with pytest.raises(CheckpointError, match="holds more than tensors"):
        resolve_model(str(tmp_path / "flat.pt"), digits, architecture="cnn_tiny")
    assert not marker.exists()


def test_a_checkpoint_without_weights_names_its_entries(tmp_path, digits):
    torch.save({"epoch": 3, "optimizer": {"state": {}}}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"holds no state dict .* \(its entries: epoch, optimizer\)"):
        resolve_model(str(tmp_path / "w.pt"), digits, architecture="cnn_tiny")


def test_a_classifier_saved_for_other_classes_says_to_fine_tune_it_on_the_data_s_classes(tmp_path, digits):
    """Stop 45: the line asked to build the class as the file was saved (--model-args '{"num_classes": N}'), and
    built for the file's 1000 classes the model was refused for not giving one logit per class of the data."""
    from tests.user_models.my_net import MyNet

    torch.save(MyNet(num_classes=1000).state_dict(), tmp_path / "imagenet.pt")
    for args in (None, {"num_classes": 1000}):
        with pytest.raises(CheckpointError) as error:
            resolve_model(f"{MY_NET}:MyNet", digits, model_args=args, weights=str(tmp_path / "imagenet.pt"))
        assert "num_classes\": N" not in str(error.value)
    assert str(error.value).endswith("gives (3, 1000) for 3 images, not one logit per class (10): its weights are for 1000 "
                                     "classes: fine-tune it on the data's classes first, or give data of 1000 classes")
    with pytest.raises(CheckpointError, match=r"imagenet.pt does not fit .*: its fc gives 1000 outputs in the file and 10 in "
                                              r"the model, one per class of the data: .* fine-tune it on them first \(fc with 10 "
                                              r"outputs\), or give data of 1000 classes$"):
        resolve_model(f"{MY_NET}:MyNet", digits, weights=str(tmp_path / "imagenet.pt"))


def test_names_that_do_not_fit_point_to_the_class_and_its_arguments(tmp_path, digits):
    from tests.user_models.my_net import MyNet

    torch.save(MyNet(width=8).state_dict(), tmp_path / "narrow.pt")
    with pytest.raises(CheckpointError) as error:
        resolve_model(f"{MY_NET}:MyNet", digits, weights=str(tmp_path / "narrow.pt"))
    assert "stem.weight has shape (8, 1, 3, 3) in the file, the model needs (16, 1, 3, 3)" in str(error.value)
    assert "the same class and arguments (e.g. --model-args" in str(error.value)
    torch.save(MyNet(num_classes=7).state_dict(), tmp_path / "seven.pt")
    with pytest.raises(CheckpointError, match=r"missing keys .* unexpected .*: check the number of classes and channels; "
                                              r"the zoo's cnn_tiny is ordercomp's own class"):
        resolve_model("cnn_tiny", digits, weights=str(tmp_path / "seven.pt"))
    assert os.path.exists(tmp_path / "seven.pt")


def deflated(path, checkpoint):
    """`checkpoint` saved by torch, then its zip members written again deflated (torch.load inflates them)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return path


def test_a_checkpoint_of_deflated_members_is_refused_before_torch_inflates_them(tmp_path):
    # 2 MB of deflated zeros would make a 2 GB tensor: refused whatever the size, as torch never writes them
    path = deflated(tmp_path / "bomb.pt", {"fc.weight": torch.zeros(100_000)})
    assert path.stat().st_size < 10_000
    with pytest.raises(CheckpointError, match="^bomb.pt holds a compressed or encrypted member 'archive/.*re-save it"):
        read_weights(path)


def test_a_pickle_of_more_operations_than_a_state_dict_takes_is_refused_before_it_is_built(tmp_path, monkeypatch):
    # each '}' builds an empty dict, ~70 bytes of memory a byte of file; the limit is lowered to keep the test fast
    import zipfile

    import ordercomp.pickles

    monkeypatch.setattr(ordercomp.pickles, "MAX_OPCODES", 1000)
    path = tmp_path / "dicts.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02" + b"}" * 2000 + b".")
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02" + b"}" * 2000 + b".")
    for file in (path, legacy):
        with pytest.raises(CheckpointError, match=f"^{file.name} is a pickle of more than 1,000 pickle operations"):
            read_weights(file)
    torch.save({"fc.weight": torch.zeros(3)}, tmp_path / "plain.pt")
    assert list(read_weights(tmp_path / "plain.pt").tensors) == ["fc.weight"]


def lines_run_in(module_file: str, call) -> int:
    """How many lines of `module_file` (its generator expressions included) `call()` executes: a measure of its
    work that a busy machine does not change."""
    import sys

    count = 0

    def trace(frame, event, arg):
        nonlocal count
        if frame.f_code.co_filename != module_file:
            return None
        count += event == "line"
        return trace

    previous = sys.gettrace()
    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(previous)
    return count


def test_the_prefix_of_many_names_is_found_in_work_linear_in_their_number(tiny_model):
    # a 6.5 MB safetensors file of 100,000 empty tensors named p0.w, p1.w, ... made each name a candidate prefix that was
    # compared with every name: over two minutes of CPU in --weights and in the dashboard's check of an upload
    import ordercomp.models.weights as weights

    expected = tiny_model.state_dict()
    empty = torch.zeros(0)
    for count in (500, 2000):
        names = {f"p{i}.w": empty for i in range(count)} | {f"model.{name}": tensor for name, tensor in expected.items()}
        lines = lines_run_in(weights.__file__, lambda: weights.within_prefix(names, expected))
        assert lines < 20 * len(names), f"{lines:,} lines run for {len(names):,} names"
    assert weights.within_prefix(names, expected)[0] == "model."


def test_a_safetensors_file_of_more_tensors_than_a_model_holds_is_refused_before_they_are_built(tmp_path, monkeypatch):
    # 1M empty tensors in a 64 MB header took 1.2 GB to load; the limit is lowered to keep the test fast
    import ordercomp.models.weights as weights

    monkeypatch.setattr(weights, "MAX_TENSORS", 100)
    save_file({f"w{i}": torch.zeros(0) for i in range(150)}, str(tmp_path / "many.safetensors"))
    with pytest.raises(CheckpointError, match="^many.safetensors declares more than 100 tensors.*nothing was read"):
        read_weights(tmp_path / "many.safetensors")
    save_file({f"w{i}": torch.zeros(2) for i in range(100)}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    assert len(read_weights(tmp_path / "model.safetensors").tensors) == 100


def test_tensors_without_values_or_of_another_layout_are_one_line(tmp_path, digits, state):
    # a state dict saved from a model on torch's meta device fits every name and shape: the dashboard's check accepted it,
    # and loading it stopped with a multi-line RuntimeError (one 'Cannot copy out of meta tensor' per parameter)
    torch.save({name: torch.empty(tensor.shape, dtype=tensor.dtype, device="meta") for name, tensor in state.items()}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"^meta.pt holds \S+ without its values \(a tensor on torch's meta device\)"):
        read_weights(tmp_path / "meta.pt")
    sparse = dict(state) | {name: state[name].to_sparse() for name in list(state)[:1]}
    torch.save(sparse, tmp_path / "sparse.pt")
    with pytest.raises(CheckpointError, match=r"^sparse.pt does not load into cnn_tiny .*: While copying the parameter named") as error:
        resolve_model(str(tmp_path / "sparse.pt"), digits, architecture="cnn_tiny")
    assert "\n" not in str(error.value)


def test_a_tied_weight_saved_once_by_safetensors_loads_under_both_names(tmp_path, digits):
    """safetensors' `save_model`, its way to save a model with tied weights, writes a shared tensor under one name; the
    file was refused as "1 missing keys (... conv2.weight)"."""
    from safetensors.torch import save_model
    from tests.user_models.tied_net import TiedNet

    torch.manual_seed(1)
    saved = TiedNet().eval()
    save_model(saved, str(tmp_path / "tied.safetensors"))
    model, source = resolve_model(f"{TIED_NET}:TiedNet", digits, weights=str(tmp_path / "tied.safetensors"))
    x = digits.example_input(4)
    assert torch.equal(model(x), saved(x))
    assert model.conv2.weight is model.conv1.weight
    assert source["weights_notes"] == ["conv2.weight from the weight tied to it (saved once)"]


# --- EMA weights beside the training weights: read on request, said which ---------------------------------------------

def ema_of(state: dict) -> dict:
    """EMA weights that differ from the training weights (halved), so a test tells which were read."""
    return {name: tensor / 2 if tensor.is_floating_point() else tensor for name, tensor in state.items()}


EMA_LAYOUTS = {  # the file as each framework saves it; what the source line says for the training and for the EMA weights
    "timm": (lambda s: {"state_dict": s, "state_dict_ema": ema_of(s), "epoch": 3},
             "read the training weights, its 'state_dict' entry", "read the EMA weights, its 'state_dict_ema' entry"),
    "torchvision references": (lambda s: {"model": s, "model_ema": prefixed(ema_of(s), "module.") | {"n_averaged": torch.tensor(7)}},
                               "read the training weights, its 'model' entry", "read the EMA weights, its 'model_ema' entry"),
    "Lightning WeightAveraging": (lambda s: {"state_dict": prefixed(ema_of(s), "model."), "current_model_state": prefixed(s, "model."),
                                             "averaging_state": {"n_averaged": torch.tensor(7)}},
                                  "read the training weights, its 'current_model_state' entry",
                                  "read the EMA weights, its 'state_dict' entry"),
    "LightningModule holding timm's ModelEmaV2": (lambda s: {"state_dict": prefixed(s, "model.") | prefixed(ema_of(s), "model_ema.module.")},
                                                  "stripped the prefix 'model.' (the training weights)",
                                                  "stripped the prefix 'model_ema.module.' (the EMA weights)"),
    "an EMA copy named ema beside the model": (lambda s: prefixed(ema_of(s), "ema.") | prefixed(s, "model."),
                                               "stripped the prefix 'model.' (the training weights)",
                                               "stripped the prefix 'ema.' (the EMA weights)"),
}


@pytest.mark.parametrize("layout", EMA_LAYOUTS)
def test_a_checkpoint_with_ema_weights_gives_the_training_weights_or_on_request_the_ema_ones_and_says_which(tmp_path, digits,
                                                                                                        tiny_model, state, layout):
    from ordercomp.models.checkpoints import describe_source

    make, trained_line, ema_line = EMA_LAYOUTS[layout]
    torch.save(make(state), tmp_path / "w.ckpt")
    x = digits.example_input(4)
    plain, plain_source = resolve_model("cnn_tiny", digits, weights=str(tmp_path / "w.ckpt"))
    ema, ema_source = resolve_model("cnn_tiny", digits, weights=str(tmp_path / "w.ckpt"), ema=True)
    assert torch.equal(plain(x), tiny_model.eval()(x))
    assert torch.equal(ema.stem[0].weight, tiny_model.stem[0].weight / 2)
    assert trained_line in describe_source(plain_source) and "EMA weights" in describe_source(plain_source).split(trained_line)[1]
    assert ema_line in describe_source(ema_source) and "\n" not in describe_source(ema_source)
    assert ema_source["ema"] is True and "ema" not in plain_source


def test_ema_weights_from_a_user_class_and_a_checkpoint_given_as_the_model(tmp_path, digits, state):
    from tests.user_models.my_net import MyNet

    torch.manual_seed(0)
    own = MyNet(width=4).state_dict()
    torch.save({"state_dict": own, "state_dict_ema": ema_of(own)}, tmp_path / "mine.pth.tar")
    mine, source = resolve_model(f"{MY_NET}:MyNet", digits, model_args={"width": 4}, weights=str(tmp_path / "mine.pth.tar"), ema=True)
    assert torch.equal(mine.state_dict()["fc.weight"], own["fc.weight"] / 2) and source["ema"] is True
    torch.save({"model": state, "model_ema": ema_of(state)}, tmp_path / "tiny.pth")
    model, _ = resolve_model(str(tmp_path / "tiny.pth"), digits, architecture="cnn_tiny", ema=True)
    assert torch.equal(model.stem[0].weight, state["stem.0.weight"] / 2)


@pytest.mark.parametrize("content, holds", [
    (lambda s: s, "(a state dict of {n} tensors)"),
    (lambda s: {"state_dict": prefixed(s, "model."), "epoch": 3}, "(its entries: state_dict, epoch; its weights under 'model.')"),
])
def test_ema_weights_asked_of_a_checkpoint_without_them_is_one_line_naming_what_it_holds(tmp_path, digits, state, content, holds):
    torch.save(content(state), tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as raised:
        resolve_model("cnn_tiny", digits, weights=str(tmp_path / "w.pt"), ema=True)
    message = str(raised.value)
    assert message.startswith(f"w.pt holds no EMA weights {holds.format(n=len(state))}: read its weights without --ema")
    assert "\n" not in message


@pytest.mark.parametrize("model", ["cnn_tiny", "digits_cnn"])
def test_ema_without_a_weights_file_is_refused_in_one_line(digits, model):
    with pytest.raises(CheckpointError, match=r"^--ema \(ema=True\) reads the EMA weights of a checkpoint, and .* is given none"):
        resolve_model(model, digits, train_base=lambda m, d: m, ema=True)


def test_ema_and_training_weights_never_share_cached_steps(tmp_path, digits, state):
    """The step cache keys a base by its weights: the EMA base and the trained one are two bases."""
    from ordercomp.models.structure import base_fingerprint

    torch.save({"state_dict": state, "state_dict_ema": ema_of(state)}, tmp_path / "w.pth.tar")
    keys = {base_fingerprint(*resolve_model("cnn_tiny", digits, weights=str(tmp_path / "w.pth.tar"), ema=ema)) for ema in (False, True)}
    assert len(keys) == 2
