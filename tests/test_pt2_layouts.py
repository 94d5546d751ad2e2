""".pt2 archives in the layouts older torch versions wrote are refused before torch reads them: torch still
loads them for compatibility, and both unpickle their weights. Nothing in them runs; the CLI says why in one line."""
from __future__ import annotations

import io
import os
import zipfile

import pytest
import torch

from ordercomp.models.checkpoints import CheckpointError, resolve_model
from ordercomp.cli import main


class Payload:
    """Unpickling this creates the marker file: no loader may ever do it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archive(tiny_model) -> bytes:
    """The tiny model as torch.export.save writes it now."""
    buffer = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(tiny_model.eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)), buffer)
    return buffer.getvalue()


def torch_27_archive(archive: bytes, marker) -> bytes:
    """The same program in the layout torch.export.save wrote up to torch 2.7 (top-level serialized_* files),
    its weights file replaced by a pickle that creates `marker`."""
    from torch._export.serde.schema import SCHEMA_VERSION

    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        program = source.read(next(name for name in source.namelist() if name.endswith("models/model.json")))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as old:
        old.writestr("version", ".".join(map(str, SCHEMA_VERSION)))
        old.writestr("serialized_exported_program.json", program)
        old.writestr("serialized_state_dict.pt", pickled(Payload(marker)))
        old.writestr("serialized_constants.pt", pickled({}))
        old.writestr("serialized_example_inputs.pt", pickled(((torch.zeros(2, 1, 8, 8),), {})))
    return buffer.getvalue()


def legacy_weights_archive(archive: bytes, marker) -> bytes:
    """The current archive also holding its weights in the legacy single-file layout (data/weights/model.pt),
    which torch's loader still prefers, and unpickles."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(out, "w") as target:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            target.writestr(info, source.read(info))
        target.writestr(f"{root}/data/weights/model.pt", pickled(Payload(marker)))
    return out.getvalue()


LAYOUTS = {"torch 2.7": torch_27_archive, "legacy weights": legacy_weights_archive}


@pytest.mark.parametrize("layout, message", [
    ("torch 2.7", r"^old.pt2 holds a program in the layout of torch 2.7 and older, whose weights load with pickle; loading it"),
    ("legacy weights", r"^old.pt2 holds pickled weights in the legacy layout; loading it could run code from the file"),
])
def test_an_old_layout_pt2_is_refused_and_runs_nothing(tmp_path, digits, archive, capsys, layout, message):
    marker, path, out = tmp_path / "marker", tmp_path / "old.pt2", tmp_path / "out"
    path.write_bytes(LAYOUTS[layout](archive, marker))
    with pytest.raises(CheckpointError, match=message) as refusal:
        resolve_model(str(path), digits)
    assert "\n" not in str(refusal.value) and not marker.exists()
    assert main(["explore", "--model", str(path), "--methods", "prune,quantize", "--out", str(out), "--cache", "", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ordercomp: error: old.pt2 ")
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torch_itself_would_run_what_an_old_layout_holds(tmp_path, archive, layout):
    """torch.export.load still reads both layouts and unpickles their weights, so the refusal above is what
    keeps the payload from running."""
    marker = tmp_path / "marker"
    with pytest.raises(Exception):  # the payload is no state dict: loading fails, after it ran
        torch.export.load(io.BytesIO(LAYOUTS[layout](archive, marker)))
    assert marker.exists()
