"""The packed artifact: a compressed model stored at the size the metrics report, and its loader.

One safetensors file holds a single uint8 tensor (the blob) and, in its metadata, a JSON
description of the architecture built from a closed list of module kinds. Quantised weights are
stored as integer codes packed at their bit width (two 4-bit or four 2-bit codes per byte) with a
per-channel scale; BatchNorm is folded into the preceding layer's scale and bias, so it costs no
more than the BatchNorm parameters the metrics count; a layer marked sparse is stored as a bitmap
plus its non-zero codes when that is smaller. `load_packed` rebuilds a runnable model from the
description without executing anything from the file, with early exits that stop at run time.

    write_packed(model, "model.packed.safetensors"); model = load_packed("model.packed.safetensors")
"""
from __future__ import annotations

import bisect
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from ..layers import FULL_BITS, QuantConv2d, QuantLinear, bits_of, is_int8_part, is_quantised, sparsity_of
from ..methods.early_exit import EarlyExitNet
from ..models.zoo import StagedNet

METADATA_KEY = "ordercomp.packed"
FORMAT_VERSION = 1
# what a file may ask the loader to build; a ResNet-18 takes a 4 kB description nested 11 deep, 47 modules, 11 M weights
MAX_DESCRIPTION_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_MODULES = 10_000
MAX_VALUES = 1 << 28  # 1 GiB of float32 weights
MAX_SPATIAL = 512     # strides, paddings, pooling sizes: the largest input ordercomp takes


class PackError(ValueError):
    """A model this format cannot describe, or a file that is not a valid packed model."""


class _Blob:
    """Appends byte strings and remembers where each one starts."""

    def __init__(self):
        self.parts, self.size = [], 0

    def add(self, data: bytes) -> list[int]:
        self.parts.append(data)
        self.size += len(data)
        return [self.size - len(data), len(data)]


def pack_codes(codes: np.ndarray, bits: int) -> bytes:
    """Unsigned codes (< 2**bits) packed little-end first, 8 // bits codes per byte."""
    per_byte = 8 // bits
    padded = np.zeros(math.ceil(codes.size / per_byte) * per_byte, dtype=np.uint8)
    padded[: codes.size] = codes.ravel()
    grouped = padded.reshape(-1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)[None, :]
    return np.bitwise_or.reduce(grouped << shifts, axis=1).astype(np.uint8).tobytes()


def unpack_codes(data: bytes, bits: int, count: int) -> np.ndarray:
    per_byte = 8 // bits
    raw = np.frombuffer(data, dtype=np.uint8)
    shifts = (np.arange(per_byte, dtype=np.uint8) * bits)[None, :]
    codes = (raw[:, None] >> shifts) & np.uint8((1 << bits) - 1)
    return codes.ravel()[:count]


