"""Write a compressed model to a folder as TorchScript, torch.export (.pt2), ONNX (float and int8),
a packed low-bit file and a state dict, and measure what ships.

Every file goes into a staging folder and reaches the destination only when all of it is written,
so a failure midway never leaves half an export; an earlier export's files are replaced while they
have the checksums ordercomp recorded, and any other file in the folder is kept (a folder of someone
else's files is refused before the work, see `folders.py`).
A format that cannot represent a model (an exporter error, a runtime that is not installed) is
recorded in `manifest.json` as one line instead of stopping the others. Every program file is
loaded back (the ONNX ones in onnxruntime) and checked against PyTorch: the float formats on a few
test images to a logit tolerance, the int8 ONNX file on the whole test split against the deployable
float model it was quantised from (`check_int8`). Then each is measured in its own runtime (accuracy
on the test split, latency at batch 1 and 32, 2 threads) next to the base model written and measured
the same way, and its real file size is recorded beside the reported storage.

    manifest = export_compressed(outcome.model, "out/", chain=chain, configs=outcome.configs,
                                 metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source,
                                 base_model=outcome.base)
    verify_export("out/")
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..models.checkpoints import SAMPLE_DIR, list_samples, load_program, read_state_dict, sample_card
from ..data.datasets import DataBundle
from ..report.figures import accuracy_text, busy_caveat, latency_text, size_text, speed_text
from ..errors import one_line
from ..folders import MIB, FolderKind, check_destination, read_record, sha256, write_folder
from ..methods.early_exit import ConditionalExits, EarlyExitNet, StaticExitSelect, TransformerExits, select_exits
from ..methods.int8 import MAX_BATCH
from ..layers import fake_quant_activation, quantises_activations
from .onnx_int8 import CannotBuild, deployable_float, quantize_onnx
from .kept_files import kept_in, kept_or_written
from .packed import PackError, write_packed
from .runtimes import (BATCHES, THREADS, Runner, RuntimeMissing, cpu_description, latency_ms, load_runner, measure_pair,
                       measure_runner, runtime_name, torch_threads)
from ..models.zoo import ARCHITECTURES, create_model

MANIFEST = "manifest.json"
OPERATOR_LIBRARIES = {"quantized_decomposed": "torch.ao.quantization.fx._decomposed"}  # namespace -> module registering it
MARKER = ".ordercomp-export"
CHECK_TOLERANCE = 1e-3
# With quantised activations a float difference of one ulp (BatchNorm folded, another kernel) can move a value
# across a rounding step, and the step travels on through the later quantisers: on the 32-px sample's chain one
# value of 2.9 million moved, and one image of 359 left the tolerance. Up to this share of images may.
ROUNDING_STEP_SHARE = 0.01
INT8_AGREEMENT = 0.99        # top-1 agreement of the int8 file with its float model, over the whole test split
INT8_ACCURACY_POINTS = 0.5   # and its accuracy at most this far below the float model's
CHECK_BATCH = 256
TOLERANCES = {  # what each check demands, as the manifest states it
    "float formats": f"every logit within {CHECK_TOLERANCE:g} x max(1, largest |logit|) of PyTorch's, on the whole test split "
                     f"(with quantised activations, on all but {100 * ROUNDING_STEP_SHARE:g}% of its images: rounding steps; "
                     "with early exits, an image whose confidence at an exit is within half that of the threshold may match either exit)",
    "onnx_int8": f"top-1 agreement with the deployable float model on at least {100 * INT8_AGREEMENT:g}% of the whole test split, "
                 f"and accuracy at most {INT8_ACCURACY_POINTS:g} points below it",
}
CALIBRATION_IMAGES = 256
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def exportable(model: nn.Module) -> nn.Module:
    """The model in eval mode, without data-dependent control flow (early exits select statically)."""
    model = model.eval()
    return StaticExitSelect(model).eval() if isinstance(model, (EarlyExitNet, TransformerExits)) else model


def _batch_dim():
    # int8 parts are exported for batches up to MAX_BATCH, so the whole model cannot promise more.
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


@dataclass
class Sources:
    """What the writers export from: the model, its exportable program, a sample batch and calibration images."""

    model: nn.Module
    program: nn.Module
    sample: torch.Tensor
    calibration: torch.Tensor

    @classmethod
    def of(cls, model: nn.Module, data: DataBundle) -> "Sources":
        model = copy.deepcopy(model).cpu().eval()
        return cls(model, exportable(model), data.test.tensors[0][:2].contiguous(), data.train.tensors[0][:CALIBRATION_IMAGES].contiguous())

    def deployable(self) -> nn.Module:
        """The exportable deployable float form, which the int8 ONNX file quantises (CannotBuild for torchao int8 chains)."""
        return exportable(deployable_float(self.model))


def write_torchscript(src: Sources, path: Path) -> dict:
    with torch.no_grad():
        traced = torch.jit.trace(_sizes_read_as_methods(src.program), src.sample, check_trace=False)
    traced.save(str(path))
    return imports_to_load({node.kind().split("::")[0] for node in traced.inlined_graph.nodes()})


# operators of an exported graph that jit.trace records with constant sizes, and the tensor methods it traces dynamically
SIZED_METHODS = {torch.ops.aten.sym_size.int: "size", torch.ops.aten.view.default: "view", torch.ops.aten.reshape.default: "reshape"}


def _sizes_read_as_methods(program: nn.Module) -> nn.Module:
    """`program`, or a copy whose exported graphs (int8 parts) read sizes and reshape by tensor methods (`x.size(0)`,
    `x.view(...)`): torch.export writes them as operators (`aten.sym_size.int`, `aten.view.default`), which
    torch.jit.trace records with the example's sizes, so the file kept its batch (int8 on kuangliu's VGG,
    `out.view(out.size(0), -1)`: a TorchScript file that ran at batch 2 only)."""
    reads_size = lambda node: node.op == "call_function" and node.target is torch.ops.aten.sym_size.int
    if not any(reads_size(node) for graph in program.modules() if isinstance(graph, torch.fx.GraphModule) for node in graph.graph.nodes):
        return program
    program = copy.deepcopy(program)
    for graph in [module for module in program.modules() if isinstance(module, torch.fx.GraphModule)]:
        for node in graph.graph.nodes:
            if node.op == "call_function" and node.target in SIZED_METHODS:
                node.op, node.target = "call_method", SIZED_METHODS[node.target]
        graph.recompile()
    return program


def write_pt2(src: Sources, path: Path) -> dict:
    exported = torch.export.export(src.program, (src.sample,), dynamic_shapes=_batch_dim())
    torch.export.save(exported, str(path))
    return imports_to_load({getattr(node.target, "namespace", None) for node in exported.graph.nodes if node.op == "call_function"})


def imports_to_load(namespaces: set) -> dict:
    """What a fresh process must import before it loads a file whose graph calls these operator namespaces: a torchao
    int8 graph calls torch's `quantized_decomposed` operators, which exist only once the module registering them is
    imported (ordercomp's own process has imported it, so its checks load the file without it)."""
    needed = sorted(OPERATOR_LIBRARIES[namespace] for namespace in namespaces if namespace in OPERATOR_LIBRARIES)
    return {"load_after": [f"import {module}" for module in needed]} if needed else {}


def write_state_dict(src: Sources, path: Path) -> dict:
    state = {name: tensor.detach().cpu().clone() for name, tensor in src.model.state_dict().items()}
    torch.save(state, path)
    return {"tensors": len(state)}


def write_onnx(src: Sources, path: Path) -> dict:
    """Float ONNX; with early exits, an If after each exit head stops the run once the batch is confident
    (every exit computed, as a fallback, when the exporter cannot express that)."""
    if isinstance(src.model, TransformerExits):
        return {**onnx_file(src.program, src.sample, path), "early_exit": "every exit computed (an If after each exit is "
                "built for networks of stages; a Vision Transformer's exits are selected after the last block)"}
    if isinstance(src.model, EarlyExitNet):
        try:
            return {**onnx_file(ConditionalExits(src.model).eval(), src.sample, path, legacy=False), "early_exit": "stops at run time"}
        except OSError:
            raise
        except Exception as error:  # the exporter raises many error types
            return {**onnx_file(src.program, src.sample, path), "early_exit": f"every exit computed ({one_line(error)})"}
    return onnx_file(src.program, src.sample, path)


def write_onnx_int8(src: Sources, path: Path) -> dict:
    """The deployable float form in ONNX, statically quantised to int8 by onnxruntime."""
    with tempfile.TemporaryDirectory() as temp:
        float_path = Path(temp) / "float.onnx"
        details = onnx_file(src.deployable(), src.sample, float_path)
        return {**details, **quantize_onnx(float_path, path, src.calibration, INPUT_NAME)}


def write_packed_file(src: Sources, path: Path) -> dict:
    return write_packed(src.model, path)


def onnx_file(program: nn.Module, sample: torch.Tensor, path: Path, *, legacy: bool = True) -> dict:
    """The dynamo exporter, or (with `legacy`) the TorchScript-based one when dynamo cannot export the model."""
    try:
        onnx_program = torch.onnx.export(program, (sample,), dynamo=True, dynamic_shapes=_batch_dim(), verbose=False,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        onnx_program.save(str(path))
        return {"exporter": "dynamo", **strip_onnx_metadata(path)}
    except OSError:
        raise
    except Exception as dynamo_error:  # the dynamo exporter raises many error types
        if not legacy:
            raise
        try:
            torch.onnx.export(program, (sample,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except OSError:
            raise
        except Exception as legacy_error:
            raise RuntimeError(f"dynamo exporter: {one_line(dynamo_error)}; legacy exporter: {one_line(legacy_error)}") from None
        return {"exporter": "legacy", "dynamo_error": one_line(dynamo_error), **strip_onnx_metadata(path)}


def strip_onnx_metadata(path: Path) -> dict:
    """Remove what the exporter records for people debugging it and onnxruntime never reads: every node's
    metadata (the dynamo exporter's FX node, module path, class hierarchy and stack trace: ~922 KB of a
    1.06 MB file whose weights are 112 KB), doc strings, the intermediate shapes in `value_info`
    (onnxruntime infers them again), in the main graph and every If branch, and initializers no node
    reads (onnxruntime drops them too, with a warning on every load). Returns the bytes saved."""
    import onnx

    before = path.stat().st_size
    model = onnx.load(str(path))
    del model.metadata_props[:]
    model.doc_string = ""
    for graph in _graphs(model.graph):
        graph.doc_string = ""
        del graph.value_info[:]
        for node in graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        for value in (*graph.input, *graph.output):
            del value.metadata_props[:]
            value.doc_string = ""
    _drop_unread_initializers(model.graph)
    onnx.save(model, str(path))
    return {"metadata_bytes_removed": before - path.stat().st_size}


def _drop_unread_initializers(main) -> None:
    """Initializers that no node of any graph reads (a branch may read its outer graph's) and no graph returns."""
    graphs = list(_graphs(main))
    read = {name for graph in graphs for node in graph.node for name in node.input}
    read |= {value.name for graph in graphs for value in graph.output}
    for graph in graphs:
        kept = [tensor for tensor in graph.initializer if tensor.name in read]
        if len(kept) < len(graph.initializer):
            del graph.initializer[:]
            graph.initializer.extend(kept)


def _graphs(graph):
    """An ONNX graph and, depth first, the subgraphs of its nodes (If branches, loop bodies)."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _graphs(sub)


def check_program(name: str, path: Path, program: nn.Module, data: DataBundle) -> dict:
    """The written file, loaded back, against PyTorch on the whole test split: it passes when no logit differs
    by more than CHECK_TOLERANCE x max(1, largest |logit|), on every image, or, when the model quantises
    activations, on all but ROUNDING_STEP_SHARE of them; the largest difference, the images beyond the
    tolerance and the top-1 agreement are recorded as they are. With early exits, an image at the threshold
    is held to the exits it may take (`either_side_of_the_threshold`)."""
    images = data.test.tensors[0]
    try:
        got = np.concatenate([run_program(name, path, batch.contiguous(), trust_torchscript=True)  # written a moment ago by this process
                              for batch in images.split(CHECK_BATCH)])
    except Exception as error:  # loaders and onnxruntime raise their own error types for files they cannot run
        return {"images": len(images), "passed": False, "error": one_line(error)}
    with torch.no_grad():
        exits = ([torch.cat(parts) for parts in zip(*(program.model.forward_all(batch) for batch in images.split(CHECK_BATCH)))]
                 if isinstance(program, StaticExitSelect) else None)  # every exit's logits, which the program selects from
        expected = (select_exits(exits, program.model.threshold)[0] if exits is not None
                    else torch.cat([program(batch) for batch in images.split(CHECK_BATCH)])).numpy()
    per_image = np.abs(got - expected).max(axis=1)
    tolerance = CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    at_threshold = {}
    if exits is not None:
        per_image, borderline = either_side_of_the_threshold([e.numpy() for e in exits], program.model.threshold, got, tolerance / 2)
        at_threshold = {"images_at_exit_threshold": borderline}
    beyond = int((per_image > tolerance).sum())
    allowed = int(ROUNDING_STEP_SHARE * len(images)) if quantises_activations(program) else 0
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    return {"images": len(images), "against": "PyTorch", "max_abs_diff": float(per_image.max()), "tolerance": tolerance,
            "images_beyond_tolerance": beyond, "allowed_beyond_tolerance": allowed, **at_threshold,
            "argmax_agreement": agreement, "passed": beyond <= allowed}


def either_side_of_the_threshold(outputs: list[np.ndarray], threshold: float, got: np.ndarray,
                                 margin: float) -> tuple[np.ndarray, int]:
    """Per image, the largest logit difference between `got` and the nearest of PyTorch's exit `outputs` (every exit's
    logits, the final head's last) the image may take, and how many images had a choice. An image leaves at its first exit whose confidence reaches the threshold; where that
    confidence lies within `margin` of the threshold, another runtime's rounding may decide the other way, so the image
    may leave there or go on. A softmax's largest probability moves by at most half the largest move of its logits, so
    half the logit tolerance is as far as a file within it can move a confidence. Without such an image the only output
    allowed is the one the model takes."""
    nearest = np.full(len(got), np.inf)
    choices = np.zeros(len(got), dtype=int)
    reachable = np.ones(len(got), dtype=bool)  # no earlier exit is surely taken
    for index, logits in enumerate(outputs):
        last = index == len(outputs) - 1
        confidence = None if last else torch.from_numpy(logits).softmax(1).amax(1).numpy()
        may_leave = reachable if last else reachable & (confidence > threshold - margin)
        nearest = np.where(may_leave, np.minimum(nearest, np.abs(got - logits).max(axis=1)), nearest)
        choices += may_leave
        if not last:
            reachable &= confidence < threshold + margin
    return nearest, int((choices > 1).sum())


def check_int8(path: Path, reference: nn.Module, data: DataBundle) -> dict:
    """The int8 ONNX file against the deployable float model it was quantised from, on the whole test split.
    Its activations are re-quantised to 8 bits, so logits move (recorded: the largest difference); it passes
    when its top-1 agrees on at least INT8_AGREEMENT of the images and its accuracy is at most
    INT8_ACCURACY_POINTS below the float model's (a flip on an image the float model barely decides goes
    either way). Recorded beside it: how often the float model keeps its own top-1 when only its input is
    rounded to 8 bits, which every int8 file does first; a model without margins scores low there."""
    images, labels = data.test.tensors
    try:
        run = load_runner("onnx_int8", path)
        got = np.concatenate([run(batch.contiguous().numpy()) for batch in images.split(CHECK_BATCH)])
    except Exception as error:  # onnxruntime raises its own error types for a file it cannot run
        return {"images": len(images), "passed": False, "error": one_line(error)}
    with torch.no_grad():
        expected = torch.cat([reference(batch) for batch in images.split(CHECK_BATCH)]).numpy()
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    accuracy, reference_accuracy = (100.0 * float((logits.argmax(1) == labels.numpy()).mean()) for logits in (got, expected))
    passed = agreement >= INT8_AGREEMENT and reference_accuracy - accuracy <= INT8_ACCURACY_POINTS
    return {"images": len(images), "against": "deployable float model", "argmax_agreement": agreement,
            "accuracy": accuracy, "reference_accuracy": reference_accuracy, "max_abs_diff": float(np.abs(got - expected).max()),
            "input_rounding_agreement": input_rounding_agreement(reference, images, data.train.tensors[0][:CALIBRATION_IMAGES], expected),
            "min_agreement": INT8_AGREEMENT, "max_accuracy_points": INT8_ACCURACY_POINTS, "passed": passed}


@torch.no_grad()
def input_rounding_agreement(reference: nn.Module, images: torch.Tensor, calibration: torch.Tensor, expected: np.ndarray) -> float:
    """Top-1 agreement of `reference` with its own `expected` logits when its input is rounded to 8 bits over the
    calibration images' range (zero included, as onnxruntime's MinMax calibration): the first step of any int8 file."""
    low, high = (torch.tensor(v) for v in (min(0.0, float(calibration.min())), max(0.0, float(calibration.max()))))
    rounded = fake_quant_activation(images, low, high, 8)
    got = torch.cat([reference(batch) for batch in rounded.split(CHECK_BATCH)]).numpy()
    return float((got.argmax(1) == expected.argmax(1)).mean())


Writer = Callable[[Sources, Path], dict]
FORMATS: dict[str, tuple[str, Writer]] = {
    "torchscript": ("model.torchscript.pt", write_torchscript),
    "pt2": ("model.pt2", write_pt2),
    "onnx": ("model.onnx", write_onnx),
    "onnx_int8": ("model.int8.onnx", write_onnx_int8),
    "packed": ("model.packed.safetensors", write_packed_file),
    "state_dict": ("model.state_dict.pt", write_state_dict),
}
DEFAULT_FORMATS = tuple(FORMATS)
PROGRAM_FORMATS = ("torchscript", "pt2", "onnx", "onnx_int8", "packed")
# the base model is measured in the same runtime: as float ONNX next to the int8 ONNX file
BASE_FORMAT = {"onnx_int8": "onnx"}
# What an exploration ships and measures as its headline (Exploration.shipped): float ONNX in onnxruntime is the
# fastest file on the CPUs measured (README, Deployment), runs without PyTorch, and keeps early exits that stop at
# run time; int8 ONNX is smaller but its kernels were slower than the float ones on an AVX2 CPU without VNNI.
SHIPPED_FORMAT = "onnx"


def check_formats(formats) -> list[str]:
    names = [name.strip() for name in formats if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def legacy_checksums(folder: Path) -> dict[str, str]:
    """An export folder written before markers held checksums: the model files by the manifest's checksums,
    the manifest itself when it is exactly as ordercomp writes one (its JSON written back unchanged)."""
    manifest = read_record(folder / MANIFEST)
    try:
        recorded = {name: digest for name, digest in manifest["sha256"].items() if isinstance(digest, str)}
    except (KeyError, TypeError, AttributeError):  # no manifest, or not one of ours
        return {}
    written = hashlib.sha256(json.dumps(manifest, indent=1, default=str).encode()).hexdigest()
    if sha256(folder / MANIFEST) == written:
        recorded[MANIFEST] = written
    return recorded


EXPORT_FOLDER = FolderKind(MARKER, "export", frozenset([filename for filename, _ in FORMATS.values()] + [MANIFEST]),
                           legacy=legacy_checksums)


def base_weight_bytes(model: str, weights: str | None = None) -> int:
    """Roughly the bytes of the float weights of the model `model` names, without loading it: a weights file's,
    a sample's or a file's size, an architecture's parameters at 4 bytes each (10 classes, 3 input channels);
    0 if unknown (a class trained here)."""
    if weights and Path(weights).expanduser().is_file():
        return Path(weights).expanduser().stat().st_size
    if model in list_samples():
        return (SAMPLE_DIR / sample_card(model)["weights"]).stat().st_size
    if model in ARCHITECTURES:
        return 4 * sum(parameter.numel() for parameter in create_model(model, 10, 3).parameters())
    path = Path(model).expanduser()
    return path.stat().st_size if path.is_file() else 0


def export_bytes(model: str, formats, weights: str | None = None) -> int:
    """A rough bound of what an export writes: every format at most the base's float weights (compression
    only shrinks them) plus 1 MiB for program code and the manifest."""
    return len(check_formats(formats)) * (base_weight_bytes(model, weights) + MIB)


def check_export_folder(out, formats=DEFAULT_FORMATS, need_bytes: int = 0) -> str:
    """Refuse, before any work, an export folder ordercomp cannot write the `formats` into (or with less
    than `need_bytes` free), or that holds files ordercomp did not write; returns what `export_compressed`
    is to find there when it writes (folders.marker_state)."""
    names = [FORMATS[name][0] for name in check_formats(formats)] + [MANIFEST]
    return check_destination(Path(out), EXPORT_FOLDER, names, need_bytes)


def write_format(name: str, src: Sources, folder: Path) -> dict:
    """Write one format; an exporter error becomes a one-line entry, a file-system error propagates."""
    filename, writer = FORMATS[name]
    try:
        with warnings.catch_warnings():
            # deprecation notices and tracer remarks; the check below runs every written file instead
            warnings.simplefilter("ignore")
            details = kept_or_written(name, src, folder / filename, writer)
    except OSError:
        raise
    except (CannotBuild, PackError, RuntimeMissing) as reason:
        (folder / filename).unlink(missing_ok=True)
        return {"format": name, "error": f"not built: {reason}"}
    except Exception as error:  # exporters raise many error types for a model they cannot represent
        (folder / filename).unlink(missing_ok=True)
        return {"format": name, "error": one_line(error)}
    return {"format": name, "file": filename, "size_bytes": (folder / filename).stat().st_size, **details}


def export_format(name: str, src: Sources, data: DataBundle, folder: Path) -> dict:
    entry = write_format(name, src, folder)
    if name == "onnx_int8" and "file" in entry:
        entry["check"] = check_int8(folder / entry["file"], src.deployable(), data)
    elif name in PROGRAM_FORMATS and "file" in entry:
        entry["check"] = check_program(name, folder / entry["file"], src.program, data)
    return entry


def deployed_latency(model: nn.Module, data: DataBundle, fmt: str, *, threads: int = 1, repeats: int = 20) -> dict:
    """Batch-1 and batch-32 latency (ms) of `model` written as `fmt` and run in that format's runtime:
    what the step would cost where it ships. A form that cannot be built raises CannotBuild. Its file is not kept
    (kept_files): one per step of a search would fill a disk with a large network's files."""
    with tempfile.TemporaryDirectory() as temp, kept_in(None):
        entry = write_format(fmt, Sources.of(model, data), Path(temp))
        if "error" in entry:
            raise CannotBuild(f"cannot be built as {fmt}: {entry['error']}")
        run = load_runner(fmt, Path(temp) / entry["file"], threads, trust_torchscript=True)  # written just now
        with torch_threads(threads):
            return {"latency_ms_b1": latency_ms(run, data, 1, repeats), "latency_ms_batch": latency_ms(run, data, BATCHES[-1], repeats)}


def measure_entry(entry: dict, folder: Path, data: DataBundle, base: "BaseRuns | None", timing: dict) -> dict:
    """The written file's accuracy and latency in its runtime; with a base, the base written in the same
    runtime is measured beside it (their latencies in alternating rounds) and the speed-ups are their ratio."""
    fmt = entry["format"]
    try:
        run = load_runner(fmt, folder / entry["file"], timing["threads"], trust_torchscript=True)  # written just now
        reference, base_run = base.prepared(fmt) if base is not None else (None, None)
        if base_run is None:
            entry["measured"] = {"runtime": runtime_name(fmt), **measure_runner(run, data, **timing)}
        else:
            measured, base_measured = measure_pair(run, base_run, data, **timing)
            entry["measured"] = {"runtime": runtime_name(fmt), **measured}
            reference = reference | base_measured
            entry["speedup"] = speedups(base_measured["latency_ms"], measured["latency_ms"])
    except RuntimeMissing as reason:
        entry["measured"] = {"runtime": runtime_name(fmt), "error": str(reason)}
        return entry
    except Exception as error:  # a runtime that cannot run a file raises its own error types
        entry["measured"] = {"runtime": runtime_name(fmt), "error": one_line(error)}
        return entry
    if reference is not None:
        entry["base_measured"] = reference
    return entry


def measured_before(entry: dict, folder: Path, shipped: dict | None, threads: int) -> dict | None:
    """`entry` with the figures `shipped` (an exploration's `shipped_figures`) measured for this very file: the
    same format and bytes (SHA-256), timed with the same threads on the same CPU; None when any of them differs.
    The load it was timed under comes with it, and another load now does not make it another measurement."""
    if not shipped or "error" in shipped or shipped.get("format") != entry["format"] or shipped.get("threads") != threads:
        return None
    if shipped.get("sha256") != sha256(folder / entry["file"]) or shipped.get("cpu") != cpu_description():
        return None
    base = shipped["base"]
    entry["measured"] = {"runtime": shipped["runtime"], "accuracy": shipped["accuracy"], "latency_ms": shipped["latency_ms"],
                         "load": shipped.get("load")}  # None in a record from before loads were kept
    entry["base_measured"] = {"format": base["format"], "runtime": base["runtime"], "size_bytes": base["file_bytes"],
                              "accuracy": base["accuracy"], "latency_ms": base["latency_ms"]}
    entry["speedup"], entry["measured_by"] = shipped["speedup"], "exploration"
    return entry


def speedups(base_ms: dict, file_ms: dict) -> dict:
    """Base latency / file latency per batch size."""
    return {b: base_ms[b] / t for b, t in file_ms.items()}


class BaseRuns:
    """The base model written once per runtime, in a folder of its own, and loaded into that runtime."""

    def __init__(self, model: nn.Module, data: DataBundle, folder: Path, timing: dict):
        self.src, self.folder, self.threads, self.done = Sources.of(model, data), folder, timing["threads"], {}

    def prepared(self, fmt: str) -> tuple[dict, Runner | None]:
        """(what the base file is: format, runtime, size, or the error that kept it from being built or
        loaded; its runner, or None) for the runtime of `fmt`."""
        fmt = BASE_FORMAT.get(fmt, fmt)
        if fmt not in self.done:
            entry, run = write_format(fmt, self.src, self.folder), None
            record = {"format": fmt, "runtime": runtime_name(fmt)}
            if "error" in entry:
                record["error"] = entry["error"]
            else:
                record["size_bytes"] = entry["size_bytes"]
                try:
                    run = load_runner(fmt, self.folder / entry["file"], self.threads, trust_torchscript=True)  # written just now
                except Exception as error:  # runtimes raise their own error types
                    record["error"] = one_line(error)
            self.done[fmt] = (record, run)
        return self.done[fmt]


def shipped_figures(model: nn.Module, base_model: nn.Module, data: DataBundle, *, fmt: str = SHIPPED_FORMAT,
                    threads: int = THREADS, repeats: int = 20) -> dict:
    """What ships, measured where it runs: `model` written as `fmt` and checked as the export writes and checks it
    (`export_format`), `base_model` written as the export writes the base it compares that format with (float ONNX
    for int8 ONNX, `BASE_FORMAT`), both run in their runtime with `threads` threads, accuracy on the test split and
    latency at every batch size after warm-up, timed in alternating rounds. The record (see `Exploration.shipped`):
    {format, runtime, file_bytes, sha256, accuracy, latency_ms: {"1", "32"}, load, threads, check, base: {format,
    runtime, file_bytes, sha256, accuracy, latency_ms, load}, speedup: {"1", "32"} (base ms / file ms), size_ratio
    (base bytes / file bytes), cpu}, load being how busy the machine was while both were timed (`machine_load`); or
    {format, runtime, error} when either file cannot be built or run."""
    runtime, base_fmt = runtime_name(fmt), BASE_FORMAT.get(fmt, fmt)
    try:
        with tempfile.TemporaryDirectory(prefix="ordercomp-shipped-") as temp:
            chain, entry = _written(fmt, model, data, Path(temp) / "chain", checked=True)
            files = {"chain": chain, "base": _written(base_fmt, base_model, data, Path(temp) / "base")[0]}
            run, base_run = (load_runner(f, files[role], threads, trust_torchscript=True)  # written just now
                             for role, f in (("chain", fmt), ("base", base_fmt)))
            measured, base = measure_pair(run, base_run, data, threads=threads, repeats=repeats)
            sizes = {role: path.stat().st_size for role, path in files.items()}
            digests = {role: sha256(path) for role, path in files.items()}
    except (CannotBuild, RuntimeMissing) as reason:
        return {"format": fmt, "runtime": runtime, "error": str(reason)}
    except OSError:
        raise
    except Exception as error:  # runtimes raise their own error types
        return {"format": fmt, "runtime": runtime, "error": one_line(error)}
    return {"format": fmt, "runtime": runtime, "file_bytes": sizes["chain"], "sha256": digests["chain"], **measured,
            "threads": threads, "check": entry["check"],
            "base": {"format": base_fmt, "runtime": runtime_name(base_fmt), "file_bytes": sizes["base"], "sha256": digests["base"], **base},
            "speedup": speedups(base["latency_ms"], measured["latency_ms"]), "size_ratio": sizes["base"] / sizes["chain"],
            "cpu": cpu_description()}


def _written(fmt: str, model: nn.Module, data: DataBundle, folder: Path, *, checked: bool = False) -> tuple[Path, dict]:
    """`model` written as `fmt` into `folder` (with `checked`, and checked as the export checks it) and the writer's
    entry; CannotBuild with the writer's one line when it cannot be."""
    folder.mkdir()
    src = Sources.of(model, data)
    entry = export_format(fmt, src, data, folder) if checked else write_format(fmt, src, folder)
    if "error" in entry:
        raise CannotBuild(entry["error"])
    return folder / entry["file"], entry


def export_compressed(model: nn.Module, out_dir, *, formats=DEFAULT_FORMATS, chain, configs: dict, metrics: dict,
                      data: DataBundle, base: dict, base_model: nn.Module | None = None, measure: bool = True,
                      repeats: int = 20, threads: int = THREADS, reused: bool = False, shipped: dict | None = None,
                      seen: str | None = None) -> dict:
    """Write `model` in every requested format plus manifest.json into `out_dir`; return the manifest.
    With `measure`, every program file is timed in its runtime, next to `base_model` when given.
    `reused` records that `model` is the one an exploration trained (`compress` found it by its key).
    `shipped` is that exploration's measurement of its shipped file (`shipped_figures`): a file written here with
    the same bytes is not timed again but takes those figures, so the export and the headline read one measurement.
    `seen` is what `check_export_folder` returned before the work: an export another run wrote there since is kept,
    and this one goes to a temporary folder (the error line says where)."""
    names, out = check_formats(formats), Path(out_dir)
    checked = check_export_folder(out, names)
    src = Sources.of(model, data)
    def write(folder: Path) -> dict:
        entries = [export_format(name, src, data, folder) for name in names]
        if measure:
            timing = {"repeats": repeats, "threads": threads}
            with tempfile.TemporaryDirectory(prefix="ordercomp-base-") as base_folder:
                base_runs = BaseRuns(base_model, data, Path(base_folder), timing) if base_model is not None else None
                entries = [(measured_before(e, folder, shipped, threads) or measure_entry(e, folder, data, base_runs, timing))
                           if "file" in e and e["format"] in PROGRAM_FORMATS else e for e in entries]
        manifest = describe(folder, entries, chain=chain, configs=configs, metrics=metrics, data=data, base=base)
        manifest["threads"] = threads
        manifest["reused_chain_model"] = reused
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        return manifest

    return write_folder(out, EXPORT_FOLDER, write, checked if seen is None else seen)


def describe(folder: Path, entries: list[dict], *, chain, configs, metrics, data: DataBundle, base: dict) -> dict:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return {"chain": list(chain), "configs": configs, "metrics": metrics, "data": data.describe(),
            "preprocessing": data.preprocessing, "base": {k: v for k, v in base.items() if k != "card"},
            "input_shape": ["batch", data.in_channels, data.input_size, data.input_size],
            "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files, "sha256": {name: sha256(folder / name) for name in files}, "formats": entries,
            "reported_storage_bytes": metrics.get("size_bytes"), "batches": list(BATCHES), "tolerances": TOLERANCES}


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out_dir} holds no {MANIFEST}: give a folder written by export_compressed")
    return json.loads(path.read_text())


