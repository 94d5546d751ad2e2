"""The command line: one-line errors with exit status 2 and nothing written; a real small run."""
from __future__ import annotations

import json

import pytest
import torch

from ordercomp.cli import main


@pytest.mark.parametrize("args, message", [
    (["explore", "--methods", "prune,magic"], "unknown method 'magic'"),
    (["explore", "--prune-ratio", "1.5"], "prune ratio must be in"),
    (["explore", "--quantize-weight-bits", "3"], "weight bits must be one of"),
    (["explore", "--data", "/no/such/folder"], "does not exist"),
    (["explore", "--set", "prune=0.3"], "method.field=value"),
    (["apply", "--chain", "prune,quantize", "--export", "{out}", "--model", "{bad}", "--arch", "cnn_tiny"], "not a readable"),
])
def test_bad_input_is_one_line_with_status_2_and_writes_nothing(tmp_path, capsys, args, message):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    out = tmp_path / "out"
    args = [a.format(out=out, bad=bad) for a in args]
    if args[0] == "explore":
        args += ["--out", str(out), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("ordercomp: error:") and message in last
    assert "Traceback" not in err and err.count("ordercomp: error:") == 1
    assert not out.exists()


def test_explore_writes_json_and_csv_results(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["explore", "--model", "cnn_tiny", "--methods", "prune,quantize", "--seeds", "1", "--epochs", "0.2",
                 "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "recommended chain" in printed and "BitOps reduction" in printed
    record = json.loads((out / "exploration.json").read_text())
    assert sorted(record["chain"]) == ["prune", "quantize"]
    assert {p.name for p in out.iterdir()} == {"exploration.json", "steps.csv", "pairs.csv", "chain.csv"}


def test_apply_exports_a_model_that_loads_back(tmp_path):
    out = tmp_path / "export"
    code = main(["apply", "--model", "cnn_tiny", "--chain", "prune,quantize", "--epochs", "0.2", "--export", str(out),
                 "--formats", "torchscript,state_dict"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chain"] == ["prune", "quantize"]
    program = torch.jit.load(str(out / "model.torchscript.pt"))
    assert program(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
