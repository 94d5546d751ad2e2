"""Results and export folders (issue 19, items 2 and 9): a folder is ordercomp's only with its marker,
a file is replaced or removed only while it has the checksum ordercomp recorded, a destination that
cannot be written is refused before any work, and a folder problem found at the end costs no results.

The audit's reproductions are the fixtures below; the CLI refusals run no work (the base and the
exploration are replaced by a failure), so the module takes seconds.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from collections import namedtuple

import pytest

import ordercomp.exploration.explorer
from ordercomp import folders
from ordercomp.cli import main
from ordercomp.deploy.export import EXPORT_FOLDER, MANIFEST
from ordercomp.folders import write_folder
from ordercomp.exploration.results import RESULT_FILES, RESULTS_FOLDER, check_results_folder, result_files, write_results
from sample_record import synthetic_record

OLD_EXPORT_MARKER = "written by ordercomp (export); ordercomp replaces only its own files in this folder\n"
OLD_RESULTS_MARKER = "written by ordercomp (results); ordercomp replaces only its own files in this folder\n"
RECORD = synthetic_record()
Finished = namedtuple("Finished", "to_dict")  # what write_results needs of an exploration


def snapshot(folder) -> dict:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.fixture
def no_work(monkeypatch):
    """A CLI command that gets past its checks fails the test instead of training anything."""
    monkeypatch.setattr(ordercomp.exploration.explorer.Explorer, "explore", lambda self: pytest.fail("work started"))
    monkeypatch.setattr(ordercomp.exploration.explorer, "prepare_base", lambda *a, **k: pytest.fail("work started"))


@pytest.fixture(autouse=True)
def temp_folder(tmp_path, monkeypatch):
    """The system's temporary folder, where results that could not reach their destination go: under tmp_path."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(folder))
    return folder


@pytest.fixture
def foreign_manifest_folder(tmp_path):
    """Item 2: another tool's folder with a manifest.json listing its files, and no ordercomp marker."""
    folder = tmp_path / "deploy"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"another tool's weights")
    (folder / "model.onnx").write_bytes(b"another tool's model")
    (folder / MANIFEST).write_text(json.dumps({"tool": "other", "files": ["weights.bin", "model.onnx"]}))
    return folder


@pytest.fixture
def planted_marker_folder(foreign_manifest_folder):
    """The same folder with ordercomp's (older, plain-text) marker planted in it."""
    (foreign_manifest_folder / EXPORT_FOLDER.marker).write_text(OLD_EXPORT_MARKER)
    return foreign_manifest_folder


