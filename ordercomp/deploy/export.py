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
from ..errors import one_line
from ..folders import MIB, FolderKind, check_destination, sha256, write_folder
from ..methods.early_exit import ConditionalExits, EarlyExitNet, StaticExitSelect
from ..methods.int8 import MAX_BATCH
from .onnx_int8 import CannotBuild, deployable_float, quantize_onnx
from .packed import PackError, write_packed
from .runtimes import BATCHES, THREADS, RuntimeMissing, latency_ms, load_runner, measure_file, runtime_name
from ..models.zoo import ARCHITECTURES, create_model

MANIFEST = "manifest.json"
MARKER = ".ordercomp-export"
CHECK_IMAGES = 16
CHECK_TOLERANCE = 1e-3
INT8_AGREEMENT = 0.99        # top-1 agreement of the int8 file with its float model, over the whole test split
INT8_ACCURACY_POINTS = 0.5   # and their accuracies at most this far apart
CHECK_BATCH = 256
CALIBRATION_IMAGES = 256
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def exportable(model: nn.Module) -> nn.Module:
    """The model in eval mode, without data-dependent control flow (early exits select statically)."""
    model = model.eval()
    return StaticExitSelect(model).eval() if isinstance(model, EarlyExitNet) else model


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
        traced = torch.jit.trace(src.program, src.sample, check_trace=False)
    traced.save(str(path))
    return {}


def write_pt2(src: Sources, path: Path) -> dict:
    exported = torch.export.export(src.program, (src.sample,), dynamic_shapes=_batch_dim())
    torch.export.save(exported, str(path))
    return {}


def write_state_dict(src: Sources, path: Path) -> dict:
    state = {name: tensor.detach().cpu().clone() for name, tensor in src.model.state_dict().items()}
    torch.save(state, path)
    return {"tensors": len(state)}


def write_onnx(src: Sources, path: Path) -> dict:
    """Float ONNX; with early exits, an If after each exit head stops the run once the batch is confident
    (every exit computed, as a fallback, when the exporter cannot express that)."""
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
        return {"exporter": "dynamo"}
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
        return {"exporter": "legacy", "dynamo_error": one_line(dynamo_error)}


def check_program(name: str, path: Path, program: nn.Module, images: torch.Tensor) -> dict:
    """The written file, loaded back, against PyTorch on the same images: it passes when no logit differs by
    more than the tolerance; argmax agreement is recorded too."""
    try:
        got = run_program(name, path, images, trust_torchscript=True)  # the file was written a moment ago by this process
    except Exception as error:  # loaders and onnxruntime raise their own error types for files they cannot run
        return {"images": len(images), "passed": False, "error": one_line(error)}
    with torch.no_grad():
        expected = program(images).numpy()
    diff = float(np.abs(got - expected).max())
    tolerance = CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    return {"images": len(images), "max_abs_diff": diff, "tolerance": tolerance, "argmax_agreement": agreement, "passed": diff <= tolerance}


def check_int8(path: Path, reference: nn.Module, data: DataBundle) -> dict:
    """The int8 ONNX file against the deployable float model it was quantised from, on the whole test split.
    Its activations are re-quantised to 8 bits, so logits move (recorded: the largest difference); it passes
    when its top-1 agrees on at least INT8_AGREEMENT of the images and its accuracy is within
    INT8_ACCURACY_POINTS of the float model's."""
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
    passed = agreement >= INT8_AGREEMENT and abs(accuracy - reference_accuracy) <= INT8_ACCURACY_POINTS
    return {"images": len(images), "against": "deployable float model", "argmax_agreement": agreement,
            "accuracy": accuracy, "reference_accuracy": reference_accuracy, "max_abs_diff": float(np.abs(got - expected).max()),
            "min_agreement": INT8_AGREEMENT, "max_accuracy_points": INT8_ACCURACY_POINTS, "passed": passed}


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