def verify_export(out_dir, *, trust_torchscript: bool = False) -> dict:
    """Re-compute every checksum and load every program file back, running it on a sample input.
    TorchScript runs code from the file, so it is only run when the caller trusts the folder."""
    out, manifest = Path(out_dir), read_manifest(out_dir)
    checksums = {name: _matches(folder_file(out, name), digest) for name, digest in manifest["sha256"].items()}
    channels, height, width = manifest["input_shape"][1:]
    sample = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(0))
    loads = {entry["format"]: _load_back(out, entry, sample, trust_torchscript) for entry in manifest["formats"] if "file" in entry}
    return {"checksums": checksums, "loads": loads,
            "ok": all(checksums.values()) and all("error" not in result for result in loads.values())}


def folder_file(out: Path, name) -> Path | None:
    """The file `name` of the export folder `out`, or None when a manifest (anyone may have written it) names anything
    but a plain file name of the folder: a path, '..' or a value that is not text."""
    return out / name if isinstance(name, str) and name not in ("", "..") and Path(name).name == name else None


def _matches(path: Path | None, digest: str) -> bool:
    return path is not None and path.is_file() and sha256(path) == digest


def _load_back(out: Path, entry: dict, sample: torch.Tensor, trust_torchscript: bool) -> dict:
    path = folder_file(out, entry["file"])
    if path is None:
        return {"error": f"the manifest names {str(entry['file'])[:80]!r}, which is not a file of its folder: export again"}
    return load_and_run(entry["format"], path, sample, trust_torchscript)