def _folded(layer: nn.Module, bn: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-output-channel factor, bias) with the following BatchNorm folded in."""
    out = layer.weight.shape[0]
    bias = layer.bias.detach().clone() if layer.bias is not None else torch.zeros(out)
    if bn is None:
        return torch.ones(out), bias
    factor = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    return factor, bn.bias.detach() + (bias - bn.running_mean) * factor


@torch.no_grad()
def _encode_weight(layer: nn.Module, factor: torch.Tensor, blob: _Blob) -> dict:
    """The weight as packed codes and per-channel scales (quantised) or float32 values."""
    weight, bits = layer.weight.detach().float().cpu(), bits_of(layer)[0]
    entry = {"shape": list(weight.shape), "bits": bits}
    if bits >= FULL_BITS:
        values = weight * factor.view(-1, *([1] * (weight.dim() - 1)))
        codes, nonzero = values.numpy().astype("<f4"), values != 0
    else:
        qmax = 2 ** (bits - 1) - 1
        scale = (weight.flatten(1).abs().amax(dim=1).clamp_min(1e-8) / qmax).view(-1, *([1] * (weight.dim() - 1)))
        q = torch.clamp(torch.round(weight / scale), -qmax, qmax)
        entry["scale"] = blob.add((scale.flatten() * factor).numpy().astype("<f4").tobytes())
        codes, nonzero = (q + qmax).numpy().astype(np.uint8), q != 0
    dense_bits = weight.numel() * bits
    if sparsity_of(layer) is not None and weight.numel() + int(nonzero.sum()) * bits < dense_bits:
        mask = nonzero.numpy().ravel()
        entry["bitmap"] = blob.add(pack_codes(mask.astype(np.uint8), 1))
        codes = codes.ravel()[mask]
    entry["values"] = blob.add(codes.tobytes() if bits >= FULL_BITS else pack_codes(codes.ravel(), _pack_width(bits)))
    return entry


def _pack_width(bits: int) -> int:
    """Codes of 2, 4 or 8 bits pack as they are; other widths round up to the next of those."""
    return next(width for width in (1, 2, 4, 8) if width >= bits)


def _describe_layer(layer: nn.Module, bn: nn.BatchNorm2d | None, blob: _Blob) -> dict:
    factor, bias = _folded(layer, bn)
    node = {"t": "conv" if isinstance(layer, nn.Conv2d) else "linear", "w": _encode_weight(layer, factor, blob),
            "b": blob.add(bias.float().numpy().astype("<f4").tobytes())}
    if isinstance(layer, nn.Conv2d):
        node.update(stride=list(layer.stride), padding=list(layer.padding), dilation=list(layer.dilation), groups=layer.groups)
    act_bits = bits_of(layer)[1]
    if is_quantised(layer) and act_bits < FULL_BITS:
        node["act"] = [act_bits, float(layer.act_low), float(layer.act_high)]
    return node


def describe(module: nn.Module, blob: _Blob) -> dict:
    """The description of a module and its children; weights go into `blob`."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return _describe_layer(module, None, blob)
    if isinstance(module, EarlyExitNet):
        return {"t": "exits", "stem": describe(module.stem, blob), "stages": describe(module.stages, blob),
                "head": describe(module.head, blob), "exits": describe(module.exits, blob), "threshold": float(module.threshold)}
    if isinstance(module, StagedNet):
        return {"t": "staged", "stem": describe(module.stem, blob), "stages": describe(module.stages, blob), "head": describe(module.head, blob)}
    if isinstance(module, BasicBlock):
        return {"t": "block", "conv1": _describe_layer(module.conv1, module.bn1, blob), "conv2": _describe_layer(module.conv2, module.bn2, blob),
                "down": describe(module.downsample, blob) if module.downsample is not None else None}
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        return {"t": "seq" if isinstance(module, nn.Sequential) else "list", "c": _describe_children(list(module), blob)}
    return _describe_leaf(module)


def _describe_children(children: list[nn.Module], blob: _Blob) -> list[dict]:
    """Children in order, each conv/linear layer followed by a BatchNorm absorbing it."""
    nodes, index = [], 0
    while index < len(children):
        child, following = children[index], children[index + 1] if index + 1 < len(children) else None
        if isinstance(child, (nn.Conv2d, nn.Linear)) and isinstance(following, nn.BatchNorm2d):
            nodes += [_describe_layer(child, following, blob), {"t": "id"}]
            index += 2
        else:
            nodes.append(describe(child, blob))
            index += 1
    return nodes


LEAVES = {
    nn.ReLU: ("relu", lambda m: {}), nn.ReLU6: ("relu6", lambda m: {}), nn.Identity: ("id", lambda m: {}),
    nn.Flatten: ("flatten", lambda m: {"start": m.start_dim, "end": m.end_dim}),
    nn.AdaptiveAvgPool2d: ("avgpool", lambda m: {"size": m.output_size}),
    nn.MaxPool2d: ("maxpool", lambda m: {"k": m.kernel_size, "s": m.stride, "p": m.padding}),
    nn.Dropout: ("id", lambda m: {}),
}


def _describe_leaf(module: nn.Module) -> dict:
    kind = LEAVES.get(type(module))
    if isinstance(module, torch.fx.GraphModule) and not is_int8_part(module):
        raise PackError(f"the packed format holds a closed list of layer kinds, not a traced piece of your network's own forward "
                        f"({type(module).__name__}): use the ONNX or pt2 artifact for this model")
    if kind is None:
        what = " (torchao int8 kernels)" if is_int8_part(module) else ""
        raise PackError(f"the packed format cannot describe a {type(module).__name__}{what}: it holds a closed list of CNN "
                        "layer kinds; use the ONNX or pt2 artifact for this chain")
    return {"t": kind[0], **kind[1](module)}


