"""The README's examples run as they are written: the Python API on a user's class and tensors, then an exported
file fed the way the README says (the manifest's preprocessing numbers) from a PNG."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ordercomp.exploration import explorer
from ordercomp.train import Budget

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(heading: str) -> list[str]:
    section = README.read_text().split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_readme_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the example writes report.html, out/ and its cache where it runs
    monkeypatch.setattr(explorer, "BASE_BUDGET", Budget(epochs=1))  # the class is trained here: briefly, for a test
    api, feeding = python_blocks("## Your own model and data")
    namespace = {"__name__": "readme_example"}
    exec(compile(api, "README.md", "exec"), namespace)
    result, done = namespace["result"], namespace["done"]
    assert sorted(result.chain) == ["prune", "quantize"] and [s.status for s in done.steps] == ["ok", "ok"]
    assert result.spec["model"] == "object:readme_example.MyNet" and result.spec["data"] == "object:tuple"
    assert json.loads(json.dumps(result.spec)) == result.spec
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["preprocessing"] == result.data["preprocessing"] and manifest["preprocessing"]["normalize"] == "none"
    assert (tmp_path / "report.html").read_text().lstrip().lower().startswith("<!doctype html>")

    image = done.data.test.tensors[0][0]  # 0..1 pixels (normalize none), saved as a user's PNG would be
    Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).save(tmp_path / "digit.png")
    capsys.readouterr()
    exec(compile(feeding, "README.md", "exec"), {"__name__": "readme_feeding"})
    with torch.no_grad():
        expected = done.model.eval()(image[None]).argmax(1).item()
    assert capsys.readouterr().out.strip() == f"[{expected}]"