@pytest.fixture
def steps_csv_folder(tmp_path):
    """Item 9: a folder whose only file is named like one of ordercomp's results."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "steps.csv").write_text("my own table\n")
    return folder


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ordercomp: error: ") and "Traceback" not in err
    return err


APPLY = ["apply", "--chain", "prune", "--formats", "state_dict,onnx", "--export"]
EXPLORE = ["explore", "--quiet", "--cache", "", "--out"]  # no cache folder in the checkout, whatever happens


@pytest.mark.parametrize("folder, message", [("foreign_manifest_folder", "is not an ordercomp export folder"),
                                             ("planted_marker_folder", "manifest.json was not written by ordercomp")])
def test_apply_refuses_another_tools_export_folder_and_changes_nothing(request, capsys, no_work, folder, message):
    folder = request.getfixturevalue(folder)
    before = snapshot(folder)
    assert message in one_line_error(capsys, APPLY + [str(folder)])
    assert snapshot(folder) == before


def test_explore_refuses_a_folder_only_named_like_ordercomps(capsys, no_work, steps_csv_folder):
    assert "is not an ordercomp results folder (it holds steps.csv)" in one_line_error(capsys, EXPLORE + [str(steps_csv_folder)])
    assert snapshot(steps_csv_folder) == {"steps.csv": b"my own table\n"}


def unwritable_destinations(tmp_path, read_only):
    locked = tmp_path / "locked"
    locked.mkdir()
    read_only(locked)
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "link").symlink_to(tmp_path / "gone" / "away")
    return {"read-only parent": (locked / "run", "cannot write the"),
            "dangling link": (tmp_path / "link", "which does not exist"),
            "path through a file": (tmp_path / "file.txt" / "run", "file.txt is a file, not a folder"),
            "a file": (tmp_path / "file.txt", "file.txt exists and is not a folder: choose a new or empty folder for the")}


@pytest.mark.parametrize("command", [EXPLORE, APPLY], ids=["explore", "apply"])
@pytest.mark.parametrize("case", ["read-only parent", "dangling link", "path through a file", "a file"])
def test_an_unwritable_destination_is_one_line_before_any_work(tmp_path, capsys, no_work, read_only, command, case):
    out, message = unwritable_destinations(tmp_path, read_only)[case]
    before = sorted(tmp_path.rglob("*"))
    assert message in one_line_error(capsys, command + [str(out)])
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("command", [["explore", "--quiet", "--out"], APPLY], ids=["explore", "apply"])
@pytest.mark.parametrize("cache", ["run", "run/cache"], ids=["same folder", "inside"])
def test_a_step_cache_inside_the_destination_is_one_line_before_any_work(tmp_path, capsys, no_work, command, cache):
    err = one_line_error(capsys, command + [str(tmp_path / "run"), "--cache", str(tmp_path / cache)])
    assert f"--cache {tmp_path / cache} is inside --{'out' if command[0] == 'explore' else 'export'} {tmp_path / 'run'}" in err
    assert sorted(tmp_path.iterdir()) == [tmp_path / "system-temp"]


CACHE_COMMANDS = {"explore": ["explore", "--quiet", "--out"], "apply": ["apply", "--chain", "prune", "--formats", "state_dict", "--export"],
                  "measure": ["measure", "--model", "cnn_tiny", "--split"]}


@pytest.mark.parametrize("command", CACHE_COMMANDS.values(), ids=CACHE_COMMANDS)
@pytest.mark.parametrize("case", ["read-only parent", "path through a file", "a file"])
def test_an_unwritable_step_cache_is_one_line_before_the_base_is_built(tmp_path, capsys, monkeypatch, read_only, command, case):
    monkeypatch.setattr(ordercomp.exploration.explorer, "resolve_model", lambda *a, **k: pytest.fail("work started"))
    cache, message = unwritable_destinations(tmp_path, read_only)[case]
    target = "val" if command[0] == "measure" else str(tmp_path / "out")
    before = sorted(tmp_path.rglob("*"))
    err = one_line_error(capsys, command + [target, "--cache", str(cache)])
    assert message in err and "step cache" in err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_step_cache_folder_is_made_with_its_parents_and_then_used_as_it_is(tmp_path):
    folder = tmp_path / "cache" / "digits" / "steps"
    for run in range(2):  # the first run makes it, the next one finds it
        assert folders.make_writable_folder(folder, "step cache") == folder and folder.is_dir()


@pytest.mark.parametrize("command, need", [(EXPLORE, "16 MiB"), (APPLY, "4 MiB")], ids=["explore", "apply"])
def test_too_little_free_space_is_one_line_before_any_work(tmp_path, capsys, no_work, monkeypatch, temp_folder, command, need):
    # apply: the default model, digits_cnn (1.2 MB of weights), in two formats
    real = folders.shutil.disk_usage
    monkeypatch.setattr(folders.shutil, "disk_usage", lambda path: real(path)._replace(free=3 << 19))  # 1.5 MiB
    err = one_line_error(capsys, command + [str(tmp_path / "out")])
    assert f"needs about {need} free" in err and "a rough estimate" in err and "its disk has 2 MiB" in err
    assert not (tmp_path / "out").exists() and not any(temp_folder.iterdir())


def test_results_are_replaced_only_while_unchanged_and_other_files_kept(tmp_path):
    out = tmp_path / "run"
    write_results(Finished(lambda: RECORD), out)
    (out / "notes.txt").write_text("my notes")
    write_results(Finished(lambda: RECORD | {"chain": ["quantize"]}), out)
    assert json.loads((out / "exploration.json").read_text())["chain"] == ["quantize"]
    assert (out / "notes.txt").read_text() == "my notes"
    (out / "pairs.csv").write_text("edited by hand\n")
    with pytest.raises(ValueError, match="pairs.csv was not written by ordercomp, or was changed since"):
        check_results_folder(out)
    assert (out / "pairs.csv").read_text() == "edited by hand\n"


def test_the_written_results_read_back_as_the_record_and_its_tables(tmp_path):
    import pandas as pd

    from ordercomp.exploration.results import chain_table, pairs_table, results_table

    out = write_results(Finished(lambda: RECORD), tmp_path / "run")
    assert json.loads((out / "exploration.json").read_text()) == RECORD
    tables = {"steps.csv": results_table(RECORD), "pairs.csv": pairs_table(RECORD["outcomes"]),
              "chain.csv": chain_table(RECORD["base_metrics"], RECORD["chain_steps"])}
    for name, table in tables.items():  # the tables' own columns, no index column
        read = pd.read_csv(out / name)
        assert list(read.columns) == list(table.columns) and len(read) == len(table) > 0


def test_a_results_folder_an_older_ordercomp_wrote_is_still_ours_unless_edited(tmp_path):
    out = tmp_path / "run"
    write_results(Finished(lambda: RECORD), out)
    (out / ".ordercomp-results").write_text(OLD_RESULTS_MARKER)  # what ordercomp wrote before markers held checksums,
    (out / "report.html").unlink()  # and before results held the meeting report
    check_results_folder(out)
    (out / "steps.csv").write_text("edited\n")
    with pytest.raises(ValueError, match="steps.csv was not written by ordercomp"):
        check_results_folder(out)


def export_files(files: dict[str, bytes]):
    """A writer of an export: the given files and a manifest recording them as export_compressed does."""
    def write(folder):
        for name, content in files.items():
            (folder / name).write_bytes(content)
        manifest = {"files": sorted(files), "sha256": {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}}
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    return write


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_a_written_folder_and_its_files_get_the_permissions_the_umask_gives_not_private_ones(tmp_path, umask, folder_mode, file_mode):
    """Stop 43: a new export folder was 0700 (mkdtemp renamed into place) and its packed file 0600 (safetensors),
    so a web server or a colleague could not read the model that was shipped."""
    def private_file(folder):
        export_files({"model.onnx": b"onnx"})(folder)
        (folder / "model.packed.safetensors").write_bytes(b"packed")
        (folder / "model.packed.safetensors").chmod(0o600)
    previous = os.umask(umask)
    try:
        for out in (tmp_path / "new", tmp_path / "again"):
            write_folder(out, EXPORT_FOLDER, private_file)
        write_folder(tmp_path / "again", EXPORT_FOLDER, private_file)  # replacing ordercomp's own files in place
    finally:
        os.umask(previous)
    for out in (tmp_path / "new", tmp_path / "again"):
        assert out.stat().st_mode & 0o7777 == folder_mode
        assert {path.name: path.stat().st_mode & 0o7777 for path in out.iterdir()} == dict.fromkeys(snapshot(out), file_mode)


@pytest.mark.parametrize("marker", ["checksums", "older plain text"])
def test_an_export_removes_only_stale_files_with_the_recorded_checksum(tmp_path, marker):
    out = tmp_path / "export"
    write_folder(out, EXPORT_FOLDER, export_files({"model.onnx": b"onnx 1", "model.pt2": b"pt2 1", "model.packed.safetensors": b"p 1"}))
    if marker != "checksums":
        (out / EXPORT_FOLDER.marker).write_text(OLD_EXPORT_MARKER)
    (out / "model.pt2").write_bytes(b"pt2 edited by its user")
    write_folder(out, EXPORT_FOLDER, export_files({"model.onnx": b"onnx 2"}))
    assert snapshot(out).keys() == {".ordercomp-export", MANIFEST, "model.onnx", "model.pt2"}  # the stale packed file went
    assert (out / "model.onnx").read_bytes() == b"onnx 2" and (out / "model.pt2").read_bytes() == b"pt2 edited by its user"


def test_a_planted_marker_claims_no_file_ordercomp_did_not_write(tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"someone's model")
    (out / "keep.db").write_bytes(b"someone's database")
    planted = {"model.onnx": hashlib.sha256(b"another content").hexdigest(), "keep.db": hashlib.sha256(b"someone's database").hexdigest()}
    (out / EXPORT_FOLDER.marker).write_text(json.dumps({"written_by": "ordercomp", "sha256": planted}))
    write_folder(out, EXPORT_FOLDER, export_files({"model.pt2": b"pt2"}))
    assert (out / "model.onnx").read_bytes() == b"someone's model"  # listed, but not with its checksum
    assert (out / "keep.db").read_bytes() == b"someone's database"  # its checksum, but never a name ordercomp writes


def test_a_marker_that_is_a_link_makes_no_folder_ordercomps(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    write_folder(ours, EXPORT_FOLDER, export_files({"model.onnx": b"onnx"}))
    theirs.mkdir()
    (theirs / "notes.txt").write_text("my notes")
    (theirs / EXPORT_FOLDER.marker).symlink_to(ours / EXPORT_FOLDER.marker)
    with pytest.raises(ValueError, match=f"^{theirs} is not an ordercomp export folder"):
        folders.check_destination(theirs, EXPORT_FOLDER, ["model.pt2", MANIFEST], 0)


def test_a_folder_in_place_of_one_of_ordercomps_files_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    write_folder(out, RESULTS_FOLDER, lambda folder: (folder / "steps.csv").write_text("the table\n"))
    (out / "steps.csv").unlink()
    (out / "steps.csv").mkdir()  # the recorded name, now someone's folder
    with pytest.raises(ValueError, match="steps.csv was not written by ordercomp, or was changed since"):
        folders.check_destination(out, RESULTS_FOLDER, ["steps.csv"], 0)


@pytest.mark.parametrize("marker", ["longer than a marker", "checksums that are no table"])
def test_a_marker_that_is_not_one_ordercomp_writes_claims_nothing(tmp_path, marker):
    out = tmp_path / "run"
    write_folder(out, RESULTS_FOLDER, lambda folder: (folder / "steps.csv").write_text("the table\n"))
    path = out / RESULTS_FOLDER.marker
    written = json.loads(path.read_text())
    changed = {"longer than a marker": written | {"padding": "x" * folders.MAX_MARKER_BYTES},
               "checksums that are no table": written | {"sha256": sorted(written["sha256"])}}
    path.write_text(json.dumps(changed[marker]))
    with pytest.raises(ValueError, match="steps.csv was not written by ordercomp, or was changed since"):
        folders.check_destination(out, RESULTS_FOLDER, ["steps.csv"], 0)
    assert (out / "steps.csv").read_text() == "the table\n"


def test_results_whose_folder_fails_at_the_end_are_written_elsewhere(tmp_path, read_only, temp_folder):
    parent = tmp_path / "runs"
    parent.mkdir()
    check_results_folder(parent / "latest")
    read_only(parent)  # the folder problem appears while the exploration runs
    with pytest.raises(ValueError, match=rf"^could not write the results to {parent / 'latest'} \(.+\); they were written to "
                                         rf"{temp_folder}/ordercomp-results-\w+ instead$") as refusal:
        write_results(Finished(lambda: RECORD), parent / "latest")
    [elsewhere] = temp_folder.iterdir()
    assert str(elsewhere) in str(refusal.value)
    assert sorted(os.listdir(elsewhere)) == sorted(RESULT_FILES + (".ordercomp-results",))
    assert json.loads((elsewhere / "exploration.json").read_text()) == RECORD
    assert list(parent.iterdir()) == []


def test_a_disk_that_fills_while_writing_sends_the_files_elsewhere(tmp_path, temp_folder):
    def write(folder):
        if temp_folder not in folder.parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        (folder / "steps.csv").write_text("the table\n")

    with pytest.raises(ValueError, match=r"could not write the results to .*run \(No space left on device\); they were written to"):
        write_folder(tmp_path / "run", RESULTS_FOLDER, write)
    [elsewhere] = temp_folder.iterdir()
    assert sorted(os.listdir(elsewhere)) == [".ordercomp-results", "steps.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system-temp"]  # no staging folder left behind


def test_an_error_of_what_is_written_is_raised_as_it_is_not_taken_for_a_folder_problem(tmp_path, temp_folder):
    def write(folder):
        raise OSError(errno.EINVAL, "Invalid argument")  # the writer's own error: another folder would fail the same way

    with pytest.raises(OSError, match="Invalid argument"):
        write_folder(tmp_path / "run", RESULTS_FOLDER, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system-temp"] and not any(temp_folder.iterdir())


@pytest.mark.parametrize("case", ["full everywhere", "no temporary folder"])
def test_files_that_reach_neither_their_folder_nor_the_temporary_folder_are_one_line_and_leave_nothing(tmp_path, temp_folder,
                                                                                                    monkeypatch, case):
    if case == "no temporary folder":
        monkeypatch.setattr("tempfile.tempdir", str(temp_folder / "gone"))

    def write(folder):
        (folder / "steps.csv").write_text("the first half of the table")
        raise OSError(errno.ENOSPC, "No space left on device")

    second = "No space left on device" if case == "full everywhere" else "No such file or directory"
    with pytest.raises(ValueError, match=rf"^could not write the results to {tmp_path / 'run'} \(No space left on device\) nor to "
                                         rf"the temporary folder \({second}\)$"):
        write_folder(tmp_path / "run", RESULTS_FOLDER, write)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system-temp"] and not any(temp_folder.iterdir())


def test_results_whose_folder_gained_a_foreign_file_during_the_run_are_written_elsewhere(tmp_path, temp_folder):
    out = tmp_path / "run"
    write_results(Finished(lambda: RECORD), out)

    def user_edits_during_the_run():
        (out / "chain.csv").write_text("edited while the run went on\n")
        return RECORD

    with pytest.raises(ValueError, match="chain.csv was not written by ordercomp.*; they were written to .*ordercomp-results-"):
        write_results(Finished(user_edits_during_the_run), out)
    assert (out / "chain.csv").read_text() == "edited while the run went on\n"
    [elsewhere] = temp_folder.iterdir()
    assert sorted(os.listdir(elsewhere)) == sorted(RESULT_FILES + (".ordercomp-results",))
    assert not [p for p in out.iterdir() if p.name.startswith(".ordercomp-staging")]


@pytest.mark.parametrize("earlier", [False, True], ids=["new folder", "earlier results"])
def test_results_of_two_runs_with_the_same_out_are_both_kept(tmp_path, temp_folder, earlier):
    out, mine, theirs = tmp_path / "run", RECORD | {"chain": ["prune"]}, RECORD | {"chain": ["quantize"]}
    if earlier:
        write_results(Finished(lambda: RECORD), out)
    seen = check_results_folder(out)  # this run starts; the other one starts too, and finishes first
    write_results(Finished(lambda: theirs), out, check_results_folder(out))
    with pytest.raises(ValueError, match=rf"^could not write the results to {out} \(another run wrote its results there while "
                                         rf"this one ran\); they were written to {temp_folder}/ordercomp-results-\w+ instead$"):
        write_results(Finished(lambda: mine), out, seen)
    assert json.loads((out / "exploration.json").read_text()) == theirs
    [elsewhere] = temp_folder.iterdir()
    assert json.loads((elsewhere / "exploration.json").read_text()) == mine
    assert not [p for p in out.iterdir() if p.name.startswith(".ordercomp-staging")]


def test_results_go_into_a_new_folder_whose_parents_do_not_exist_yet(tmp_path, temp_folder):
    out = tmp_path / "runs" / "today" / "latest"  # `ordercomp explore` in a fresh checkout: runs/latest
    write_results(Finished(lambda: RECORD), out, check_results_folder(out))
    assert sorted(os.listdir(out)) == sorted(RESULT_FILES + (".ordercomp-results",))
    assert not any(temp_folder.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["runs", "system-temp"]


def test_an_empty_folder_made_for_the_results_or_the_export_receives_them(tmp_path, temp_folder):
    """Stop 45: `mkdir out`, then a run into it (what the refusals advise: "choose a new or empty folder") was refused at
    the end by the staging folder it had made inside `out`, and its files went to the temporary folder instead."""
    for out in (tmp_path / "run", tmp_path / "export"):
        out.mkdir()
    write_results(Finished(lambda: RECORD), tmp_path / "run", check_results_folder(tmp_path / "run"))
    seen = folders.check_destination(tmp_path / "export", EXPORT_FOLDER, ["model.onnx", MANIFEST], 0)
    write_folder(tmp_path / "export", EXPORT_FOLDER, export_files({"model.onnx": b"onnx"}), seen)
    assert sorted(os.listdir(tmp_path / "run")) == sorted(RESULT_FILES + (".ordercomp-results",))
    assert sorted(os.listdir(tmp_path / "export")) == [".ordercomp-export", MANIFEST, "model.onnx"]
    assert not any(temp_folder.iterdir())


@pytest.mark.parametrize("out, written", [("runs", "disk"), ("runs/latest", "disk/latest")])
def test_results_reach_a_folder_through_a_link(tmp_path, temp_folder, out, written):
    (tmp_path / "disk").mkdir()
    (tmp_path / "runs").symlink_to(tmp_path / "disk")  # runs -> a bigger disk
    write_results(Finished(lambda: RECORD), tmp_path / out, check_results_folder(tmp_path / out))
    assert sorted(os.listdir(tmp_path / written)) == sorted(RESULT_FILES + (".ordercomp-results",))
    assert (tmp_path / "runs").is_symlink() and not any(temp_folder.iterdir())


@pytest.mark.parametrize("out", ["new", "earlier"])
def test_writing_a_folder_returns_what_its_writer_returned(tmp_path, out):
    # export_compressed returns the manifest its writer made
    write_folder(tmp_path / "earlier", EXPORT_FOLDER, export_files({"model.onnx": b"onnx 1"}))
    manifest = {"files": ["model.onnx"]}
    assert write_folder(tmp_path / out, EXPORT_FOLDER, lambda folder: export_files({"model.onnx": b"onnx 2"})(folder) or manifest) == manifest


def test_a_rerun_into_its_own_results_folder_replaces_them(tmp_path, temp_folder):
    out = tmp_path / "run"
    for chain in (["prune"], ["quantize"]):
        write_results(Finished(lambda: RECORD | {"chain": chain}), out, check_results_folder(out))
    assert json.loads((out / "exploration.json").read_text())["chain"] == ["quantize"]
    assert not any(temp_folder.iterdir())


def test_the_exports_of_two_runs_into_the_same_folder_are_both_kept(tmp_path, temp_folder, digits, tiny_model):
    from ordercomp.deploy.export import check_export_folder, export_compressed

    out = tmp_path / "export"
    seen = check_export_folder(out, ["state_dict"])
    write_folder(out, EXPORT_FOLDER, export_files({"model.pt2": b"the other run's program"}))
    with pytest.raises(ValueError, match=r"\(another run wrote its export there while this one ran\); they were written to"):
        export_compressed(tiny_model, out, formats=["state_dict"], chain=[], configs={}, metrics={}, data=digits,
                          base={"source": "test"}, measure=False, seen=seen)
    assert (out / "model.pt2").read_bytes() == b"the other run's program"
    [elsewhere] = temp_folder.iterdir()
    assert (elsewhere / MANIFEST).is_file()


def test_the_dashboards_export_job_checks_its_folder_before_any_work(tmp_path, monkeypatch):
    from ordercomp.jobs import ExportSpec, JobStore, kinds

    store = JobStore(tmp_path / "store" / "jobs.sqlite")
    monkeypatch.setattr(kinds, "compress", lambda *a, **k: pytest.fail("work started"))
    real = folders.shutil.disk_usage
    monkeypatch.setattr(folders.shutil, "disk_usage", lambda path: real(path)._replace(free=1 << 20))
    spec = ExportSpec(model="digits_cnn", data="digits", chain=("prune",), formats=("state_dict",))
    with pytest.raises(ValueError, match=r"exports/0123456789ab needs about 2 MiB free for the export \(a rough estimate\)"):
        kinds.run_export(store, "0123456789ab", spec.to_dict(), lambda event: None)
    assert not (store.path.parent / "exports").exists()


@pytest.mark.parametrize("kind, record, marker", [(RESULTS_FOLDER, "exploration.json", OLD_RESULTS_MARKER),
                                                  (EXPORT_FOLDER, MANIFEST, OLD_EXPORT_MARKER)])
@pytest.mark.parametrize("content", ["nested", "long"])
def test_an_older_markers_record_that_is_no_record_is_one_line_and_read_with_bounded_memory(tmp_path, monkeypatch, kind, record,
                                                                                         marker, content):
    # a folder someone else wrote, with an older marker: its record was read whole with json.loads, so 400 kB of '['
    # stopped the command with a RecursionError traceback, and a record of any length was read into memory (here one
    # over the lowered limit, otherwise as ordercomp writes it)
    monkeypatch.setattr(folders, "MAX_RECORD_BYTES", 1000)
    out = tmp_path / "out"
    out.mkdir()
    (out / kind.marker).write_text(marker)
    padded = {"exploration.json": result_files(RECORD | {"padding": "x" * 1000})["exploration.json"],  # as ordercomp writes them
              MANIFEST: json.dumps({"files": [], "sha256": {}, "padding": "x" * 1000}, indent=1)}
    text = "[" * 200_000 + "]" * 200_000 if content == "nested" else padded[record]
    (out / record).write_text(text)
    with pytest.raises(ValueError, match=f"^{out / record} was not written by ordercomp, or was changed since: .*nothing there was changed$"):
        folders.check_destination(out, kind, [record], 0)
    assert (out / record).read_text() == text


@pytest.mark.parametrize("kind, record, marker", [(RESULTS_FOLDER, "exploration.json", OLD_RESULTS_MARKER),
                                                  (EXPORT_FOLDER, MANIFEST, OLD_EXPORT_MARKER)])
def test_an_older_markers_record_of_more_values_than_a_record_holds_is_not_parsed(tmp_path, monkeypatch, kind, record, marker):
    # JSON builds an object of ~60 bytes from three bytes: 64 MiB of '[],' under an older marker took 2.7 GB and 26 s
    # before the folder was refused (/work/notes/s45/untrusted3/a04_legacy_record_json.py); here a record as ordercomp
    # writes it, with more values than the lowered limit, is left unparsed, so it claims no file
    monkeypatch.setattr(folders, "MAX_RECORD_VALUES", 1000, raising=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / kind.marker).write_text(marker)
    padded = {"exploration.json": result_files(RECORD | {"padding": [[]] * 1000})["exploration.json"],
              MANIFEST: json.dumps({"files": [], "sha256": {}, "padding": [[]] * 1000}, indent=1)}
    (out / record).write_text(padded[record])
    with pytest.raises(ValueError, match=f"^{out / record} was not written by ordercomp, or was changed since: .*nothing there was changed$"):
        folders.check_destination(out, kind, [record], 0)
    assert folders.read_record(out / record) is None


def test_a_file_written_atomically_is_whole_or_absent_and_leaves_no_temporary_file(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    target = folder / "record.json"
    target.write_text("the earlier record")

    def interrupted(temp):
        # beside the target, on its disk: a rename from the system's temporary folder would copy across disks, not
        # replace the file at once (EXDEV)
        assert os.path.dirname(temp) == str(folder)
        open(temp, "w").write("half a rec")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        folders.write_atomically(target, interrupted)
    assert os.listdir(folder) == ["record.json"] and target.read_text() == "the earlier record"
    folders.write_atomically(target, lambda temp: open(temp, "w").write("the new record"))
    assert os.listdir(folder) == ["record.json"] and target.read_text() == "the new record"


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts this process's open files in /proc")
def test_files_written_atomically_leave_no_file_open(tmp_path):
    # the step cache writes a file per step, for hours in the dashboard's workers: one descriptor left open per write
    # would end the run with "Too many open files"
    before = len(os.listdir("/proc/self/fd"))
    for k in range(20):
        folders.write_atomically(tmp_path / f"step-{k}.json", lambda temp: None)
    assert len(os.listdir("/proc/self/fd")) == before


def test_results_are_written_without_the_report_when_it_cannot_be_drawn(tmp_path, monkeypatch, capsys):
    import ordercomp.report.meeting

    monkeypatch.setattr(ordercomp.report.meeting, "meeting_report", lambda record: {}["a drawing bug"])
    write_results(Finished(lambda: RECORD), tmp_path / "run")
    assert sorted(os.listdir(tmp_path / "run")) == sorted(set(RESULT_FILES) - {"report.html"} | {".ordercomp-results"})
    assert capsys.readouterr().err == ("the meeting report could not be drawn (KeyError: 'a drawing bug'): the results are "
                                       "written without report.html\n")
