"""Numbers, names and user-supplied text as the pages print them.

Streamlit renders markdown in almost every element (st.markdown, st.caption, st.error, headers):
text a user supplied (job ids from the URL, file and folder names, class names, error messages
that quote them) goes through `md` or `code` so it shows as typed and never as links, images,
emphasis, colour directives or maths.
"""
from __future__ import annotations

import re

FORMAT_LABELS = {"torchscript": "TorchScript", "pt2": "torch.export (.pt2)", "onnx": "ONNX (checked in onnxruntime)",
                 "onnx_int8": "int8 ONNX (onnxruntime)", "packed": "packed low-bit (safetensors)",
                 "state_dict": "state dict", "manifest": "manifest (JSON)"}


MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:^=&])")


def md(text: object) -> str:
    """`text` as markdown that shows exactly `text`, on one line: every markdown character escaped."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).splitlines()))


def code(text: object) -> str:
    """`text` as an inline code span (shown literally), fenced by more backticks than it holds."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence} {text} {fence}" if "`" in text else f"`{text}`"


def si(value: float | None, unit: str = "") -> str:
    """3 significant digits with a k/M/G/T prefix: 3040083968 -> '3.04 G'."""
    if value is None:
        return "n/a"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}".strip()


def device_label() -> str:
    import torch

    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    return "CPU (no CUDA GPU found)"
