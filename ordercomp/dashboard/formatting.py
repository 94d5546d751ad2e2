"""Numbers and names as the pages print them."""
from __future__ import annotations

FORMAT_LABELS = {"torchscript": "TorchScript", "pt2": "torch.export (.pt2)", "onnx": "ONNX (checked in onnxruntime)",
                 "state_dict": "state dict", "manifest": "manifest (JSON)"}


def si(value: float | None, unit: str = "") -> str:
    """3 significant digits with a k/M/G/T prefix: 3040083968 -> '3.04 G'."""
    if value is None:
        return "n/a"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def human_bytes(value: float) -> str:
    for prefix, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}"
    return f"{value:.0f} B"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    return "CPU (no CUDA GPU found)"
