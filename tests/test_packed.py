"""The packed artifact: codes round-trip at every width, a packed model predicts like the model it
came from at about the size the metrics report, and a file that is not one is refused in one line, in
memory bounded by its bytes (hostile files from tests/untrusted_data.py)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset
from untrusted_data import BOUND_BYTES, nested_description, packed_file, reused_bitmap_packed, run_bounded

from ordercomp.deploy import packed
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


def linear(shape=(2, 4), bits=32, values=(0, 32), bias=(32, 8), **weight):
    """A float linear layer over BLOB: 2 x 4 weights in bytes 0..32, 2 biases in 32..40."""
    return {"t": "linear", "w": {"shape": list(shape), "bits": bits, "values": list(values), **weight}, "b": list(bias)}


def conv(**settings):
    node = {"t": "conv", "w": {"shape": [2, 1, 1, 1], "bits": 32, "values": [0, 8]}, "b": [8, 8],
            "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1}
    return node | settings


BLOB = bytes(40)


def test_the_hand_written_layers_load(tmp_path):
    """The baseline the hostile descriptions below start from."""
    model = load_packed(packed_file(tmp_path / "m.safetensors", {"t": "seq", "c": [conv(), {"t": "flatten", "start": 1, "end": -1},
                                                                                    {"t": "avgpool", "size": 1}]}, BLOB))
    assert isinstance(model, nn.Sequential) and len(model) == 3


@pytest.mark.parametrize("arch, message", [
    (linear(bits=float("inf")), r"not a readable packed model \(ValueError: the number Infinity is not finite\)"),
    ({"t": "exits", "stem": linear(), "stages": {"t": "list", "c": []}, "head": {"t": "id"}, "exits": {"t": "list", "c": []},
      "threshold": float("nan")}, "the number NaN is not finite"),
    (linear(shape=(10 ** 30, 4)), r"a weight dimension 1000000000000000000000000000000, not a whole number in 1\.\.268435456"),
    (linear(shape=(2.0, 4)), r"a weight dimension 2\.0, not a whole number"),
    (linear(bits=True), r"impossible weight \(\[2, 4\], True bits\)"),
    (nested_description(450), "a description nested over 64 deep"),
    (linear(values=(-8, 8)), "points outside its data"),
    (linear(bias=(28, 8)), "reads the same bytes for two tensors"),
    (linear(bitmap=[0, 1], values=[0, 0], bias=[0, 8]), "reads the same bytes for two tensors"),
    ({"t": "seq", "c": [{"t": "id"}] * 10_001}, "more than 10,000 modules"),
    (conv(stride=[10 ** 6, 1]), r"a stride 1000000, not a whole number in 1\.\.512"),
    (conv(groups=0), r"a group count 0, not a whole number in 1\.\.2"),
    ({"t": "avgpool", "size": 10 ** 9}, r"a pooled size 1000000000, not a whole number in 1\.\.512"),
    (linear() | {"act": [3, 0.0, 1.0]}, r"impossible activation quantiser \[3, 0\.0, 1\.0\]"),
    (None, r"malformed \(a module is a NoneType\)"),
])
def test_a_hostile_description_is_refused_before_anything_is_built(arch, message, tmp_path):
    """Issue 19: Infinity and 1e400 were OverflowErrors, 900 levels a RecursionError, one bitmap behind many
    layers an allocation error; every number is now checked for its type and range before use."""
    with pytest.raises(PackError, match=message) as error:
        load_packed(packed_file(tmp_path / "m.safetensors", arch, BLOB))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("text, message", [
    ('{"version": 1, "arch": ' + json.dumps(linear()).replace('"bits": 32', '"bits": 1e400') + "}", "the number 1e400 is not finite"),
    ('{"version": 1, "arch": ' + "[" * 100_000 + "]" * 100_000 + "}", r"not a readable packed model \(RecursionError"),
    ('{"version": true, "arch": {"t": "id"}}', "has packed format version True; this ordercomp reads version 1"),
    ('{"version": "1", "arch": {"t": "id"}}', "has packed format version '1'"),
    ('{"version": 1}', r"malformed \(a module is a NoneType\)"),
    ("[1]", "its description is not a JSON object"),
    ('{"version": 1, "arch": {"t": "id", "note": "' + "x" * (1 << 20) + '"}}', r"has a [\d,]+-character description; ordercomp writes at most 1,048,576"),
])
def test_a_description_the_writer_never_makes_is_refused_in_one_line(text, message, tmp_path):
    with pytest.raises(PackError, match=message) as error:
        load_packed(packed_file(tmp_path / "m.safetensors", None, BLOB, text=text))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_blob_that_is_not_bytes_is_refused(dtype, tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"blob": torch.zeros(10, dtype=dtype)}, str(path), metadata={METADATA_KEY: json.dumps({"version": 1, "arch": linear()})})
    with pytest.raises(PackError, match="its blob is not one row of bytes"):
        load_packed(path)


def test_the_weights_a_file_may_ask_for_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(packed, "MAX_VALUES", 12)
    two = {"t": "seq", "c": [linear(), linear(values=(40, 32), bias=(72, 8))]}
    with pytest.raises(PackError, match="holds more than 12 weights"):
        load_packed(packed_file(tmp_path / "m.safetensors", two, bytes(80)))


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    root = tmp_path_factory.mktemp("bounded")
    return run_bounded({"reused bitmap": ("packed", [str(reused_bitmap_packed(root / "reused.safetensors"))])}, root)


def test_one_bitmap_named_by_many_layers_is_refused_in_bounded_memory(bounded):
    """Issue 19: a 1 MiB bitmap named by 200 layers reached 6.9 GB, then a RuntimeError."""
    result = bounded["reused bitmap"]
    lines = result["stderr"].splitlines()
    assert result["code"] == 2 and len(lines) == 1 and "reads the same bytes for two tensors" in lines[0], result["stderr"][-2000:]
    assert bounded["peak_growth"] < BOUND_BYTES
