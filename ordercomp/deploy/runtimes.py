"""Run and time every exported artifact in its own runtime, next to the base model in the same one.

Each format names the runtime that ships it: onnxruntime for the ONNX files (the int8 one runs its
integer kernels), Inductor for the .pt2 program, TorchScript, and ordercomp's packed loader (PyTorch
eager, early exits stop at run time). `measure_file` gives accuracy on the test split and median
latency at batch 1 and 32 with a fixed number of threads (at least 0.25 s of calls each); a runtime
that is not installed raises `RuntimeMissing` with one line saying what to install.
"""
from __future__ import annotations

import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..models.checkpoints import load_program
from ..data.datasets import DataBundle
from ..models.programs import exported_module

THREADS = 2
BATCHES = (1, 32)
WARMUP_S, MIN_TIMED_S = 0.1, 0.25
Runner = Callable[[np.ndarray], np.ndarray]

RUNTIME_NAMES = {
    "onnx": "onnxruntime (CPU)", "onnx_int8": "onnxruntime (CPU, int8 QDQ kernels)", "torchscript": "TorchScript",
    "pt2": "torch.export + Inductor (freezing)", "packed": "ordercomp packed loader (PyTorch eager)",
}


class RuntimeMissing(RuntimeError):
    """The runtime an artifact needs is not installed here."""


def runtime_name(fmt: str) -> str:
    return RUNTIME_NAMES[fmt]


def require_onnxruntime() -> None:
    """A ValueError saying what to install when onnxruntime is missing (checked before any work)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ValueError("the ONNX runtimes need onnxruntime, which is not installed: pip install onnxruntime, "
                         "or measure latency with --runtime eager") from None


def onnx_session(path: Path, threads: int = THREADS):
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissing("onnxruntime is not installed: pip install onnxruntime to build and run the ONNX artifacts") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_runner(fmt: str, path: Path, threads: int = THREADS, *, trust_torchscript: bool = False) -> Runner:
    """A function from images (N, C, H, W float32) to logits, running the file in its runtime
    (TorchScript only with `trust_torchscript`: running it runs code from the file)."""
    if fmt in ("onnx", "onnx_int8"):
        session = onnx_session(path, threads)
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x})[0]
    if fmt == "packed":
        from .packed import load_packed

        return _torch_runner(load_packed(path))
    if fmt == "pt2":
        return _inductor_runner(exported_module(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but still the way to read TorchScript
        return _torch_runner(load_program(path, trust_torchscript=trust_torchscript))


def _torch_runner(module: torch.nn.Module) -> Runner:
    module.eval()
    return _calls(module)


def _calls(module: torch.nn.Module) -> Runner:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


def _inductor_runner(module: torch.nn.Module) -> Runner:
    """Inductor with freezing: it lowers int8 quantise/dequantise patterns to integer kernels. An exported
    program runs in the mode it was exported in (eval) and refuses `eval()`, so none is asked of it."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _calls(torch.compile(module, dynamic=False))


def measure_runner(run: Runner, data: DataBundle, *, threads: int = THREADS, batches=BATCHES, repeats: int = 20) -> dict:
    """Accuracy (percent) on the test split and median latency (ms) per batch size."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return {"accuracy": accuracy(run, data), "latency_ms": {str(b): latency_ms(run, data, b, repeats) for b in batches}}
    finally:
        torch.set_num_threads(previous)


def accuracy(run: Runner, data: DataBundle, batch: int = 32) -> float:
    images, labels = data.test.tensors
    correct = 0
    for start in range(0, len(labels), batch):
        logits = run(images[start:start + batch].numpy())
        correct += int((logits.argmax(1) == labels[start:start + batch].numpy()).sum())
    return 100.0 * correct / len(labels)


def latency_ms(run: Runner, data: DataBundle, batch: int, repeats: int) -> float:
    """Median wall time of one call on `batch` test images: after WARMUP_S of calls (3 at least),
    `repeats` calls and MIN_TIMED_S of them at least. (Twenty calls of a 0.2 ms model took 4 ms in all,
    and the median moved by 20 % from one run to the next.)"""
    images = data.test.tensors[0]
    x = images[torch.arange(batch) % len(images)].numpy()
    _calls_for(run, x, WARMUP_S, 3)
    return statistics.median(_calls_for(run, x, MIN_TIMED_S, repeats))


def _calls_for(run: Runner, x: np.ndarray, seconds: float, at_least: int) -> list[float]:
    """Call `run(x)` for `seconds` and `at_least` times; each call's wall time in ms."""
    times, end = [], time.perf_counter() + seconds
    while len(times) < at_least or time.perf_counter() < end:
        start = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - start) * 1000)
    return times


def measure_file(fmt: str, path: Path, data: DataBundle, *, trust_torchscript: bool = False, **options) -> dict:
    """The artifact at `path` measured in its runtime (see `measure_runner` for the options)."""
    runner = load_runner(fmt, path, options.get("threads", THREADS), trust_torchscript=trust_torchscript)
    return {"runtime": runtime_name(fmt), **measure_runner(runner, data, **options)}
