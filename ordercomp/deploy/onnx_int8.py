"""The int8 ONNX artifact: int8 weights and activations (QDQ) that onnxruntime runs with integer kernels.

The chain's deployable float form (BatchNorm folded, quantised weights on their grid, see
ordercomp.deploy.packed) is exported to ONNX and quantised by onnxruntime's static quantisation:
per-channel symmetric weights on a 7-bit grid in int8 storage and uint8 activations whose ranges
are calibrated on training images. Seven bits because CPUs without VNNI (AVX2) add pairs of
uint8 x int8 products in int16, which 2 * 255 * 127 overflows: with 8-bit weights a pruned ResNet
lost 15 points of accuracy there (tests/test_onnx_int8.py); onnxruntime recommends `reduce_range`.
A chain already converted to torchao int8 kernels cannot be re-quantised here (use its .pt2).
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from ..layers import is_int8_converted, plain_layers_
from .packed import PackError, rebuilt

CALIBRATION_BATCH = 32


class CannotBuild(ValueError):
    """This artifact cannot be built for this chain; the message says why and what to use instead."""


def deployable_float(model: nn.Module) -> nn.Module:
    """The model as plain float layers: BatchNorm folded in, quantised weights on their grid, no fake quantisation.
    A model the packed format cannot describe (a traced piece of a user's forward) keeps its own modules, with
    plain layers for quantised ones; onnxruntime folds its BatchNorm when it prepares the file."""
    if is_int8_converted(model):
        raise CannotBuild("the chain already runs torchao int8 kernels, which onnxruntime cannot re-quantise: use the .pt2 artifact")
    try:
        return rebuilt(model, act_quant=False)
    except PackError:
        return plain_layers_(copy.deepcopy(model).cpu().eval())


def _reader(images: torch.Tensor, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(images.split(CALIBRATION_BATCH))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch.contiguous().numpy()}

    return Batches()


def quantize_onnx(float_path: Path, out_path: Path, calibration: torch.Tensor, input_name: str) -> dict:
    """onnxruntime static quantisation of a float ONNX file into QDQ int8."""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:
        raise CannotBuild("onnxruntime is not installed: pip install onnxruntime to build the int8 ONNX artifact") from None
    with tempfile.TemporaryDirectory() as temp:
        prepared = Path(temp) / "prepared.onnx"
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out_path), _reader(calibration, input_name), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    return {"quantizer": "onnxruntime quantize_static (QDQ, per-channel 7-bit weights in int8, uint8 activations)",
            "calibration_images": len(calibration)}
