"""Numbers, names and user-supplied text as the pages print them.

Streamlit renders markdown in almost every element (st.markdown, st.caption, st.error, headers):
text a user supplied (job ids from the URL, file and folder names, class names, error messages
that quote them) goes through `md` or `code` so it shows as typed and never as links, images,
emphasis, colour directives or maths.

Escaping is not enough for bare URLs, www. names and e-mail addresses: Streamlit's markdown (remark-gfm) links them in
a pass over the parsed text, after the escapes are undone. `md` puts an invisible word joiner (U+2060) where that
pass would start a link (after http/https/www, before @), so the text reads the same and is never a link.
"""
from __future__ import annotations

import re

FORMAT_LABELS = {"torchscript": "TorchScript", "pt2": "torch.export (.pt2)", "onnx": "ONNX (checked in onnxruntime)",
                 "onnx_int8": "int8 ONNX (onnxruntime)", "packed": "packed low-bit (safetensors)",
                 "state_dict": "state dict", "manifest": "manifest (JSON)"}


MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:^=&])")
AUTOLINK_STARTS = re.compile(r"(https?(?=:)|www(?=\.))|(?=@)", re.IGNORECASE)  # where remark-gfm's bare-link pass matches
WORD_JOINER = "\u2060"  # invisible, no line break: splits what the autolink pass would read as one link


def md(text: object) -> str:
    """`text` as markdown that shows exactly `text`, on one line: every markdown character escaped, and a word joiner
    wherever a bare URL, www. name or e-mail address would otherwise be linked."""
    line = AUTOLINK_STARTS.sub(lambda m: (m.group(1) or "") + WORD_JOINER, " ".join(str(text).splitlines()))
    return MARKDOWN_SPECIALS.sub(r"\\\1", line)


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
