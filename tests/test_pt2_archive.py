"""Crafted .pt2 archives (tests/untrusted_files.py) through every path that loads one: the command line,
the dashboard's upload, the export check and the runtimes. Nothing in them runs, nothing they declare
is allocated beyond the bytes present, and each is refused with one line before torch reads it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ordercomp import uploads
from ordercomp.models.checkpoints import CheckpointError, resolve_model
from ordercomp.cli import main
from ordercomp.deploy.export import load_and_run
from ordercomp.models.programs import ProgramError
from ordercomp.deploy.runtimes import load_runner
from ordercomp.models.zoo import create_model
import untrusted_files as crafted

PEAK_LIMIT_MB = 1536  # the promise: reading any file from someone else stays under 1.5 GB


@pytest.fixture(scope="module")
def genuine() -> bytes:
    torch.manual_seed(0)
    return crafted.genuine_pt2(create_model("cnn_tiny", 10, 1))


def imported_module(archive: bytes, marker) -> bytes:
    """A spec naming a module that creates the marker when imported (the test puts its folder on sys.path)."""
    module = f"untrusted_{marker.parent.name.replace('-', '_')}"
    (marker.parent / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return crafted.module_named_by_input_spec(archive, module)


RUNS_CODE = {
    "sympy in the batch size": (crafted.sympy_in_batch_size, "symbolic size torch would evaluate as Python"),
    "sympy in a range constraint": (crafted.sympy_in_range_constraint, "symbolic size torch would evaluate as Python"),
    "sympy in a sym_int value": (crafted.sympy_in_sym_int, "symbolic size torch would evaluate as Python"),
    "a guard": (crafted.guard_code, "guard torch would run as Python"),
    "a module named by the input spec": (imported_module, "more than plain keys"),
    "a forward argument name": (crafted.quote_in_input_name, "not an identifier"),
    "a second program record": (crafted.duplicate_program, "twice"),
}


def through_explore(path, tmp_path, capsys) -> str:
    out = tmp_path / "out"
    assert main(["explore", "--model", str(path), "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]) == 2
    assert not out.exists()
    return cli_error(capsys)


def through_apply(path, tmp_path, capsys) -> str:
    assert main(["apply", "--model", str(path), "--chain", "prune", "--export", str(tmp_path / "export")]) == 2
    assert not (tmp_path / "export").exists()
    return cli_error(capsys)


def cli_error(capsys) -> str:
    err = capsys.readouterr().err.strip()  # apply draws a progress bar above the error
    assert err.count("ordercomp: error:") == 1 and err.splitlines()[-1].startswith("ordercomp: error:") and "Traceback" not in err
    return err.splitlines()[-1]


def through_the_upload(path, tmp_path, capsys) -> str:
    folder = tmp_path / "uploads"
    with pytest.raises(CheckpointError) as error:
        uploads.keep_checkpoint(folder, path.name, path.read_bytes())
    assert not any(folder.iterdir()), "a refused upload is removed again"
    return str(error.value)


def through_the_export_check(path, tmp_path, capsys) -> str:
    return load_and_run("pt2", path, torch.zeros(2, 1, 8, 8))["error"]


def through_the_runtime(path, tmp_path, capsys) -> str:
    with pytest.raises(ProgramError) as error:
        load_runner("pt2", path)
    return str(error.value)


LOADERS = [through_explore, through_apply, through_the_upload, through_the_export_check, through_the_runtime]


@pytest.mark.parametrize("craft, message", RUNS_CODE.values(), ids=RUNS_CODE)
@pytest.mark.parametrize("load", LOADERS)
def test_a_pt2_that_would_run_python_is_refused_and_runs_nothing(tmp_path, monkeypatch, capsys, genuine, craft, message, load):
    marker, path = tmp_path / "marker", tmp_path / "evil.pt2"
    path.write_bytes(craft(genuine, marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    error = load(path, tmp_path, capsys)
    assert not marker.exists(), "code from the file ran"
    assert "\n" not in error and message in error and "evil.pt2" in error


def test_the_crafted_files_do_run_code_in_torch_itself(tmp_path, genuine):
    """The reproductions are live: torch's own loader runs them (so the refusals above are what keeps markers away)."""
    for number, craft in enumerate((crafted.sympy_in_batch_size, crafted.guard_code)):
        marker = tmp_path / f"marker{number}"
        (tmp_path / "evil.pt2").write_bytes(craft(genuine, marker))
        torch.export.load(str(tmp_path / "evil.pt2")).module()(torch.zeros(2, 1, 8, 8))
        assert marker.exists(), "torch no longer runs this reproduction: update tests/untrusted_files.py"


