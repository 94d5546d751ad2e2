"""Write a compressed model to a folder as TorchScript, torch.export (.pt2), ONNX and a state dict.

Every file goes into a staging folder and reaches the destination only when all of it is written,
so a failure midway never leaves half an export; an earlier export's files are replaced, and any
other file in the folder is kept (a folder of someone else's files is refused, see `folders.py`). A format that cannot represent a model
(an exporter error) is recorded in `manifest.json` instead of stopping the others. Every program
file is loaded back (the ONNX one in onnxruntime) and checked against PyTorch on a few test images.

    manifest = export_compressed(outcome.model, "out/", chain=chain, configs=outcome.configs,
                                 metrics=outcome.steps[-1].metrics, data=outcome.data, base=outcome.source)
    verify_export("out/")
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import time
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoints import load_program, read_state_dict
from .data import DataBundle
from .folders import check_writable, staged
from .methods.early_exit import EarlyExitNet, StaticExitSelect
from .methods.int8 import MAX_BATCH

MANIFEST = "manifest.json"
MARKER = ".ordercomp-export"
CHECK_IMAGES = 16
CHECK_TOLERANCE = 1e-3
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def exportable(model: nn.Module) -> nn.Module:
    """The model in eval mode, without data-dependent control flow (early exits select statically)."""
    model = model.eval()
    return StaticExitSelect(model).eval() if isinstance(model, EarlyExitNet) else model


def _batch_dim():
    # int8 parts are exported for batches up to MAX_BATCH, so the whole model cannot promise more.
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def write_torchscript(program: nn.Module, sample: torch.Tensor, path: Path) -> dict:
    with torch.no_grad():
        traced = torch.jit.trace(program, sample, check_trace=False)
    traced.save(str(path))
    return {}


def write_pt2(program: nn.Module, sample: torch.Tensor, path: Path) -> dict:
    exported = torch.export.export(program, (sample,), dynamic_shapes=_batch_dim())
    torch.export.save(exported, str(path))
    return {}


def write_state_dict(program: nn.Module, sample: torch.Tensor, path: Path) -> dict:
    state = {name: tensor.detach().cpu().clone() for name, tensor in _plain_model(program).state_dict().items()}
    torch.save(state, path)
    return {"tensors": len(state)}


def _plain_model(program: nn.Module) -> nn.Module:
    """The model itself, so state-dict keys match it rather than the export wrapper."""
    return program.model if isinstance(program, StaticExitSelect) else program


def write_onnx(program: nn.Module, sample: torch.Tensor, path: Path) -> dict:
    """The dynamo exporter, or the legacy TorchScript-based one when dynamo cannot export the model."""
    try:
        onnx_program = torch.onnx.export(program, (sample,), dynamo=True, dynamic_shapes=_batch_dim(), verbose=False,
                                         input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
        onnx_program.save(str(path))
        return {"exporter": "dynamo"}
    except OSError:
        raise
    except Exception as dynamo_error:  # the dynamo exporter raises many error types
        try:
            torch.onnx.export(program, (sample,), str(path), dynamo=False, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        except OSError:
            raise
        except Exception as legacy_error:
            raise RuntimeError(f"dynamo exporter: {one_line(dynamo_error)}; legacy exporter: {one_line(legacy_error)}") from None
        return {"exporter": "legacy", "dynamo_error": one_line(dynamo_error)}


def check_program(name: str, path: Path, program: nn.Module, images: torch.Tensor) -> dict:
    """The written file, loaded back, against PyTorch on the same images: largest logit difference and argmax agreement."""
    try:
        got = run_program(name, path, images, trust_torchscript=True)  # the file was written a moment ago by this process
    except Exception as error:  # loaders and onnxruntime raise their own error types for files they cannot run
        return {"images": len(images), "passed": False, "error": one_line(error)}
    with torch.no_grad():
        expected = program(images).numpy()
    diff = float(np.abs(got - expected).max())
    tolerance = CHECK_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    return {"images": len(images), "max_abs_diff": diff, "tolerance": tolerance,
            "argmax_agreement": float((got.argmax(1) == expected.argmax(1)).mean()), "passed": diff <= tolerance}


Writer = Callable[[nn.Module, torch.Tensor, Path], dict]
FORMATS: dict[str, tuple[str, Writer]] = {
    "torchscript": ("model.torchscript.pt", write_torchscript),
    "pt2": ("model.pt2", write_pt2),
    "onnx": ("model.onnx", write_onnx),
    "state_dict": ("model.state_dict.pt", write_state_dict),
}
DEFAULT_FORMATS = tuple(FORMATS)
PROGRAM_FORMATS = ("torchscript", "pt2", "onnx")


def one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:300]}" if lines else type(error).__name__


def check_formats(formats) -> list[str]:
    names = [name.strip() for name in formats if name.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise ValueError(f"unknown export format(s) {', '.join(unknown) or '(none given)'}: choose from {', '.join(FORMATS)}")
    return list(dict.fromkeys(names))


def earlier_export_files(out: Path) -> list[str]:
    """The files an earlier export wrote into `out`, by its manifest (none when there is no readable manifest)."""
    try:
        files = json.loads((Path(out) / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [name for name in files if isinstance(name, str)] + [MANIFEST, MARKER]


def check_export_folder(out) -> None:
    """Refuse, before any work, an export folder that holds files ordercomp did not write."""
    check_writable(Path(out), MARKER, "export", own=earlier_export_files(out))


def export_format(name: str, program: nn.Module, images: torch.Tensor, folder: Path) -> dict:
    """Write one format; an exporter error becomes a manifest entry, a file-system error propagates."""
    filename, writer = FORMATS[name]
    try:
        with warnings.catch_warnings():
            # deprecation notices and tracer remarks; the check below runs every written file instead
            warnings.simplefilter("ignore")
            details = writer(program, images[:2], folder / filename)
    except OSError:
        raise
    except Exception as error:  # exporters raise many error types for a model they cannot represent
        (folder / filename).unlink(missing_ok=True)
        return {"format": name, "error": one_line(error)}
    entry = {"format": name, "file": filename, **details}
    if name in PROGRAM_FORMATS:
        entry["check"] = check_program(name, folder / filename, program, images)
    return entry


def export_compressed(model: nn.Module, out_dir, *, formats=DEFAULT_FORMATS, chain, configs: dict, metrics: dict,
                      data: DataBundle, base: dict) -> dict:
    """Write `model` in every requested format plus manifest.json into `out_dir`; return the manifest."""
    names, out = check_formats(formats), Path(out_dir)
    earlier = earlier_export_files(out)
    program = exportable(copy.deepcopy(model).cpu())
    images = data.test.tensors[0][:CHECK_IMAGES].contiguous()
    with staged(out, MARKER, "export", own=earlier, stale=earlier) as temp:
        entries = [export_format(name, program, images, temp) for name in names]
        manifest = describe(temp, entries, chain=chain, configs=configs, metrics=metrics, data=data, base=base)
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return manifest


def describe(folder: Path, entries: list[dict], *, chain, configs, metrics, data: DataBundle, base: dict) -> dict:
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != MARKER)
    return {"chain": list(chain), "configs": configs, "metrics": metrics, "data": data.describe(),
            "base": {k: v for k, v in base.items() if k != "card"},
            "input_shape": ["batch", data.in_channels, data.input_size, data.input_size],
            "torch_version": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": files, "sha256": {name: sha256(folder / name) for name in files}, "formats": entries}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if name == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: sample.numpy()})[0]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but still the way to read TorchScript
        return load_program(path, trust_torchscript=trust_torchscript)(sample).numpy()


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
