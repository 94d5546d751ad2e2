"""What several test modules share: crafted files for the refusal tests, the small exploration
setting, fewer images per split, the user's class the tests load by path, waiting on a condition (never on a fixed
interval), and record text holding markup with the texts of a chart to look for it in.

A plain module: pytest puts tests/ on sys.path (rootdir conftest, no __init__.py), so test modules
in tests/ and its sub-folders import it as `testkit`.
"""
from __future__ import annotations

import copy
import io
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from torch.utils.data import TensorDataset

from ordercomp.train import Budget

# A job in a worker process takes seconds on an idle machine but minutes on a 2-core machine shared
# with a dozen busy processes (measured: 215 s for one tiny exploration at load average 20), so the
# waits on workers are generous, and still finite.
WORKER_S = 900

# An exploration small enough for a test: the zoo's cnn_tiny and a fifth of an epoch of fine-tuning per step, and no
# shipped file (writing the chain and the base as ONNX and timing them takes seconds; test_shipped.py tests it).
FAST = dict(model="cnn_tiny", budget=Budget(epochs=0.2), device="cpu", ship=None)

# Methods that apply to transformers only (a CNN's steps report them incompatible): the tests that apply every
# method to a CNN leave them out, and test_vit.py checks that a CNN gets their one-line reason.
TRANSFORMER_ONLY = ("token_merge",)

# A user's own class as a file, by absolute path: every test runs in a working folder of its own.
MY_NET = Path(__file__).resolve().parent / "user_models" / "my_net.py"
TIED_NET = Path(__file__).resolve().parent / "user_models" / "tied_net.py"
NORM_NET = Path(__file__).resolve().parent / "user_models" / "norm_net.py"


def fewer(data, train: int = 256, held_out: int = 359):
    """The data with `train` training images (fine-tuning in seconds) and `held_out` validation and test images (359:
    all of the digits')."""
    few = copy.copy(data)
    for name, count in (("train", train), ("val", held_out), ("test", held_out)):
        setattr(few, name, TensorDataset(*(t[:count] for t in getattr(data, name).tensors)))
    return few


def holding(base: Path, folder: Path) -> Path:
    """`folder` (made if missing) with a copy of a trained base's cache file in it (conftest's `fast_base`), so an
    exploration whose cache it is trains no base of its own."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(base, folder / base.name)
    return folder


def wait_for(condition, what: str, timeout: float = 60.0, interval: float = 0.02):
    """Poll `condition` until it returns something truthy and return that; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Payload:
    """Unpickling this runs `touch marker`: no loader may ever do it (the marker file tells)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def png() -> bytes:
    """A 4x4 grey PNG."""
    buffer = io.BytesIO()
    Image.new("L", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


def zip_of(files: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    """A zip archive holding `files` (name -> content)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def plan_work(explorer, base, step, cache, events):
    """The executors' Work for `explorer`'s data and device, its steps cached under readable keys ('prune-quantize.0')."""
    from ordercomp.exploration.executors import Work
    key = lambda chain, seed: f"{'-'.join(chain)}.{seed}"
    return Work(base, explorer.data, step, key, cache, explorer.device, events)


MARKUP = '<a href="https://example.com">x</a>'  # plotly draws <a href="..."> in any text, hover text, title or tick label as a link


def figure_texts(value) -> list[str]:
    """Every text in a plotly figure's JSON (`fig.to_plotly_json()`, or a chart's spec read back): its values, keys and
    the items of its arrays (customdata is a numpy array)."""
    value = value.tolist() if hasattr(value, "tolist") else value
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in figure_texts(key) + figure_texts(item)]
    if isinstance(value, (list, tuple)):
        return [text for item in value for text in figure_texts(item)]
    return [value] if isinstance(value, str) else []