def load_and_run(name: str, path: Path, sample: torch.Tensor, trust_torchscript: bool = False) -> dict:
    if name == "torchscript" and not trust_torchscript:
        return {"skipped": "TorchScript runs code from the file; verify with trust_torchscript=True to run it"}
    try:
        if name == "state_dict":
            return {"tensors": len(read_state_dict(path))}
        return {"output_shape": list(run_program(name, path, sample, trust_torchscript).shape)}
    except Exception as error:  # loaders and runtimes raise many error types for a broken file
        return {"error": one_line(error)}


def run_program(name: str, path: Path, sample: torch.Tensor, trust_torchscript: bool = False) -> np.ndarray:
    """The file's logits on `sample`, in its runtime (the .pt2 program eagerly: checks need no compilation).
    TorchScript runs code from the file: only with `trust_torchscript` (ordercomp's own fresh files)."""
    if name == "pt2":
        with torch.no_grad():
            return load_program(path)(sample).numpy()
    return load_runner(name, path, trust_torchscript=trust_torchscript)(sample.contiguous().numpy())


def download_stem(run_id: str, chain) -> str:
    """'ordercomp-<run id>-<method>-<method>...': what an export's downloads are named after."""
    return "-".join(["ordercomp", run_id, *chain])


def download_name(run_id: str, chain, filename: str) -> str:
    """What a downloaded file is called: the run, the chain and the format, so that two runs' files never collide,
    e.g. 'ordercomp-3f9a1c0b2d4e-distill-prune.int8.onnx' for 'model.int8.onnx'."""
    return download_stem(run_id, chain) + (filename.removeprefix("model") if filename.startswith("model.") else "." + filename)