def test_a_genuine_archive_loads_whatever_its_file_name(tmp_path, digits):
    """torch.export.save names the archive's root folder after the file; the checks take any such name."""
    torch.manual_seed(0)
    model = create_model("cnn_tiny", 10, 1).eval()
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch", max=64)},))
    torch.export.save(program, tmp_path / "my model (v2).pt2")
    loaded, _ = resolve_model(str(tmp_path / "my model (v2).pt2"), digits)
    images = digits.example_input(3)
    assert torch.allclose(loaded(images), model(images))


MALFORMED = {
    "an empty weight record declaring 750M floats": (crafted.empty_weight_declaring, "declares 3,000,000,000 bytes but its record holds 0"),
    "a weight record inflating to 1 GB": (crafted.weight_bomb, "a compressed or encrypted member"),
    "a negative size": (lambda a: crafted.weight_meta(a, sizes=[{"as_int": -8}, {"as_int": 1}, {"as_int": 3}, {"as_int": 3}]),
                        "not an integer from 0 to 2**48"),
    "a huge stride": (lambda a: crafted.weight_meta(a, strides=[{"as_int": 1 << 40}] * 4), "but its record holds 288"),
    "an offset past the record": (lambda a: crafted.weight_meta(a, storage_offset={"as_int": 1 << 30}), "but its record holds 288"),
    "a symbolic weight size": (lambda a: crafted.weight_meta(a, sizes=[{"as_expr": {"expr_str": "s1"}}] * 4), "not an integer"),
    "an unknown dtype": (lambda a: crafted.weight_meta(a, dtype=99), "unknown dtype (99)"),
    "a program record nested 100,000 levels": (crafted.deep_program, "nested deeper than Python can read"),
    "a program record of 9 MB": (lambda a: crafted.rewrite(a, {crafted.PROGRAM: json.dumps(crafted.record(a)).encode() + b" " * (9 << 20)}),
                                 "models/model.json of 9,"),
    "a stray member": (lambda a: crafted.rewrite(a, {"code.py": b"print()"}), "an unexpected member 'code.py'"),
    "a legacy member beside the archive": (crafted.legacy_member_beside, "members under 2 root folders"),
}


@pytest.mark.parametrize("craft, message", MALFORMED.values(), ids=MALFORMED)
def test_a_pt2_declaring_more_than_it_holds_is_one_line(tmp_path, digits, genuine, craft, message):
    path = tmp_path / "big.pt2"
    path.write_bytes(craft(genuine))
    with pytest.raises(CheckpointError) as error:
        resolve_model(str(path), digits)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith("big.pt2 is not a readable torch.export (.pt2) archive")


# The child's own peak is VmHWM: ru_maxrss would also count the test process it was started from
# (Linux folds the parent's high-water mark in at exec).
PEAK = """
import json, sys
from pathlib import Path
from ordercomp.models.checkpoints import CheckpointError, load_program
refused = []
for name in sys.argv[1:]:
    try:
        load_program(Path(name))
    except CheckpointError as error:
        refused.append(str(error))
peak_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"refused": refused, "peak_mb": peak_kb / 1024}))
"""


def test_files_declaring_gigabytes_stay_under_the_memory_limit(tmp_path, genuine):
    """Item 3a: a 160 KB archive whose empty weight record declares 3 GB took the process to 3.8 GB, a 1 MB
    record inflating to 1 GB was inflated whole, and zipfile's objects for 2M empty entries of a 98 MB file
    took 1 GB more; all three are refused from the bytes present, in one process that stays under the limit."""
    files = {"empty.pt2": crafted.empty_weight_declaring(genuine), "bomb.pt2": crafted.weight_bomb(genuine),
             "entries.pt2": crafted.many_members()}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    run = subprocess.run([sys.executable, "-c", PEAK, *(str(tmp_path / name) for name in files)], capture_output=True, text=True,
                         timeout=600)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert [error.split(" ")[0] for error in result["refused"]] == list(files), result
    assert result["peak_mb"] < PEAK_LIMIT_MB, result


def test_sample_inputs_of_more_pickle_operations_than_tensors_take_are_refused_before_torch_builds_them(tmp_path, digits, genuine,
                                                                                                     monkeypatch):
    import ordercomp.pickles

    monkeypatch.setattr(ordercomp.pickles, "MAX_OPCODES", 1000)  # lowered to keep the test fast; genuine samples take ~20
    path = tmp_path / "dicts.pt2"
    path.write_bytes(crafted.sample_inputs_of_dicts(genuine))
    with pytest.raises(CheckpointError) as error:
        resolve_model(str(path), digits)
    assert str(error.value).startswith("dicts.pt2 is not a readable torch.export (.pt2) archive (sample inputs whose pickle "
                                       "has more than 1,000 pickle operations)")
    (tmp_path / "genuine.pt2").write_bytes(genuine)
    assert resolve_model(str(tmp_path / "genuine.pt2"), digits)[1]["source"] == "program"