def write_packed(model: nn.Module, path: Path) -> dict:
    """Write `model` as a packed safetensors file; return what it holds."""
    from safetensors.torch import save_file

    blob = _Blob()
    arch = describe(model.cpu().eval(), blob)
    data = torch.frombuffer(bytearray(b"".join(blob.parts) or b"\0"), dtype=torch.uint8)
    text = json.dumps({"version": FORMAT_VERSION, "arch": arch}, separators=(",", ":"))
    save_file({"blob": data}, str(path), metadata={METADATA_KEY: text})
    return {"blob_bytes": blob.size, "description_bytes": len(text)}


def rebuilt(model: nn.Module, *, act_quant: bool = True) -> nn.Module:
    """The model as the packed file would load it (BatchNorm folded, weights on their grid), without a file."""
    blob = _Blob()
    arch = describe(model.cpu().eval(), blob)
    return build(arch, b"".join(blob.parts), act_quant=act_quant).eval()


def load_packed(path, *, act_quant: bool = True) -> nn.Module:
    """The model stored in a packed file, in eval mode; a file that is not one raises PackError.

    Nothing in the file is run, and what is built is bounded by the bytes present: the description
    is at most MAX_DESCRIPTION_BYTES of JSON nested at most MAX_DEPTH deep with finite numbers, every
    number is checked for its type and range before use, and `_Builder` reads each byte of the blob
    for one tensor only, MAX_VALUES weights at most."""
    from safetensors import SafetensorError, safe_open

    name = Path(path).name
    try:
        with safe_open(str(path), framework="pt") as stream:
            text = (stream.metadata() or {}).get(METADATA_KEY)
            if text is None or list(stream.keys()) != ["blob"]:
                raise PackError(f"{name} is not an ordercomp packed model (no {METADATA_KEY} description)")
            data = stream.get_slice("blob")
            if data.get_dtype() != "U8" or len(data.get_shape()) != 1:
                raise PackError(f"{name} is not an ordercomp packed model (its blob is not one row of bytes)")
            blob = stream.get_tensor("blob").numpy().tobytes()
    except (SafetensorError, OSError) as error:
        raise PackError(f"{name} is not a readable packed model ({error})") from None
    description = _description(text, name)
    if type(description.get("version")) is not int or description["version"] != FORMAT_VERSION:
        raise PackError(f"{name} has packed format version {_shown(description.get('version'))}; "
                        f"this ordercomp reads version {FORMAT_VERSION}")
    return build(description.get("arch"), blob, act_quant=act_quant).eval()


def _description(text: str, name: str) -> dict:
    """The JSON description, refused when larger or deeper than ordercomp writes or when a number in
    it is not finite (Infinity, NaN, 1e400)."""
    if len(text) > MAX_DESCRIPTION_BYTES:
        raise PackError(f"{name} has a {len(text):,}-character description; ordercomp writes at most {MAX_DESCRIPTION_BYTES:,}")
    try:  # json.loads recurses once per level: nesting beyond the recursion limit is a RecursionError, caught
        description = json.loads(text, parse_constant=_not_finite, parse_float=_finite)
    except (ValueError, RecursionError) as error:
        raise PackError(f"{name} is not a readable packed model ({type(error).__name__}: {str(error)[:200]})") from None
    if _depth(description) > MAX_DEPTH:
        raise PackError(f"{name} has a description nested over {MAX_DEPTH} deep; ordercomp's nest about a dozen")
    if type(description) is not dict:
        raise PackError(f"{name} is not an ordercomp packed model (its description is not a JSON object)")
    return description