def export_zip(out_dir, folder_name: str | None = None) -> bytes:
    """The exported files and manifest as a zip archive, under one folder (`folder_name`, else the export
    folder's name; the Export page gives `download_stem(run, chain)`), e.g. for a browser download.
    The files keep the names the manifest's checksums give them, so `verify_export` checks the unpacked folder;
    other files in the folder are not ordercomp's to hand out."""
    out = Path(out_dir)
    names = [name for name in read_manifest(out)["files"] + [MANIFEST] if folder_file(out, name)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(names):
            archive.write(out / name, f"{folder_name or out.name}/{name}")
    return buffer.getvalue()


def export_verdict(manifest: dict, verify: dict) -> dict:
    """The Export page's verdict, computed from its rows: {"ok", "problems": {format: [what failed]}, "text"}.
    A row is good when its file was built, loads back and runs (`verify`), matches its checksum, passed its
    check against PyTorch (float formats: every logit within the tolerance; int8 ONNX: top-1 agreement and
    accuracy, `check_int8`) and was measured in its runtime; `ok` only when every row is."""
    problems = {entry["format"]: row_problems(entry, verify) for entry in manifest["formats"]}
    bad = {fmt: items for fmt, items in problems.items() if items}
    if not bad:
        text = (f"All {len(problems)} files load back, run, match their checksums and pass their checks on the whole test split.")
    else:
        text = (f"{len(problems) - len(bad)} of {len(problems)} files load back, run, match their checksums and pass their checks; "
                + "; ".join(f"{fmt}: {', '.join(items)}" for fmt, items in bad.items()) + ".")
    return {"ok": not bad, "problems": problems, "text": text}


def row_problems(entry: dict, verify: dict) -> list[str]:
    """What keeps one format's row from being good (empty when nothing does)."""
    if "error" in entry:
        return [entry["error"]]
    problems, loaded = [], verify["loads"].get(entry["format"], {})
    if not verify["checksums"].get(entry["file"], False):
        problems.append("checksum differs")
    if "error" in loaded or "skipped" in loaded:
        problems.append(f"does not load back ({loaded.get('error') or loaded['skipped']})")
    check = entry.get("check")
    if check is not None and not check["passed"]:
        problems.append(check_text(check))
    if "error" in (entry.get("measured") or {}):
        problems.append(f"not measured: {entry['measured']['error']}")
    return problems


def export_caveat(manifest: dict) -> str:
    """`figures.busy_caveat` over every file the export timed (or took the exploration's timing of): the Export page's
    table and `export_summary` end with it."""
    timed = [entry for entry in manifest["formats"] if "latency_ms" in (entry.get("measured") or {})]
    return busy_caveat([entry["measured"].get("load") for entry in timed], side_by_side=any(entry.get("speedup") for entry in timed))


def export_summary(manifest: dict) -> list[str]:
    """One line per format: real file size against the reported storage, accuracy and speed-ups in its runtime, worded
    as the Export page and the headline word them (`report.figures`): '1.08× slower', not '0.92x faster'; '0.0592 ms';
    then, when the files were timed on a busy machine, the sentence that says so (`export_caveat`)."""
    reported, lines = manifest.get("reported_storage_bytes"), []
    for entry in manifest["formats"]:
        if "error" in entry:
            lines.append(f"{entry['format']}: {entry['error']}")
            continue
        line = f"{entry['format']}: {entry['file']} {size_text(entry['size_bytes'])}"
        if reported:
            line += f" ({entry['size_bytes'] / reported:.2f}x the reported {size_text(reported)})"
        if "check" in entry:
            line += f"; {check_text(entry['check'])}"
        if entry.get("load_after"):
            line += f"; load it after {'; '.join(entry['load_after'])} (its int8 graph calls the operators that registers)"
        measured = entry.get("measured")
        if measured and "error" in measured:
            line += f"; not measured: {measured['error']}"
        elif measured:
            times = ", ".join(f"batch {b} {latency_text(t)}" for b, t in measured["latency_ms"].items())
            line += f"; {measured['runtime']}: accuracy {accuracy_text(measured['accuracy'])}, {times}"
            if entry.get("speedup"):
                base = entry["base_measured"]
                line += (f"; base {accuracy_text(base['accuracy'])}, "
                         + ", ".join(f"{speed_text(s)} at batch {b}" for b, s in entry["speedup"].items()))
        lines.append(line)
    return lines + [caveat for caveat in [export_caveat(manifest)] if caveat]


def check_text(check: dict) -> str:
    """The check against PyTorch in a few words, with its figures."""
    if "error" in check:
        return f"check could not run the file: {check['error']}"
    verdict = "passed" if check["passed"] else "FAILED"
    if "reference_accuracy" in check:
        floor = check.get("input_rounding_agreement")
        return (f"check against the {check['against']} on {check['images']} test images {verdict}: top-1 agreement "
                f"{100 * check['argmax_agreement']:.1f}%" + (f" (the float model with only its input rounded to 8 bits: {100 * floor:.1f}%)"
                                                              if floor is not None else "")
                + f", accuracy {check['accuracy']:.2f}% vs {check['reference_accuracy']:.2f}%, largest logit difference {check['max_abs_diff']:.3g}")
    beyond = check.get("images_beyond_tolerance")
    return (f"check against PyTorch on {check['images']} test images {verdict}: largest logit difference "
            f"{check['max_abs_diff']:.1e} (tolerance {check['tolerance']:.1e}"
            + (f"; {beyond} image(s) beyond it, {check['allowed_beyond_tolerance']} allowed" if beyond else "")
            + (f"; {borderline} image(s) at an exit's threshold, held to either exit" if (borderline := check.get("images_at_exit_threshold")) else "")
            + f"), top-1 agreement {100 * check['argmax_agreement']:.1f}%")


def print_export(manifest: dict) -> None:
    print(f"\nexported files ({manifest['threads']} threads):")
    for line in export_summary(manifest):
        print("  " + line)
