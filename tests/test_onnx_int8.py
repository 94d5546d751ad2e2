"""The int8 ONNX artifact computes what the float model computes, on the CPU that runs it, and its export
check holds it to that on the whole test split."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ordercomp.deploy.export import INPUT_NAME, INT8_ACCURACY_POINTS, INT8_AGREEMENT, check_int8, check_text, export_compressed, exportable, onnx_file
from ordercomp.methods.base import Context
from ordercomp.methods.registry import get_method
from ordercomp.deploy.onnx_int8 import deployable_float, quantize_onnx
from ordercomp.deploy.runtimes import onnx_session
from ordercomp.train import Budget


def test_int8_sums_do_not_saturate_on_cpus_without_vnni(tmp_path):
    """Activations near the top of their uint8 range times weights at +127: on AVX2 CPUs without VNNI,
    onnxruntime adds pairs of such products in int16 (VPMADDUBSW), and 2 * 255 * 127 overflows it.
    That cost a pruned ResNet 15 points of accuracy on this machine; 7-bit weights cannot overflow."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 8, 3, bias=False), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.0)
    images = 0.6 + 0.4 * torch.rand(64, 16, 6, 6)
    float_path, int8_path = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx_file(model, images[:2], float_path)
    quantize_onnx(float_path, int8_path, images, INPUT_NAME)
    got = onnx_session(int8_path).run(None, {INPUT_NAME: images[:8].numpy()})[0]
    with torch.no_grad():
        expected = model(images[:8]).numpy()
    assert np.abs(got - expected).max() < 0.03 * np.abs(expected).max()


@pytest.fixture(scope="module")
def int8_export(tiny_model, digits, tmp_path_factory):
    """A 4-bit QAT chain with early exits (as the default chain ends) exported as int8 ONNX, and its model."""
    context = Context(digits, Budget(epochs=0.2), seed=0)
    model = get_method("early_exit").apply(get_method("quantize").apply(tiny_model, get_method("quantize").make_config(), context),
                                           get_method("early_exit").make_config(), context)
    out = tmp_path_factory.mktemp("int8") / "export"
    manifest = export_compressed(model, out, formats=("onnx_int8",), chain=["quantize", "early_exit"], configs={}, metrics={},
                                 data=digits, base={"source": "test"}, measure=False)
    return model, out / "model.int8.onnx", manifest["formats"][0]["check"]


def test_the_int8_file_meets_its_tolerance_on_the_whole_test_split_and_records_the_real_figures(int8_export, digits):
    model, path, check = int8_export
    images, labels = digits.test.tensors
    got = onnx_session(path).run(None, {INPUT_NAME: images.numpy()})[0]
    with torch.no_grad():
        expected = exportable(deployable_float(model))(images).numpy()
    accuracy = lambda logits: 100.0 * float((logits.argmax(1) == labels.numpy()).mean())
    assert check["images"] == len(labels) == 359 and check["against"] == "deployable float model"
    assert check["argmax_agreement"] == float((got.argmax(1) == expected.argmax(1)).mean())
    assert (check["accuracy"], check["reference_accuracy"]) == (accuracy(got), accuracy(expected))
    assert check["max_abs_diff"] == pytest.approx(float(np.abs(got - expected).max()))
    assert (check["min_agreement"], check["max_accuracy_points"]) == (INT8_AGREEMENT, INT8_ACCURACY_POINTS) == (0.99, 0.5)
    assert check["argmax_agreement"] >= 0.99 and abs(check["accuracy"] - check["reference_accuracy"]) <= 0.5 and check["passed"]


def test_an_int8_file_that_disagrees_with_its_float_model_fails_its_check(int8_export, digits):
    model, path, _ = int8_export
    reference = exportable(deployable_float(model))
    check = check_int8(path, lambda images: -reference(images), digits)  # the least likely class wins: another model
    assert check["argmax_agreement"] < 0.5 and check["reference_accuracy"] < 20 and not check["passed"]
    assert "FAILED: top-1 agreement" in check_text(check)
