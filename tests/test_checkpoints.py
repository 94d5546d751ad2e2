"""Loading user models: state dicts and safetensors load; pickles, corrupt files and mismatches are refused."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ordercomp.models.checkpoints import CheckpointError, input_size_for, list_samples, load_program, load_sample, resolve_model, sample_card
from ordercomp.cli import main
from ordercomp.data.datasets import load_data
from ordercomp.metrics import measure
from ordercomp.models.fitting import data_for
from ordercomp.models.zoo import create_model
from testkit import Payload
from untrusted_files import NOTES


def test_samples_ship_with_cards_and_reach_their_stated_accuracy(digits):
    assert {"digits_cnn", "digits_resnet"} <= set(list_samples())
    for name in list_samples():
        card = sample_card(name)
        model = load_sample(name)
        data = load_data("digits", input_size=input_size_for(name, None))  # each sample at its own image size
        assert data.input_size == card["input_size"]
        data = data_for(model, data, name)  # grey repeated for a sample that takes 3 channels (digits32_vit)
        assert data.in_channels == card["in_channels"]
        accuracy = measure(model, data, "test", latency=False).accuracy
        assert accuracy == pytest.approx(card["metrics"]["test_accuracy"], abs=0.01)
        assert accuracy > 95


def test_state_dict_and_safetensors_load_into_the_named_architecture(tmp_path, digits, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "m.pt")
    save_file(tiny_model.state_dict(), str(tmp_path / "m.safetensors"))
    for name in ("m.pt", "m.safetensors"):
        model, source = resolve_model(str(tmp_path / name), digits, architecture="cnn_tiny")
        assert source["source"] == "checkpoint"
        x = digits.test.tensors[0][:8]
        assert torch.allclose(model(x), tiny_model.eval()(x))


def test_a_pickled_module_is_refused_without_running_it(tmp_path, digits):
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds more than tensors"):
        resolve_model(str(tmp_path / "evil.pt"), digits, architecture="cnn_tiny")
    assert not marker.exists()
    torch.save(create_model("cnn_tiny"), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="state_dict"):
        resolve_model(str(tmp_path / "module.pt"), digits, architecture="cnn_tiny")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pt2"])
def test_corrupt_files_give_one_line_errors(tmp_path, digits, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(CheckpointError) as error:
        resolve_model(str(path), digits, architecture="cnn_tiny")
    assert "\n" not in str(error.value) and path.name in str(error.value)


# text files given as state dicts: torch's weights-only unpickler raises KeyError, IndexError, EOFError on them
TEXTS = {"KeyError": NOTES, "IndexError": b"apple pie\n", "EOFError": b"}"}


@pytest.mark.parametrize("raised, text", TEXTS.items(), ids=TEXTS)
def test_a_text_file_given_as_a_state_dict_is_one_line(tmp_path, digits, raised, text):
    (tmp_path / "notes.pt").write_bytes(text)
    with pytest.raises(CheckpointError) as error:
        resolve_model(str(tmp_path / "notes.pt"), digits, architecture="cnn_tiny")
    assert str(error.value) == (f"notes.pt is not a readable torch checkpoint ({raised}): "
                                "re-save it with torch.save(model.state_dict(), path)")


def test_a_text_file_given_as_a_state_dict_through_the_cli_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.pt").write_bytes(NOTES)
    out = tmp_path / "out"
    assert main(["explore", "--model", str(tmp_path / "notes.pt"), "--arch", "cnn_tiny", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ordercomp: error: notes.pt is not a readable torch checkpoint (KeyError): re-save it with torch.save(model.state_dict(), path)"
    assert not out.exists()


@pytest.mark.parametrize("content", [NOTES, b"", None], ids=["text", "empty", "folder"])
def test_a_model_path_holding_no_weights_says_so_rather_than_asking_for_an_architecture(tmp_path, digits, content):
    path = tmp_path / "model.pt"
    path.mkdir() if content is None else path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        resolve_model(str(path), digits)
    assert "--arch" not in str(error.value) and "\n" not in str(error.value)
    assert ("is a folder" if content is None else "is not a readable torch checkpoint") in str(error.value)


def test_mismatching_keys_and_shapes_name_the_problem(tmp_path, digits, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="missing keys"):
        resolve_model(str(tmp_path / "m.pt"), digits, architecture="resnet_mini")
    torch.save(create_model("cnn_tiny", num_classes=7).state_dict(), tmp_path / "seven.pt")
    with pytest.raises(CheckpointError, match="gives 7 outputs in the file and 10 in the model, one per class of the data"):
        resolve_model(str(tmp_path / "seven.pt"), digits, architecture="cnn_tiny")
    with pytest.raises(CheckpointError, match="--arch"):
        resolve_model(str(tmp_path / "m.pt"), digits)


def test_missing_and_unknown_models_are_explained(digits):
    with pytest.raises(CheckpointError, match="neither a sample"):
        resolve_model("/no/such/model.pt", digits)


def test_exported_programs_load_back(tmp_path, digits, tiny_model):
    x = digits.test.tensors[0][:4]
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(tiny_model.eval(), (x,), dynamic_shapes=({0: batch},)), str(tmp_path / "m.pt2"))
    torch.jit.trace(tiny_model.eval(), x).save(str(tmp_path / "m.ts"))
    for name in ("m.pt2", "m.ts"):
        model, source = resolve_model(str(tmp_path / name), digits, trust_torchscript=True)
        assert source["source"] == "program"
        assert torch.allclose(model(x), tiny_model(x), atol=1e-5)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_program(tmp_path / "absent.pt2")



def test_two_workers_saving_the_same_trained_base_at_once_both_succeed(tmp_path, tiny_model, monkeypatch):
    # both wrote the fixed name base-KEY.tmp and renamed it: the one that renamed second found nothing there
    # (FileNotFoundError, its job failed); here the second save runs whole inside the first one's write
    import safetensors.torch

    from ordercomp.models.checkpoints import read_state_dict, save_state_atomically

    path, write, inside = tmp_path / "base-0123.safetensors", safetensors.torch.save_file, []

    def other_worker_meanwhile(tensors, filename, *args, **kwargs):
        write(tensors, filename, *args, **kwargs)
        if not inside:
            inside.append(filename)
            save_state_atomically(tiny_model, path)

    monkeypatch.setattr(safetensors.torch, "save_file", other_worker_meanwhile)
    save_state_atomically(tiny_model, path)
    assert read_state_dict(path).keys() == tiny_model.state_dict().keys()
    assert [p.name for p in tmp_path.iterdir()] == ["base-0123.safetensors"]  # no temporary file left
