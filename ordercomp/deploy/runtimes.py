"""Run and time every exported artifact in its own runtime, next to the base model in the same one.

Each format names the runtime that ships it: onnxruntime for the ONNX files (the int8 one runs its
integer kernels), Inductor for the .pt2 program, TorchScript, and ordercomp's packed loader (PyTorch
eager, early exits stop at run time). `measure_file` gives accuracy on the test split and median
latency at batch 1 and 32 with a fixed number of threads; a runtime that is not installed raises
`RuntimeMissing` with one line saying what to install.

Timing is after warm-up by calls and by time until the calls are stable (TorchScript's profiling
executor re-optimises during its first calls, and again for each new batch size: 100+ ms each), and a
file and the base it is compared with are timed in alternating rounds (`paired_latency_ms`), so both
see the same machine: on a busy machine a call with 2 threads waits for a descheduled thread, and a
base timed alone while another process held a core read 62.8 ms at batch 32 where its warmed-up
calls take 2.4 ms. A round is ROUND_CALLS calls of one runner in a row, not one: a runtime's threads
spin for a while after a call (onnxruntime's pool, OpenMP's), and a call of the other runner made
then shares the cores with them. Alternating call by call, the default sample's base ONNX file read
0.78-0.82 ms at batch 32 in some processes and 1.16-1.22 ms in others (0.69 ms timed alone); in
rounds of 10 calls, 0.73-0.74 ms in every one. Alternating rounds keep a ratio honest on a busy machine, not
an absolute time: the packed file read 7.29 ms at batch 1 at a load average of 7-8 on 2 cores against 0.45 ms idle,
so every measurement records the load it was timed under (`machine_load`) for the pages to say so.
"""
from __future__ import annotations

import logging
import os
import platform
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
WARMUP_CALLS, WARMUP_MAX_S = 20, 1.0  # at least this many warm-up calls; stop warming up after this long even if unstable
STABLE_ROUND, STABLE_RATIO = 5, 1.5   # warm until a round of 5 calls has a median within 1.5x of the best round's
ROUND_CALLS = 10  # calls of one runner in a row when two are timed in alternating rounds
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")  # what decides which kernels run
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


def onnx_session(path: Path, threads: int = THREADS, *, optimized_model: Path | None = None):
    """An onnxruntime CPU session with `threads` intra-op threads; with `optimized_model`, the graph it runs on
    this CPU (after fusion and channel-block layout) is written there too."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeMissing("onnxruntime is not installed: pip install onnxruntime to build and run the ONNX artifacts") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
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
    """`inductor_compiled`. An exported program runs in the mode it was exported in (eval) and refuses `eval()`, so
    none is asked of it."""
    return _calls(inductor_compiled(module))


def inductor_compiled(module: torch.nn.Module) -> torch.nn.Module:
    """The module compiled by Inductor with freezing, which lowers pt2e's int8 quantise/dequantise patterns to integer
    kernels. Shapes are static: this torch release's int8 conv lowering rejects the strides of a dynamic batch
    dimension (each new batch size compiles once)."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    if not torch.cuda.is_available():  # else torch logs "No CUDA runtime is found, using CUDA_HOME=…" beside the user's CPU timings
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.compile(module, dynamic=False)


def measure_runner(run: Runner, data: DataBundle, *, threads: int = THREADS, batches=BATCHES, repeats: int = 20) -> dict:
    """Accuracy (percent) on the test split, median latency (ms) per batch size and the load it was timed under."""
    with torch_threads(threads):
        figures = {"accuracy": accuracy(run, data)}
        start = load_average()
        figures["latency_ms"] = {str(b): latency_ms(run, data, b, repeats) for b in batches}
    return figures | {"load": machine_load(start)}


def measure_pair(run: Runner, base: Runner, data: DataBundle, *, threads: int = THREADS, batches=BATCHES,
                 repeats: int = 20) -> tuple[dict, dict]:
    """`measure_runner` of a file and of the base it is compared with, their latencies timed in alternating
    rounds (`paired_latency_ms`), so that a ratio of the two compares them on the same machine state; each with the
    load both were timed under."""
    with torch_threads(threads):
        figures = [{"accuracy": accuracy(runner, data), "latency_ms": {}} for runner in (run, base)]
        start = load_average()
        for b in batches:
            for record, ms in zip(figures, paired_latency_ms([run, base], data, b, repeats)):
                record["latency_ms"][str(b)] = ms
    load = machine_load(start)
    return figures[0] | {"load": load}, figures[1] | {"load": dict(load)}