def check_formats(formats) -> list[str]:
    names = [name.strip() for name in formats if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def legacy_checksums(folder: Path) -> dict[str, str]:
    """An export folder written before markers held checksums: the model files by the manifest's checksums,
    the manifest itself when it is exactly as ordercomp writes one (its JSON written back unchanged)."""
    try:
        text = (folder / MANIFEST).read_text()
        manifest = json.loads(text)
        recorded = {name: digest for name, digest in manifest["sha256"].items() if isinstance(digest, str)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no manifest, or not one of ours
        return {}
    if json.dumps(manifest, indent=1, default=str) == text:
        recorded[MANIFEST] = hashlib.sha256(text.encode()).hexdigest()
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


def check_export_folder(out, formats=DEFAULT_FORMATS, need_bytes: int = 0) -> None:
    """Refuse, before any work, an export folder ordercomp cannot write the `formats` into (or with less
    than `need_bytes` free), or that holds files ordercomp did not write."""
    names = [FORMATS[name][0] for name in check_formats(formats)] + [MANIFEST]
    check_destination(Path(out), EXPORT_FOLDER, names, need_bytes)


def write_format(name: str, src: Sources, folder: Path) -> dict:
    """Write one format; an exporter error becomes a one-line entry, a file-system error propagates."""
    filename, writer = FORMATS[name]
    try:
        with warnings.catch_warnings():
            # deprecation notices and tracer remarks; the check below runs every written file instead
            warnings.simplefilter("ignore")
            details = writer(src, folder / filename)
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
        entry["check"] = check_program(name, folder / entry["file"], src.program, data.test.tensors[0][:CHECK_IMAGES].contiguous())
    return entry


def deployed_latency(model: nn.Module, data: DataBundle, fmt: str, *, threads: int = 1, repeats: int = 20) -> dict:
    """Batch-1 and batch-32 latency (ms) of `model` written as `fmt` and run in that format's runtime:
    what the step would cost where it ships. A form that cannot be built raises CannotBuild."""
    with tempfile.TemporaryDirectory() as temp:
        entry = write_format(fmt, Sources.of(model, data), Path(temp))
        if "error" in entry:
            raise CannotBuild(f"cannot be built as {fmt}: {entry['error']}")
        run = load_runner(fmt, Path(temp) / entry["file"], threads, trust_torchscript=True)  # written just now
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return {"latency_ms_b1": latency_ms(run, data, 1, repeats), "latency_ms_batch": latency_ms(run, data, BATCHES[-1], repeats)}
        finally:
            torch.set_num_threads(previous)


def measure_entry(entry: dict, folder: Path, data: DataBundle, base: "BaseRuns | None", timing: dict) -> dict:
    """The written file's accuracy and latency in its runtime, the base's beside it, and their ratios."""
    try:
        entry["measured"] = measure_file(entry["format"], folder / entry["file"], data, trust_torchscript=True, **timing)  # written just now
    except RuntimeMissing as reason:
        entry["measured"] = {"runtime": runtime_name(entry["format"]), "error": str(reason)}
        return entry
    except Exception as error:  # a runtime that cannot run a file raises its own error types
        entry["measured"] = {"runtime": runtime_name(entry["format"]), "error": one_line(error)}
        return entry
    if base is not None:
        reference = base.measure(entry["format"])
        entry["base_measured"] = reference
        if "latency_ms" in reference:
            entry["speedup"] = {b: reference["latency_ms"][b] / t for b, t in entry["measured"]["latency_ms"].items()}
    return entry


class BaseRuns:
    """The base model written and measured once per runtime, in a folder of its own."""

    def __init__(self, model: nn.Module, data: DataBundle, folder: Path, timing: dict):
        self.src, self.data, self.folder, self.timing, self.done = Sources.of(model, data), data, folder, timing, {}

    def measure(self, fmt: str) -> dict:
        fmt = BASE_FORMAT.get(fmt, fmt)
        if fmt not in self.done:
            entry = write_format(fmt, self.src, self.folder)
            if "error" in entry:
                self.done[fmt] = {"format": fmt, "error": entry["error"]}
            else:
                try:
                    self.done[fmt] = {"format": fmt, "size_bytes": entry["size_bytes"],
                                      **measure_file(fmt, self.folder / entry["file"], self.data, trust_torchscript=True, **self.timing)}
                except Exception as error:  # runtimes raise their own error types
                    self.done[fmt] = {"format": fmt, "error": one_line(error)}
        return self.done[fmt]


def export_compressed(model: nn.Module, out_dir, *, formats=DEFAULT_FORMATS, chain, configs: dict, metrics: dict,
                      data: DataBundle, base: dict, base_model: nn.Module | None = None, measure: bool = True,
                      repeats: int = 20, threads: int = THREADS) -> dict:
    """Write `model` in every requested format plus manifest.json into `out_dir`; return the manifest.
    With `measure`, every program file is timed in its runtime, next to `base_model` when given."""
    names, out = check_formats(formats), Path(out_dir)
    check_export_folder(out, names)
    src = Sources.of(model, data)
    def write(folder: Path) -> dict:
        entries = [export_format(name, src, data, folder) for name in names]
        if measure:
            timing = {"repeats": repeats, "threads": threads}
            with tempfile.TemporaryDirectory(prefix="ordercomp-base-") as base_folder:
                base_runs = BaseRuns(base_model, data, Path(base_folder), timing) if base_model is not None else None
                entries = [measure_entry(e, folder, data, base_runs, timing) if "file" in e and e["format"] in PROGRAM_FORMATS else e
                           for e in entries]
        manifest = describe(folder, entries, chain=chain, configs=configs, metrics=metrics, data=data, base=base)
        manifest["threads"] = threads
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
        return manifest

    return write_folder(out, EXPORT_FOLDER, write)


def describe(folder: Path, entries: list[dict], *, chain, configs, metrics, data: DataBundle, base: dict) -> dict:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return {"chain": list(chain), "configs": configs, "metrics": metrics, "data": data.describe(),
            "preprocessing": data.preprocessing, "base": {k: v for k, v in base.items() if k != "card"},
            "input_shape": ["batch", data.in_channels, data.input_size, data.input_size],
            "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files, "sha256": {name: sha256(folder / name) for name in files}, "formats": entries,
            "reported_storage_bytes": metrics.get("size_bytes"), "batches": list(BATCHES)}


def read_manifest(out_dir) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{out_dir} holds no {MANIFEST}: give a folder written by export_compressed")
    return json.loads(path.read_text())


def verify_export(out_dir, *, trust_torchscript: bool = False) -> dict:
    """Re-compute every checksum and load every program file back, running it on a sample input.
    TorchScript runs code from the file, so it is only run when the caller trusts the folder."""
    out, manifest = Path(out_dir), read_manifest(out_dir)
    checksums = {name: (out / name).is_file() and sha256(out / name) == digest for name, digest in manifest["sha256"].items()}
    channels, height, width = manifest["input_shape"][1:]
    sample = torch.randn(2, channels, height, width, generator=torch.Generator().manual_seed(0))
    loads = {entry["format"]: load_and_run(entry["format"], out / entry["file"], sample, trust_torchscript)
             for entry in manifest["formats"] if "file" in entry}
    return {"checksums": checksums, "loads": loads,
            "ok": all(checksums.values()) and all("error" not in result for result in loads.values())}


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


def export_zip(out_dir) -> bytes:
    """The exported files and manifest as a zip archive (under the folder's name), e.g. for a browser download;
    other files in the folder are not ordercomp's to hand out."""
    out = Path(out_dir)
    names = [name for name in read_manifest(out)["files"] + [MANIFEST] if Path(name).name == name]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(names):
            archive.write(out / name, f"{out.name}/{name}")
    return buffer.getvalue()


def export_summary(manifest: dict) -> list[str]:
    """One line per format: real file size against the reported storage, accuracy and speed-ups in its runtime."""
    reported, lines = manifest.get("reported_storage_bytes"), []
    for entry in manifest["formats"]:
        if "error" in entry:
            lines.append(f"{entry['format']}: {entry['error']}")
            continue
        line = f"{entry['format']}: {entry['file']} {entry['size_bytes'] / 1024:.1f} KiB"
        if reported:
            line += f" ({entry['size_bytes'] / reported:.2f}x the reported {reported / 1024:.1f} KiB)"
        if "check" in entry:
            line += f"; {check_text(entry['check'])}"
        measured = entry.get("measured")
        if measured and "error" in measured:
            line += f"; not measured: {measured['error']}"
        elif measured:
            times = ", ".join(f"batch {b} {t:.2f} ms" for b, t in measured["latency_ms"].items())
            line += f"; {measured['runtime']}: accuracy {measured['accuracy']:.2f}%, {times}"
            if entry.get("speedup"):
                base = entry["base_measured"]
                line += f"; base {base['accuracy']:.2f}%, " + ", ".join(f"{s:.2f}x faster at batch {b}" for b, s in entry["speedup"].items())
        lines.append(line)
    return lines


def check_text(check: dict) -> str:
    """The check against PyTorch in a few words, with its figures."""
    if "error" in check:
        return f"check could not run the file: {check['error']}"
    verdict = "passed" if check["passed"] else "FAILED"
    if "against" in check:
        return (f"check against the {check['against']} on {check['images']} test images {verdict}: top-1 agreement "
                f"{100 * check['argmax_agreement']:.1f}%, accuracy {check['accuracy']:.2f}% vs {check['reference_accuracy']:.2f}%, "
                f"largest logit difference {check['max_abs_diff']:.3g}")
    return f"check against PyTorch {verdict} (largest logit difference {check['max_abs_diff']:.1e})"


def print_export(manifest: dict) -> None:
    print(f"\nexported files ({manifest['threads']} threads):")
    for line in export_summary(manifest):
        print("  " + line)
