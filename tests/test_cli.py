"""The command line: one-line errors with exit status 2 and nothing written; a real small run."""
from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from ordercomp.cli import main
from ordercomp.report.figures import headline, size_text
from ordercomp.report.meeting import headline_figures
from testkit import MY_NET


@pytest.mark.parametrize("args, message", [
    (["explore", "--methods", "prune,magic"], "unknown method 'magic'"),
    (["explore", "--prune-ratio", "1.5"], "prune ratio must be in"),
    (["explore", "--quantize-weight-bits", "3"], "weight bits must be one of"),
    (["explore", "--data", "/no/such/folder"], "does not exist"),
    (["explore", "--set", "prune=0.3"], "method.field=value"),
    (["apply", "--chain", "prune,quantize", "--export", "{out}", "--model", "{bad}", "--arch", "cnn_tiny"], "not a readable"),
    (["explore", "--model", "{empty}.pt", "--arch", "cnn_tiny"], "empty.pt is not a readable torch checkpoint (EOFError)"),
    (["explore", "--model", "{empty}.pt2"], "empty.pt2 is not a readable torch.export (.pt2) archive"),
    (["explore", "--data", "{bomb}"], "could be decompression bomb"),
    (["explore", "--set", "prune.ratio=abc"], "prune.ratio must be a number, got 'abc'"),
    (["explore", "--prune-ratio", "nan"], "prune.ratio must be a finite number, got nan"),
    (["explore", "--methods", "int8,prune", "--set", "int8.calibration_batches=2.5"], "int8.calibration_batches must be a whole number"),
    (["explore", "--set", "quantize.weight_bits=inf"], "quantize.weight_bits must be a finite number"),
    (["explore", "--objective", "weighted", "--weight", "nan"], "weight must be a finite number, got nan"),
    (["explore", "--objective", "weighted", "--weight", "-1"], "weight must be >= 0 accuracy points per halving of the cost, got -1.0"),
    (["explore", "--epochs", "nan"], "epochs must be a finite number"),
    (["explore", "--lr", "inf"], "lr must be a finite number"),
    (["explore", "--batch-size", "0"], "batch size must be between 1 and 65536"),
    (["explore", "--set", "distill.init=1"], "distill.init must be text"),
    (["explore", "--objective", "latency", "--runtime", "tflite"], "unknown runtime 'tflite'"),
    (["explore", "--search", "greedy"], "unknown search strategy 'greedy'"),
    (["explore", "--confidence", "1.5"], "confidence must be in [0.5, 1)"),
    (["explore", "--confidence", "nan"], "confidence must be a finite number"),
    (["explore", "--screen", "1.5"], "screen must be a fraction of the fine-tuning epochs between 0 and 1, e.g. 0.25, got 1.5"),
    (["explore", "--screen", "0.25", "--search", "pairwise"], "screening needs a search that evaluates whole orders"),
    (["explore", "--settle", "-5"], "settle must be a whole number of method applications >= 0 (0: never), got -5"),
    (["explore", "--settle", "100", "--search", "pairwise"], "settling races whole orders on more seeds"),
    (["explore", "--runtime", "onnx_int8"], "a runtime only changes where latency is measured"),
    (["explore", "--ship", "tflite"], "unknown format to ship 'tflite': choose one of torchscript, pt2, onnx, onnx_int8, packed, or none"),
    (["apply", "--chain", "prune", "--export", "{out}", "--epochs=-inf"], "epochs must be a finite number"),
    (["apply", "--chain", "prune", "--export", "{out}", "--prune-ratio", "nan"], "prune.ratio must be a finite number"),
    (["apply", "--chain", "prune", "--export", "{out}", "--seed", "-1"], "seed must be >= 0"),
    (["apply", "--chain", "prune", "--export", "{out}", "--formats", "pt2,tflite"], "unknown export format"),
    (["apply", "--chain", "prune", "--export", "{out}", "--formats", ""], "unknown export format(s) (none given)"),  # was every format
    (["explore", "--model", "{net}:MyNet", "--model-args", "{{width"], "--model-args must be a JSON object"),
    (["explore", "--model-args", '{{"width": 8}}'], "--model-args is for a class or function"),
    (["apply", "--chain", "prune", "--export", "{out}", "--weights", "{bad}"], "--weights is for a zoo architecture or a class"),
    (["explore", "--normalize", "imagenet"], "normalize must be dataset"),
    (["apply", "--chain", "prune", "--export", "{out}", "--normalize", "0.5"], "even count of finite numbers"),
    (["explore", "--model", "{tmp}/absent.py:Net"], "absent.py does not exist: give FILE.py:NAME"),
    (["measure", "--model", "{net}:Nope"], "my_net.py has no Nope: its model classes are Block, MyNet"),
    (["measure", "--classifier", "fc"], "--classifier and --stages name parts of your own network"),  # measure ignored them
    (["apply", "--chain", "prune", "--export", "{out}", "--model", "{net}:MyNet", "--model-args", '{{"depth": 2}}'],
     "MyNet(num_classes=10, in_channels=1, depth=2) raised TypeError"),
    (["explore", "--model", "torchvision.models:resnet18"], "gives (3, 1000) for 3 images, not one logit per class (10)"),
    (["explore", "--model", "torchvision.models:googlenet", "--model-args", '{{"num_classes": 10, "init_weights": false}}', "--input-size", "32"],
     "gives GoogLeNetOutputs in training mode, not a tensor of logits: build it without auxiliary outputs"),  # its base was a traceback
    (["explore", "--model", "resnet18"], "the zoo's resnet18 is now named resnet18_small_input"),
    (["explore", "--data", "{tmp}/absent.npz"], "absent.npz does not exist"),
    (["measure", "--crop", "2"], "crop must be the share of the shorter side kept, in [0.25, 1]"),
    (["explore", "--crop", "0.875"], "--crop (crop=0.875) is for an ImageFolder tree's images, which come in any shape; digits"),
    (["measure", "--ema"], "--ema (ema=True) reads the EMA weights of a checkpoint, and digits_cnn is given none"),
    (["apply", "--chain", "prune", "--export", "{out}", "--model", "cnn_tiny", "--weights", "{plain}", "--ema"],
     "plain.pt holds no EMA weights (a state dict of"),
])
def test_bad_input_is_one_line_with_status_2_and_writes_nothing(tmp_path, capsys, bomb_png, args, message):
    from ordercomp.models.zoo import create_model

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "empty.pt2").write_bytes(b"")
    bomb = tmp_path / "bomb"
    for label in ("cat", "dog"):
        (bomb / label).mkdir(parents=True)
        Image.new("L", (8, 8)).save(bomb / label / "0.png")
    bomb_png(bomb / "dog" / "1.png")
    torch.save(create_model("cnn_tiny").state_dict(), tmp_path / "plain.pt")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [a.format(out=out, bad=bad, empty=tmp_path / "empty", bomb=bomb, net=MY_NET, tmp=tmp_path, plain=tmp_path / "plain.pt")
            for a in args]
    if args[0] == "explore":
        args += ["--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert last.startswith("ordercomp: error:") and message in last
    assert "Traceback" not in err and err.count("ordercomp: error:") == 1
    assert not out.exists()


def test_a_step_cache_whose_disk_fills_during_the_run_stops_being_written_and_the_run_keeps_its_results(tmp_path, capsys,
                                                                                                     monkeypatch):
    """Stop 43: a full disk under the step cache ended the exploration at the next step with '[Errno 28] No space left on
    device', and every step it had computed was lost with it. The cache now stops being written and says so."""
    import errno

    from ordercomp.exploration import cache
    from ordercomp.models import checkpoints

    written, real = [], cache.write_atomically

    def filling(path, fill):
        if len(written) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        real(path, fill)

    monkeypatch.setattr(cache, "write_atomically", filling)
    monkeypatch.setattr(checkpoints, "write_atomically", filling)  # the trained base's weights, kept in the same folder
    out = tmp_path / "run"
    code = main(["explore", "--model", "cnn_tiny", "--methods", "prune,quantize", "--seeds", "1", "--epochs", "0.1",
                 "--search", "pairwise", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet", "--ship", "none"])
    printed = capsys.readouterr().out
    assert code == 0 and sorted(json.loads((out / "exploration.json").read_text())["chain"]) == ["prune", "quantize"]
    assert ("The step cache stopped being written during the run (No space left on device): these results are complete, but "
            "a rerun computes again the steps that were not cached; free space in the cache folder") in printed
    assert [path.suffix for path in written] == [".safetensors", ".json", ".json"]  # the base's weights, then two steps
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == sorted(path.name for path in written)


def test_explore_writes_json_and_csv_results(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["explore", "--model", "cnn_tiny", "--methods", "prune,quantize", "--seeds", "1", "--epochs", "0.2",
                 "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Recommended chain: " in printed and "BitOps reduction" in printed
    record = json.loads((out / "exploration.json").read_text())
    spent = record["search"]["applications"]["total"]  # the default search says how sure it is and what it spent
    assert "Whole orders evaluated by the surrogate search" in printed and "P(best)" in printed
    assert "The recommended order is the best of the 2 evaluated" in printed and f"{spent} method applications were spent" in printed
    assert sorted(record["chain"]) == ["prune", "quantize"]
    assert {p.name for p in out.iterdir()} == {"exploration.json", "steps.csv", "pairs.csv", "chain.csv", "report.html", ".ordercomp-results"}
    report = (out / "report.html").read_text()  # stop 44: the meeting report came from the dashboard or the API only
    assert report.startswith("<!DOCTYPE html>") and "Plotly.newPlot" in report and not re.search(r"<script[^>]*\ssrc=", report)
    assert html.escape(" → ".join(record["chain"])) in report and size_text(record["shipped"]["file_bytes"]) in report
    # what ships, as the dashboard and the report say it: the eager table said 1.54x slower where the file was faster
    assert "(test split; latency in the PyTorch eager simulation, not the shipped file)" in printed
    shipped = record["shipped"]
    assert f"Shipped file size: {size_text(shipped['file_bytes'])} — ONNX file" in printed
    for item in headline(headline_figures(record)):
        assert f"  {item.label}: {item.value} — {item.detail}\n" in printed


def test_apply_exports_a_model_that_loads_back(tmp_path):
    out = tmp_path / "export"
    code = main(["apply", "--model", "cnn_tiny", "--chain", "prune,quantize", "--epochs", "0.2", "--export", str(out),
                 "--formats", "torchscript,state_dict"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chain"] == ["prune", "quantize"]
    program = torch.jit.load(str(out / "model.torchscript.pt"))
    assert program(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("command", [["explore", "--out"], ["apply", "--chain", "prune", "--export"]])
def test_a_folder_holding_other_files_is_refused_before_any_work_and_kept(tmp_path, capsys, monkeypatch, command):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "data").mkdir()
    import ordercomp.exploration.explorer

    monkeypatch.setattr(ordercomp.exploration.explorer.Explorer, "explore", lambda self: pytest.fail("work started"))
    monkeypatch.setattr(ordercomp.exploration.explorer, "prepare_base", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.chdir(tmp_path)
    assert main(command + ["."]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not an ordercomp" in err and "notes.txt" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_results_replace_only_ordercomp_files(tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    run = ["explore", "--model", "digits_cnn", "--methods", "prune,quantize", "--seeds", "1", "--epochs", "0.1",
           "--out", str(out), "--cache", str(cache), "--quiet"]
    assert main(run) == 0
    (out / "notes.txt").write_text("my notes on this run")
    (out / "steps.csv").unlink()
    assert main(run) == 0
    assert (out / "notes.txt").read_text() == "my notes on this run" and (out / "steps.csv").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".ordercomp-staging")]
    (out / "steps.csv").write_text("edited")
    assert main(run) == 2  # a result file the user changed is theirs now: refused before the run
    assert (out / "steps.csv").read_text() == "edited"


def test_export_into_an_earlier_export_keeps_other_files_and_drops_stale_formats(tmp_path):
    out = tmp_path / "export"
    first = ["apply", "--model", "digits_cnn", "--chain", "prune", "--epochs", "0.1", "--export", str(out)]
    assert main(first + ["--formats", "state_dict,torchscript"]) == 0
    (out / "README.txt").write_text("how we deploy this")
    assert main(first + ["--formats", "state_dict"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".ordercomp-export", "README.txt", "manifest.json", "model.state_dict.pt"]
    assert json.loads((out / "manifest.json").read_text())["files"] == ["model.state_dict.pt"]


def test_batch_size_reaches_the_fine_tuning_budget():
    from ordercomp.cli import _spec, build_parser

    spec = _spec(build_parser().parse_args(["explore", "--batch-size", "1024", "--epochs", "2"]))
    assert (spec.budget.batch_size, spec.budget.epochs) == (1024, 2.0)


def test_the_shipped_format_is_chosen_on_the_command_line():
    """The API could ship int8 ONNX (faster than float ONNX on the default sample on an Intel Xeon with AMX); the CLI
    could not choose."""
    from ordercomp.cli import _spec, build_parser

    assert [_spec(build_parser().parse_args(["explore", *option])).ship for option in ([], ["--ship", "onnx_int8"], ["--ship", "none"])] \
        == ["onnx", "onnx_int8", None]


def test_a_user_class_from_a_file_is_explored_and_applied_with_early_exits_and_its_onnx_file_predicts_as_pytorch(
        tmp_path, capsys, monkeypatch):
    """Issue 14: a user's own class had no way in from the command line, and early exit needed the zoo's stem/stages/head.
    Its weights, trained and saved as Lightning saves them, load with what was recognised said in full; explore and
    apply run end to end with early exits applied to the traced stages; the float ONNX file predicts as the compressed
    model does, on the whole test split."""
    from ordercomp.data.datasets import load_data
    from ordercomp.deploy import export
    from ordercomp.deploy.runtimes import load_runner
    from ordercomp.layers import exit_heads
    from ordercomp.methods.early_exit import select_exits
    from ordercomp.train import Budget, train
    from tests.user_models.my_net import MyNet

    digits = load_data("digits")
    torch.manual_seed(0)
    trained = train(MyNet(width=8), digits, Budget(epochs=3, lr=2e-2), seed=0, device=torch.device("cpu"))
    weights = tmp_path / "my_net.ckpt"
    torch.save({"epoch": 1, "state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, weights)
    model = ["--model", f"{MY_NET}:MyNet", "--model-args", '{"width": 8}', "--weights", str(weights), "--device", "cpu",
             "--prune-ratio", "0.3", "--early-exit-threshold", "0.2"]  # mild enough for a few images to leave at the first exit
    out, notes = tmp_path / "run", ["read its 'state_dict' entry (left out: epoch)", "stripped the prefix 'model.'"]
    assert main(["explore", *model, "--methods", "prune,early_exit", "--seeds", "1", "--epochs", "0.2", "--out", str(out),
                 "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr()
    assert f"weights {weights}: {'; '.join(notes)}" in printed.err and f"Base: {MY_NET}:MyNet (my_net.py:MyNet" in printed.out
    record = json.loads((out / "exploration.json").read_text())
    assert record["base"]["class"] == "my_net.py:MyNet" and record["base"]["weights_notes"] == notes
    assert record["base"]["structure"]["classifier"] == "fc" and len(record["base"]["structure"]["stages"]) >= 2
    assert record["data"]["preprocessing"]["normalize"] == "dataset" and sorted(record["chain"]) == ["early_exit", "prune"]
    assert all(step["status"] == "ok" for step in record["chain_steps"])

    exported = {}

    def export_and_keep(model, *args, **options):  # the compressed model apply hands to the export, as PyTorch runs it
        exported["model"] = model
        return export_compressed(model, *args, **options)

    export_compressed = export.export_compressed
    monkeypatch.setattr(export, "export_compressed", export_and_keep)
    folder = tmp_path / "export"
    assert main(["apply", *model, "--chain", "prune,early_exit", "--epochs", "1", "--export", str(folder),
                 "--formats", "onnx,state_dict", "--no-measure"]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    compressed = exported["model"].eval()
    assert len(exit_heads(compressed)) == len(record["base"]["structure"]["stages"]) - 1
    assert manifest["preprocessing"] == record["data"]["preprocessing"] and manifest["base"]["reference"] == f"{MY_NET}:MyNet"
    [onnx] = [entry for entry in manifest["formats"] if entry["format"] == "onnx"]
    assert manifest["chain"] == ["prune", "early_exit"] and onnx["check"]["passed"]
    images = digits.test.tensors[0]
    with torch.no_grad():
        expected = compressed(images).numpy()
        _, leaves_at = select_exits(compressed.forward_all(images), compressed.threshold)
    assert 0 < int((leaves_at == 0).sum()) < len(images)  # some images leave at the first exit, the others go on
    got = load_runner("onnx", folder / "model.onnx")(images.contiguous().numpy())
    assert expected.shape == got.shape == (len(images), 10) and (got.argmax(1) == expected.argmax(1)).all()
    assert abs(got - expected).max() <= export.CHECK_TOLERANCE * max(1.0, abs(expected).max())


def test_measure_reads_a_checkpoints_ema_weights_with_ema_and_says_so(tmp_path, capsys, tiny_model):
    """Stop 44: a checkpoint with EMA weights beside the training weights (timm's) gave only the training weights."""
    state = tiny_model.state_dict()
    torch.save({"state_dict": state, "state_dict_ema": {k: v * 0 if v.is_floating_point() else v for k, v in state.items()}},
               tmp_path / "last.pth.tar")
    lines = {}
    for ema in ([], ["--ema"]):
        assert main(["measure", "--model", "cnn_tiny", "--weights", str(tmp_path / "last.pth.tar"), "--cache", "", "--device",
                     "cpu", *ema]) == 0
        lines[bool(ema)] = dict(line.split(": ", 1) for line in capsys.readouterr().out.strip().splitlines())
    assert "read the training weights, its 'state_dict' entry" in lines[False]["model"]
    assert "read the EMA weights, its 'state_dict_ema' entry" in lines[True]["model"]
    assert float(lines[True]["accuracy"].rstrip(" %")) < float(lines[False]["accuracy"].rstrip(" %"))  # zero weights: chance


def test_a_model_trained_on_its_own_preprocessing_keeps_its_accuracy_with_normalize_none(tmp_path, capsys):
    """Issue 14: the digits were always normalised with the tool's own statistics, written nowhere: a model trained
    on 0..1 pixels lost 23 points."""
    from ordercomp.data.datasets import load_data
    from ordercomp.metrics import measure
    from ordercomp.models.zoo import create_model
    from ordercomp.train import Budget, train

    raw = load_data("digits", normalize="none")
    torch.manual_seed(0)
    model = train(create_model("cnn_tiny"), raw, Budget(epochs=3, lr=5e-3), seed=0, device=torch.device("cpu"))
    own = measure(model, raw, "test", latency=False).accuracy
    torch.save(model.state_dict(), tmp_path / "w.pt")
    lines = {}
    for normalize in ("none", "dataset"):
        assert main(["measure", "--model", "cnn_tiny", "--weights", str(tmp_path / "w.pt"), "--normalize", normalize,
                     "--cache", "", "--device", "cpu"]) == 0
        lines[normalize] = capsys.readouterr().out.strip().splitlines()
    accuracy = {normalize: dict(line.split(": ", 1) for line in printed[2:])["accuracy"] for normalize, printed in lines.items()}
    assert accuracy["none"] == f"{own:.2f} %" and "normalize none (mean 0, std 1)" in lines["none"][1]
    assert "normalize dataset (mean 0.3049, std 0.3756)" in lines["dataset"][1]
    assert float(accuracy["dataset"].rstrip(" %")) < own - 2  # the default is not this model's preprocessing


# a command that SIGTERM reaches while it works (the work stands still until the signal arrives)
STOPPED_BY_SIGTERM = """
import os, signal, sys
from ordercomp import cli
def run(args):
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
cli.run_explore = run
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("cache, line", [("cache", "finished steps are cached, run the same command to resume"),
                                         ("", "nothing was cached (--cache '')")], ids=["cache", "no cache"])
def test_sigterm_stops_a_command_as_ctrl_c_does_with_one_line(tmp_path, cache, line):
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    child = subprocess.run([sys.executable, "-c", STOPPED_BY_SIGTERM, "explore", "--out", str(tmp_path / "out"),
                            "--cache", cache and str(tmp_path / cache)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert child.returncode == 128 + signal.SIGTERM, child.stderr[-2000:]
    assert child.stderr.strip().splitlines()[-1] == f"ordercomp: interrupted; {line}"


NO_PARAMETERS = """
from torch import nn
class Crop(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :10]
"""


@pytest.mark.parametrize("cache, full", [("cache", False), ("", False), ("cache", True)], ids=["cache", "no cache", "full disk"])
def test_no_order_to_recommend_says_steps_are_cached_only_when_they_are(tmp_path, capsys, monkeypatch, cache, full):
    """A cache whose disk filled during the run (stop 43) kept none of the steps, and the line still said a rerun reuses them."""
    import errno

    from ordercomp.exploration import cache as step_cache

    def no_space(path, fill):
        raise OSError(errno.ENOSPC, "No space left on device")

    if full:
        monkeypatch.setattr(step_cache, "write_atomically", no_space)
    (tmp_path / "crop.py").write_text(NO_PARAMETERS)
    assert main(["explore", "--model", f"{tmp_path / 'crop.py'}:Crop", "--methods", "prune,sparsify", "--seeds", "1", "--quiet",
                 "--out", str(tmp_path / "out"), "--cache", cache and str(tmp_path / cache)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no method is left to order" in err and ("rerun reuses them" in err) == (bool(cache) and not full)
