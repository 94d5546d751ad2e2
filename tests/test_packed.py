"""The packed artifact: codes round-trip at every width, a packed model predicts like the model it
came from at about the size the metrics report, and a file that is not one is refused in one line."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from ordercomp.methods.early_exit import EarlyExitNet
from ordercomp.methods.registry import get_method
from ordercomp.metrics import storage_bytes
from ordercomp.deploy.packed import METADATA_KEY, PackError, load_packed, pack_codes, unpack_codes, write_packed


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_codes_round_trip_at_every_width(bits):
    codes = np.random.default_rng(bits).integers(0, 2 ** bits, size=1001).astype(np.uint8)
    packed = pack_codes(codes, bits)
    assert len(packed) == -(-1001 * bits // 8)
    assert np.array_equal(unpack_codes(packed, bits, 1001), codes)


@pytest.fixture(scope="module")
def chained(tiny_model, digits):
    """The tiny model quantised to 4 bits, 60 % sparse and given early exits."""
    from ordercomp.methods.base import Context
    from ordercomp.train import Budget

    few = copy.copy(digits)
    few.train = TensorDataset(*(tensor[:128] for tensor in digits.train.tensors))
    context = Context(few, Budget(epochs=1), seed=0)
    model = tiny_model
    for name, settings in (("quantize", {"weight_bits": 4, "act_bits": 8}), ("sparsify", {"sparsity": 0.6}), ("early_exit", {})):
        method = get_method(name)
        model = method.apply(model, method.make_config(**settings), context)
    return model.eval()


def test_packed_model_predicts_like_the_model_at_the_reported_size(chained, digits, tmp_path):
    path = tmp_path / "model.packed.safetensors"
    written = write_packed(chained, path)
    loaded = load_packed(path)
    assert isinstance(loaded, EarlyExitNet) and loaded.threshold == chained.threshold
    images = digits.test.tensors[0][:64]
    with torch.no_grad():
        expected, got = chained(images), loaded(images)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    assert (got - expected).abs().max() <= 1e-3 * expected.abs().max()
    # weights at 4 bits, sparse as bitmap + codes, BatchNorm folded: the data is the reported storage plus per-channel scales
    assert written["blob_bytes"] <= 1.15 * storage_bytes(chained)
    # the description sits in the safetensors header as an escaped JSON string ('"' becomes '\\"')
    assert path.stat().st_size <= written["blob_bytes"] + 1.3 * written["description_bytes"] + 256


def test_a_module_outside_the_format_is_refused_in_one_line(tmp_path):
    with pytest.raises(PackError, match="cannot describe a GELU"):
        write_packed(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GELU()), tmp_path / "m.safetensors")


def _packed_with(description: dict, path, blob: bytes = b"\0" * 8):
    save_file({"blob": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}, str(path),
              metadata={METADATA_KEY: json.dumps({"version": 1, "arch": description})})
    return path


@pytest.mark.parametrize("description, message", [
    ({"t": "os.system", "c": []}, "unknown module kind 'os.system'"),
    ({"t": "linear", "w": {"shape": [2, 4], "bits": 32, "values": [0, 32]}, "b": [0, 8]}, "points outside its data"),
    ({"t": "linear", "w": {"shape": [2, 4], "bits": 3, "values": [0, 1]}, "b": [0, 8]}, "impossible weight"),
    ({"t": "seq"}, "description is malformed"),
])
def test_a_tampered_description_is_refused(description, message, tmp_path):
    with pytest.raises(PackError, match=message):
        load_packed(_packed_with(description, tmp_path / "m.safetensors"))


def test_files_that_are_not_packed_models_are_refused(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2)}, str(plain))
    with pytest.raises(PackError, match="not an ordercomp packed model"):
        load_packed(plain)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(PackError, match="not a readable packed model"):
        load_packed(garbage)