def _depth(value) -> int:
    """How deep JSON lists and objects nest (counted without recursion: the builder recurses once per level)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        deepest = max(deepest, depth)
        children = item.values() if type(item) is dict else item if type(item) is list else ()
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _not_finite(constant: str):
    raise ValueError(f"the number {constant} is not finite")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is not finite")
    return value


def _shown(value) -> str:
    return repr(value)[:40]


def build(node: dict, blob: bytes, *, act_quant: bool = True) -> nn.Module:
    """A module from its description (only the kinds this file writes; anything else is refused)."""
    try:
        return _Builder(blob, act_quant).build(node)
    except PackError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as error:
        raise PackError(f"the packed model's description is malformed ({type(error).__name__}: {str(error)[:200]})") from None
    except (RuntimeError, MemoryError) as error:
        raise PackError(f"the packed model cannot be built ({type(error).__name__}: {str(error)[:200]})") from None


def _whole(value, low: int, high: int, what: str) -> int:
    """A whole number from the description, in low..high (a float, a bool or text is refused)."""
    if type(value) is not int or not low <= value <= high:
        raise PackError(f"the packed model has {what} {_shown(value)}, not a whole number in {low}..{high}")
    return value


def _ints(value, low: int, high: int, what: str):
    """A whole number or a list of one or two, as module arguments take them."""
    if type(value) is list and 1 <= len(value) <= 2:
        return tuple(_whole(v, low, high, what) for v in value)
    return _whole(value, low, high, what)


def _number(value, low: float, high: float, what: str) -> float:
    if type(value) not in (int, float) or not low <= value <= high:
        raise PackError(f"the packed model has {what} {_shown(value)}, not a number in {low}..{high}")
    return float(value)


class _Builder:
    """Modules from a description. Each byte of the blob is read for one tensor only (a 1 MiB bitmap
    named by 200 layers would decode to gigabytes), and at most MAX_VALUES weights and MAX_MODULES
    modules are built, so the memory a file can ask for is bounded by the bytes it holds."""

    def __init__(self, blob: bytes, act_quant: bool):
        self.blob, self.act_quant = blob, act_quant
        self.starts, self.ends = [], []  # the blob ranges read so far, sorted by start
        self.modules = self.values = 0

    def build(self, node: dict) -> nn.Module:
        self.modules += 1
        if self.modules > MAX_MODULES:
            raise PackError(f"the packed model describes more than {MAX_MODULES:,} modules; ordercomp writes fewer")
        if type(node) is not dict:
            raise PackError(f"the packed model's description is malformed (a module is a {type(node).__name__})")
        kind = node["t"]
        if kind in ("conv", "linear"):
            return self.layer(node)
        if kind in ("seq", "list"):
            if type(node["c"]) is not list:
                raise PackError("the packed model's description is malformed (children are not a list)")
            children = [self.build(child) for child in node["c"]]
            return nn.Sequential(*children) if kind == "seq" else nn.ModuleList(children)
        if kind == "staged":
            return StagedNet(self.build(node["stem"]), list(self.build(node["stages"])), self.build(node["head"]))
        if kind == "exits":
            return EarlyExitNet(self.build(node["stem"]), self.build(node["stages"]), self.build(node["head"]),
                                list(self.build(node["exits"])), _number(node["threshold"], 0.0, 1.0, "an exit threshold"))
        if kind == "block":
            return self.block(node)
        return self.leaf(node)

    def leaf(self, node: dict) -> nn.Module:
        makers = {"relu": lambda: nn.ReLU(), "relu6": lambda: nn.ReLU6(), "id": lambda: nn.Identity(),
                  "flatten": lambda: nn.Flatten(_whole(node["start"], -4, 4, "a flatten dimension"),
                                                _whole(node["end"], -4, 4, "a flatten dimension")),
                  "avgpool": lambda: nn.AdaptiveAvgPool2d(_ints(node["size"], 1, MAX_SPATIAL, "a pooled size")),
                  "maxpool": lambda: nn.MaxPool2d(_ints(node["k"], 1, MAX_SPATIAL, "a pooling kernel"),
                                                  _ints(node["s"], 1, MAX_SPATIAL, "a pooling stride"),
                                                  _ints(node["p"], 0, MAX_SPATIAL, "a pooling padding"))}
        if type(node["t"]) is not str or node["t"] not in makers:
            raise PackError(f"the packed model names an unknown module kind {str(node['t'])[:40]!r}")
        return makers[node["t"]]()

    def block(self, node: dict) -> nn.Module:
        conv1, conv2 = self.layer(node["conv1"]), self.layer(node["conv2"])
        down = self.build(node["down"]) if node["down"] is not None else None
        block = BasicBlock(1, 1, 1, down)
        block.conv1, block.conv2, block.bn1, block.bn2 = conv1, conv2, nn.Identity(), nn.Identity()
        return block

    def tensor(self, where, dtype: str, count: int) -> np.ndarray:
        if type(where) is not list or len(where) != 2 or any(type(v) is not int for v in where):
            raise PackError("the packed model's description is malformed (a data range is not two whole numbers)")
        start, length = where
        if start < 0 or length < 0 or start + length > len(self.blob):
            raise PackError("the packed model points outside its data: the file is truncated or corrupt")
        self.claim(start, length)
        values = np.frombuffer(memoryview(self.blob)[start:start + length], dtype=dtype)
        if values.size < count:
            raise PackError("the packed model holds fewer values than its shapes need: the file is corrupt")
        return values[:count]

    def claim(self, start: int, length: int) -> None:
        """Note blob[start:start + length] as read; a byte read for a second tensor is refused."""
        if length == 0:
            return
        index = bisect.bisect_right(self.starts, start)
        if (index and self.ends[index - 1] > start) or (index < len(self.starts) and self.starts[index] < start + length):
            raise PackError("the packed model reads the same bytes for two tensors (ordercomp never does): the file is corrupt or crafted")
        self.starts.insert(index, start)
        self.ends.insert(index, start + length)

    def weight(self, entry: dict, dims: int) -> torch.Tensor:
        shape, bits = entry["shape"], entry["bits"]
        if type(shape) is not list or len(shape) != dims or type(bits) is not int or bits not in (2, 4, 8, FULL_BITS):
            raise PackError(f"the packed model has an impossible weight ({_shown(shape)}, {_shown(bits)} bits)")
        shape = [_whole(n, 1, MAX_VALUES, "a weight dimension") for n in shape]
        count = math.prod(shape)
        self.values += count
        if self.values > MAX_VALUES:
            raise PackError(f"the packed model holds more than {MAX_VALUES:,} weights; ordercomp writes fewer")
        mask = None
        if "bitmap" in entry:
            mask = unpack_codes(self.tensor(entry["bitmap"], np.uint8, math.ceil(count / 8)).tobytes(), 1, count).astype(bool)
        stored = int(mask.sum()) if mask is not None else count
        if bits >= FULL_BITS:
            values = self.tensor(entry["values"], "<f4", stored).astype(np.float32)
        else:
            width = _pack_width(bits)
            packed = self.tensor(entry["values"], np.uint8, math.ceil(stored * width / 8)).tobytes()
            scale = self.tensor(entry["scale"], "<f4", shape[0]).astype(np.float32)
            codes = unpack_codes(packed, width, stored).astype(np.float32) - (2 ** (bits - 1) - 1)
            channel = (np.flatnonzero(mask) if mask is not None else np.arange(count)) // (count // shape[0])
            values = codes * scale[channel]
        full = np.zeros(count, dtype=np.float32)
        full[mask if mask is not None else slice(None)] = values
        return torch.from_numpy(full.reshape(shape))

    def layer(self, node: dict) -> nn.Module:
        conv = node["t"] == "conv"
        weight = self.weight(node["w"], 4 if conv else 2)
        bias = torch.from_numpy(self.tensor(node["b"], "<f4", weight.shape[0]).astype(np.float32))
        act = self.activation(node["act"]) if self.act_quant and node.get("act") is not None else None
        if conv:
            groups = _whole(node["groups"], 1, weight.shape[0], "a group count")
            layer = (QuantConv2d if act else nn.Conv2d)(
                weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), _ints(node["stride"], 1, MAX_SPATIAL, "a stride"),
                _ints(node["padding"], 0, MAX_SPATIAL, "a padding"), _ints(node["dilation"], 1, MAX_SPATIAL, "a dilation"), groups)
        else:
            layer = (QuantLinear if act else nn.Linear)(weight.shape[1], weight.shape[0])
        if act:
            layer._init_quant(FULL_BITS, act[0])
            layer.act_low.fill_(act[1]), layer.act_high.fill_(act[2]), layer.observed.fill_(True)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        return layer

    @staticmethod
    def activation(act) -> tuple[int, float, float]:
        """[bits, low, high] of a fake-quantised activation."""
        if type(act) is not list or len(act) != 3 or act[0] not in (2, 4, 8) or type(act[0]) is not int:
            raise PackError(f"the packed model has an impossible activation quantiser {_shown(act)}")
        return act[0], _number(act[1], -1e30, 1e30, "an activation bound"), _number(act[2], -1e30, 1e30, "an activation bound")