class torch_threads:
    """Run a block with `threads` torch threads, then restore the previous count."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def __exit__(self, *exc):
        torch.set_num_threads(self.previous)


def accuracy(run: Runner, data: DataBundle, batch: int = 32) -> float:
    """Top-1 accuracy (percent) on the test split, every call on `batch` images: the last call is filled up with the
    split's first images, whose logits are dropped, so a runtime that compiles once per shape (Inductor's static
    shapes) compiles once here, for the batch size the latency is timed at as well."""
    images, labels = data.test.tensors
    correct = 0
    for start in range(0, len(labels), batch):
        indices = torch.arange(start, start + batch) % len(labels)
        logits = run(images[indices].numpy())[: min(batch, len(labels) - start)]
        correct += int((logits.argmax(1) == labels[start:start + batch].numpy()).sum())
    return 100.0 * correct / len(labels)


def timing_input(data: DataBundle, batch: int) -> np.ndarray:
    images = data.test.tensors[0]
    return images[torch.arange(batch) % len(images)].numpy()


def latency_ms(run: Runner, data: DataBundle, batch: int, repeats: int) -> float:
    """Median wall time of one call on `batch` test images, after `warm_up`: `repeats` calls and MIN_TIMED_S
    of them at least. (Twenty calls of a 0.2 ms model took 4 ms in all, and the median moved by 20 %
    from one run to the next.)"""
    return paired_latency_ms([run], data, batch, repeats)[0]


def paired_latency_ms(runs: list[Runner], data: DataBundle, batch: int, repeats: int) -> list[float]:
    """The median wall time of one call of each runner on `batch` test images: each warmed up (`warm_up`),
    then timed in alternating rounds of ROUND_CALLS calls of each (one runner's spinning threads idle again
    by the second call of the other's), for `repeats` calls and MIN_TIMED_S of wall time per runner at least."""
    x = timing_input(data, batch)
    for run in runs:
        warm_up(run, x)
    times: list[list[float]] = [[] for _ in runs]
    end = time.perf_counter() + MIN_TIMED_S * len(runs)
    while len(times[0]) < repeats or time.perf_counter() < end:
        for run, record in zip(runs, times):
            record.extend(_call_ms(run, x) for _ in range(ROUND_CALLS if len(runs) > 1 else 1))
    return [statistics.median(record) for record in times]


def warm_up(run: Runner, x: np.ndarray) -> int:
    """Call `run(x)` until it is warm: WARMUP_CALLS calls and WARMUP_S at least, and then until the last
    round of STABLE_ROUND calls has a median within STABLE_RATIO of the fastest round's (a runtime that
    still compiles or re-profiles is not stable), for WARMUP_MAX_S at most. Returns the calls made."""
    rounds, start = [], time.perf_counter()
    while True:
        rounds.append(statistics.median(_call_ms(run, x) for _ in range(STABLE_ROUND)))
        calls, spent = len(rounds) * STABLE_ROUND, time.perf_counter() - start
        if spent >= WARMUP_MAX_S or (calls >= WARMUP_CALLS and spent >= WARMUP_S and rounds[-1] <= STABLE_RATIO * min(rounds)):
            return calls


def _call_ms(run: Runner, x: np.ndarray) -> float:
    start = time.perf_counter()
    run(x)
    return (time.perf_counter() - start) * 1000


def cpu_description() -> dict:
    """The processor the latencies were measured on: its model name, logical cores and the instruction-set
    flags that decide which kernels the runtimes pick (AVX2, AVX-512, VNNI, AMX)."""
    info = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: the platform's own name
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    return {"model": info.get("model name") or platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
            "flags": [flag for flag in CPU_FLAGS if flag in flags]}


def load_average() -> float | None:
    """The 1-minute load average: processes running or waiting for a core, this one's timing threads included;
    None where the platform keeps none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine_load(start: float | None) -> dict:
    """How busy the machine was while a timing ran, from the load average at its `start` to now, beside the logical
    cores: a load above them means processes waited for a core, and absolute times read slow (`figures.busy_caveat`).
    Kept apart from `cpu_description`: a shipped measurement stays valid on the same CPU under another load."""
    return {"start": start, "end": load_average(), "logical_cores": os.cpu_count()}


def cpu_text(cpu: dict) -> str:
    """'AMD EPYC 7B13 (2 logical cores; avx2)'."""
    return f"{cpu['model']} ({cpu['logical_cores']} logical cores; {', '.join(cpu['flags']) or 'no AVX2'})"


def measure_file(fmt: str, path: Path, data: DataBundle, *, trust_torchscript: bool = False, **options) -> dict:
    """The artifact at `path` measured in its runtime (see `measure_runner` for the options)."""
    runner = load_runner(fmt, path, options.get("threads", THREADS), trust_torchscript=trust_torchscript)
    return {"runtime": runtime_name(fmt), **measure_runner(runner, data, **options)}
