"""Program files: crafted .pt2 and TorchScript files run nothing; valid .pt2 programs serve as bases."""
from __future__ import annotations

import io
import json
import zipfile

import pytest
import torch
from torch import nn

from ordercomp.models.checkpoints import CheckpointError, load_program, resolve_model
from ordercomp.cli import main
from ordercomp.exploration.explorer import Explorer, ExploreSpec, compress
from ordercomp.metrics import measure
from ordercomp.train import Budget
from testkit import Payload
from untrusted_files import genuine_pt2, record, rewrite, with_record

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.* deprecation notices


class FileWriter(nn.Module):
    """TorchScript whose forward creates a file through torch.from_file(shared=True)."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        written = torch.from_file(self.marker, shared=True, size=4, dtype=torch.uint8)
        return x.flatten(1)[:, :10] + written.sum() * 0


@pytest.fixture(scope="module")
def pt2_bytes(tiny_model):
    return genuine_pt2(tiny_model)


def pickled(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def config_with(archive: bytes, name: str, edit) -> bytes:
    changed = record(archive, name)
    edit(changed["config"])
    return json.dumps(changed).encode()


def pickled_weight(archive, marker):
    def mark(config):
        config[next(iter(config))]["use_pickle"] = True
    return {"data/weights/weight_0": pickled(Payload(marker)), "data/weights/model_weights_config.json":
            config_with(archive, "model_weights_config.json", mark)}


def pickled_constant(archive, marker):
    def add(config):
        config["evil"] = {"path_name": "tensor_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
    return {"data/constants/tensor_0": pickled(Payload(marker)),
            "data/constants/model_constants_config.json": config_with(archive, "model_constants_config.json", add)}


def opaque_constant(archive, marker):
    import pickle

    def add(config):
        config["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": None}
    return {"data/constants/opaque_obj_0": pickle.dumps(Payload(marker)),
            "data/constants/model_constants_config.json": config_with(archive, "model_constants_config.json", add)}


def pickled_sample_inputs(archive, marker):
    # torch.export.load retries a sample-input file that weights_only refuses with a full unpickle
    return {"data/sample_inputs/model.pt": pickled(Payload(marker))}


def compiled_code(archive, marker):
    return {"data/aotinductor/model/model.so": b"\x7fELF"}


@pytest.mark.parametrize("craft, message", [
    (pickled_weight, "pickled weight"), (pickled_constant, "pickled constant"), (opaque_constant, "pickled constant"),
    (pickled_sample_inputs, "sample inputs"), (compiled_code, "AOTInductor"),
])
def test_crafted_pt2_is_refused_and_runs_nothing(tmp_path, digits, pt2_bytes, craft, message):
    marker, path = tmp_path / "marker", tmp_path / "evil.pt2"
    path.write_bytes(rewrite(pt2_bytes, craft(pt2_bytes, marker)))
    with pytest.raises(CheckpointError, match=message) as error:
        resolve_model(str(path), digits)
    assert "\n" not in str(error.value) and "could run code" in str(error.value)
    assert not marker.exists()


def test_crafted_pt2_through_the_cli_leaves_no_trace(tmp_path, capsys, pt2_bytes):
    marker, path, out = tmp_path / "marker", tmp_path / "evil.pt2", tmp_path / "out"
    path.write_bytes(rewrite(pt2_bytes, pickled_weight(pt2_bytes, marker)))
    assert main(["explore", "--model", str(path), "--methods", "prune,quantize", "--out", str(out), "--cache", "", "--quiet"]) == 2
    assert "pickled weight" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def test_unrewritten_archive_still_loads(tmp_path, digits, pt2_bytes):
    """The crafting helper itself keeps a valid archive valid, so the refusals above come from the payloads."""
    (tmp_path / "same.pt2").write_bytes(rewrite(pt2_bytes, {}))
    model, source = resolve_model(str(tmp_path / "same.pt2"), digits)
    assert source["source"] == "program" and model(digits.example_input(5)).shape == (5, 10)


def test_graph_calling_a_python_function_is_refused(tmp_path, digits, pt2_bytes):
    """A crafted graph may name any attribute path under torch (torch.os.system resolves); only tensor operators run."""
    def call_system(program):
        node = next(n for n in program["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.relu_.default")
        node["target"] = "torch.os.system"
    (tmp_path / "system.pt2").write_bytes(with_record(pt2_bytes, call_system))
    with pytest.raises(CheckpointError, match="not a readable"):  # torch's verifier refuses a Python callable
        resolve_model(str(tmp_path / "system.pt2"), digits)


def test_graph_calling_a_file_operator_is_refused(tmp_path, digits, pt2_bytes):
    """torch's verifier accepts any operator; aten.from_file(shared=True) would create a file when the model runs."""
    marker = tmp_path / "marker"
    def read_file(program):
        node = next(n for n in program["graph_module"]["graph"]["nodes"] if n["target"] == "torch.ops.aten.relu_.default")
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [{"name": "filename", "arg": {"as_string": str(marker)}, "kind": 1},
                          {"name": "shared", "arg": {"as_bool": True}, "kind": 1}, {"name": "size", "arg": {"as_int": 4}, "kind": 1}]
    (tmp_path / "writer.pt2").write_bytes(with_record(pt2_bytes, read_file))
    with pytest.raises(CheckpointError, match="calls aten.from_file.default, an operator that reads or writes files; it was not run"):
        resolve_model(str(tmp_path / "writer.pt2"), digits)
    assert not marker.exists()


class UncheckedSum(nn.Module):
    """A classifier whose graph also sums 12 elements of a 10-float buffer with aten.segment_reduce(unsafe=True), which
    reads them whether or not they exist (two from the heap past it; lengths of 10**9 kill the process)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.register_buffer("data", torch.zeros(10))
        self.register_buffer("lengths", torch.tensor([12]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + torch.ops.aten.segment_reduce(self.data, "sum", lengths=self.lengths, unsafe=True) * 0


def test_graph_calling_an_operator_that_does_not_check_its_bounds_is_refused(tmp_path, digits):
    """An aten operator, so it passed; `ordercomp measure` (a baseline job's worker alike) then read gigabytes past the
    buffer and died of SIGSEGV (/work/notes/s45/untrusted3/a06_pt2_unsafe_operator.py)."""
    from ordercomp.models import programs

    path = tmp_path / "unchecked.pt2"
    torch.export.save(torch.export.export(UncheckedSum().eval(), (digits.example_input(2),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    with pytest.raises(CheckpointError, match=r"^unchecked.pt2 calls aten.segment_reduce.default, an operator that does not check "
                                              r"its bounds \(it reads and writes past its tensors when told to\); it was not run"):
        resolve_model(str(path), digits)
    assert not any(programs._allowed(getattr(torch.ops.aten, name).default)  # to_dense() of their tensors writes past its buffer
                   for name in ("_sparse_coo_tensor_unsafe", "_sparse_coo_tensor_with_dims_and_tensors", "_to_sparse"))
    assert programs._allowed(torch.ops.aten._unsafe_view.default)  # checks its size, and decomposed graphs call it


class Hoarder(nn.Module):
    """A classifier whose graph also asks for `elements` floats, a size fixed at export: a few kB of file, any memory."""

    def __init__(self, elements: int):
        super().__init__()
        self.fc, self.elements = nn.Linear(64, 10), elements

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) + torch.ones(self.elements).sum() * 0


def test_a_program_whose_graph_would_hold_more_than_the_machine_has_is_refused_before_it_runs(tmp_path, digits, pt2_bytes,
                                                                                             monkeypatch):
    # before: a 14 kB .pt2 whose graph calls aten.ones([2**29]) passed every check and took 2 GiB on its first run (any
    # size it names: its bytes do not hold it); a run on fake tensors now finds what it would hold, and on a machine of
    # 32 MiB a graph of 64 MiB is refused where it is read and where it would run
    from ordercomp.models import programs

    monkeypatch.setattr(programs, "machine_memory", lambda: 32 << 20)
    path = tmp_path / "hoard.pt2"
    torch.export.save(torch.export.export(Hoarder(1 << 24), (digits.example_input(2),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    assert path.stat().st_size < 20_000
    # what it holds does not shrink with the batch, so not even one image at a time fits
    message = r"^hoard.pt2: its graph would hold 64.0 MiB at once on a 1x1x8x8 input, more than 50% of this machine's 32.0 MiB"
    with pytest.raises(CheckpointError, match=message + ", so it was not run: export the model for smaller inputs"):
        resolve_model(str(path), digits)
    program = programs.ProgramModel(torch.export.load(str(path)).module(), programs.PT2, path)  # one that kept no example
    with pytest.raises(programs.ProgramError, match=message):
        program(digits.example_input(5))
    samples = io.BytesIO()
    torch.save(((torch.zeros(2, 3, 8, 8),), {}), samples)  # an example the graph cannot take: torch never writes one
    (tmp_path / "other.pt2").write_bytes(rewrite(pt2_bytes, {"data/sample_inputs/model.pt": samples.getvalue()}))
    with pytest.raises(CheckpointError, match=r"^other.pt2 does not run on the input it was exported with \(\w+\); nothing"):
        resolve_model(str(tmp_path / "other.pt2"), digits)
    (tmp_path / "genuine.pt2").write_bytes(pt2_bytes)  # an ordinary program holds a few kB and runs
    model, _ = resolve_model(str(tmp_path / "genuine.pt2"), digits)
    assert model(digits.example_input(5)).shape == (5, 10)


class Spreader(nn.Module):
    """A classifier whose run holds 1 MiB for each image it is given."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x.flatten(1).repeat(1, 1 << 12)  # 64 x 4096 floats an image
        return self.fc(x.flatten(1)) + spread.sum(1, keepdim=True) * 0


def test_a_program_too_large_for_a_whole_batch_runs_in_parts_that_fit(tmp_path, digits, monkeypatch):
    # before: ordercomp evaluates 256 images at a time, and a program that held more than half the machine on 256 was
    # refused, though a few images at a time fit; it now runs in parts of the largest batch that fits, with the same logits
    from ordercomp.models import programs

    monkeypatch.setattr(programs, "machine_memory", lambda: 32 << 20)
    path, model = tmp_path / "spread.pt2", Spreader().eval()
    torch.export.save(torch.export.export(model, (digits.example_input(2),), dynamic_shapes=({0: torch.export.Dim("batch")},)),
                      str(path))
    program, _ = resolve_model(str(path), digits)
    images = digits.test.tensors[0][:40]
    with torch.no_grad():
        assert torch.allclose(program(images), model(images), atol=1e-5)
    assert 1 < program.fitting_batches[(tuple(images.shape), images.dtype)] < 16 < len(images)


class Grinder(nn.Module):
    """A classifier whose graph also does hours of work on values fixed at export, in a few kB of file and under a GiB."""

    def __init__(self, work: str):
        super().__init__()
        self.fc, self.work = nn.Linear(64, 10), work

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.work == "products":  # twenty products of 8192 x 8192 matrices: 22 TFLOP
            grist = torch.ones(8192, 8192)
            for _ in range(20):
                grist = grist @ grist
        elif self.work == "broadcast sum":  # one number read as 2**42 (a view allocates nothing): 4.4 T elements
            grist = torch.ones(1).expand(1 << 42)
        else:  # the inverse of a 20480 x 20480 matrix: 8.6 T operations, from 1.6 GiB
            grist = torch.linalg.inv(torch.eye(20480))
        return self.fc(x.flatten(1)) + grist.sum() * 0


@pytest.mark.parametrize("work", ["products", "broadcast sum", "matrix inverse"])
def test_a_program_whose_graph_would_work_for_hours_is_refused_before_it_runs(tmp_path, digits, work):
    # before: a .pt2 of a few kB passed every check and kept the machine's cores busy for hours on its first run (its
    # work is fixed at export, not in its bytes); a run on fake tensors now counts its FLOPs and the elements its ops read
    from ordercomp.models import programs

    path = tmp_path / "grind.pt2"
    torch.export.save(torch.export.export(Grinder(work), (digits.example_input(2),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), str(path))
    assert path.stat().st_size < 40_000
    message = r"^grind.pt2: its graph would do \d+\.\d TFLOP an image on a {}x1x8x8 input, more than the heaviest image " \
              r"classifiers \(1.5\), so it was not run: export the model for smaller inputs$"
    with pytest.raises(CheckpointError, match=message.format(2)):
        resolve_model(str(path), digits)
    program = programs.ProgramModel(torch.export.load(str(path)).module(), programs.PT2, path)  # one that kept no example
    with pytest.raises(programs.ProgramError, match=message.format(3)):
        program(digits.example_input(3))


@pytest.fixture()
def writer_script(tmp_path):
    marker = tmp_path / "written"
    torch.jit.script(FileWriter(str(marker))).save(str(tmp_path / "writer.pt"))  # a TorchScript file named like weights
    return tmp_path / "writer.pt", marker


def test_torchscript_runs_only_when_trusted(writer_script, digits):
    path, marker = writer_script
    with pytest.raises(CheckpointError, match="is TorchScript: running it executes code.*--trust-torchscript"):
        resolve_model(str(path), digits, architecture="cnn_tiny")
    assert not marker.exists()
    model, _ = resolve_model(str(path), digits, trust_torchscript=True)
    assert marker.exists(), "the crafted file does write when run, so the refusal above is what kept the disk clean"
    assert model(digits.example_input(2)).shape == (2, 10)


@pytest.mark.parametrize("command", [["explore", "--methods", "prune,quantize"], ["apply", "--chain", "prune"]])
def test_untrusted_torchscript_through_the_cli_leaves_no_trace(writer_script, tmp_path, capsys, command):
    path, marker = writer_script
    out = tmp_path / "out"
    target = ["--out", str(out), "--cache", "", "--quiet"] if command[0] == "explore" else ["--export", str(out)]
    assert main(command + ["--model", str(path), "--arch", "cnn_tiny"] + target) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("ordercomp: error:") == 1 and "--trust-torchscript" in err.splitlines()[-1] and "Traceback" not in err
    assert not marker.exists() and not out.exists()


def test_a_pt2_program_is_a_base_that_is_measured_and_the_user_is_told_it_can_only_be_measured(tmp_path, pt2_bytes, capsys, tiny_model, digits):
    """Issue 14: every refusal told the user to give a state dict with --arch, impossible for a class of their own."""
    path = tmp_path / "tiny.pt2"
    path.write_bytes(pt2_bytes)
    outcome = compress(model=str(path), chain=["prune", "quantize"], budget=Budget(epochs=0.1), device="cpu")
    exported = measure(tiny_model, digits, "test", latency=False)  # the program is tiny_model exported: the same figures
    assert outcome.base_metrics["accuracy"] == pytest.approx(exported.accuracy) and outcome.base_metrics["macs"] == exported.macs
    reason = outcome.steps[0].reason
    assert outcome.steps[0].status == "incompatible" and f"ordercomp measure --model {path}" in reason and "--arch" not in reason
    out = tmp_path / "run"
    # a program can only be measured: one line before any step runs, nothing written
    assert main(["explore", "--model", str(path), "--methods", "prune,sparsify", "--seeds", "1", "--epochs", "0.1",
                 "--out", str(out), "--cache", "", "--quiet", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tiny.pt2 is a torch.export (.pt2) program" in err
    assert f"can be measured (ordercomp measure --model {path})" in err and "--model FILE.py:NAME --weights FILE" in err
    assert not (out / "exploration.json").exists()
    assert main(["apply", "--model", str(path), "--chain", "prune", "--export", str(tmp_path / "export"), "--device", "cpu"]) == 2
    assert "prune is incompatible" in capsys.readouterr().err and not (tmp_path / "export").exists()
    assert main(["measure", "--model", str(path), "--device", "cpu", "--cache", ""]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"model: {path} (torch.export (.pt2) program)" and lines[1].startswith("data: digits, test split of 359 images")
    figures = dict(line.split(": ", 1) for line in lines[2:])
    assert list(figures) == ["accuracy", "parameters", "size", "MACs", "BitOps", "latency at batch 1", "latency at batch 32", "peak memory"]
    assert figures["accuracy"] == f"{outcome.base_metrics['accuracy']:.2f} %" and figures["MACs"] == f"{outcome.base_metrics['macs']:,.0f}"


def test_a_torchscript_base_never_reuses_the_steps_of_a_pt2_base_with_the_same_weights(tmp_path, tiny_model, pt2_bytes, digits):
    """Issue 14: with the cache on, a TorchScript run reused the .pt2 run's message: the step cache keyed a base by its
    weights alone, which both files of one model share (and so would two programs with the same weights and another graph)."""
    (tmp_path / "tiny.pt2").write_bytes(pt2_bytes)
    torch.jit.trace(tiny_model.eval(), digits.example_input(2)).save(str(tmp_path / "tiny.ts"))
    reasons = {}
    for name in ("tiny.pt2", "tiny.ts"):
        spec = ExploreSpec(model=str(tmp_path / name), methods=("prune", "quantize"), seeds=1, device="cpu", trust_torchscript=True)
        explorer = Explorer(spec, cache_dir=tmp_path / "cache", data=digits)
        base, _ = explorer.load_base()
        [result] = explorer.run_plan(base, [("prune",)])
        reasons[name] = result.reason
    assert "torch.export (.pt2) program" in reasons["tiny.pt2"] and "TorchScript program" in reasons["tiny.ts"]


def test_a_program_with_a_fixed_batch_size_is_explained(tmp_path, digits, tiny_model):
    torch.export.save(torch.export.export(tiny_model.eval(), (torch.zeros(2, 1, 8, 8),)), str(tmp_path / "fixed.pt2"))
    with pytest.raises(CheckpointError, match="dynamic batch dimension"):
        resolve_model(str(tmp_path / "fixed.pt2"), digits)


def test_load_program_defaults_to_refusing_torchscript(writer_script):
    path, marker = writer_script
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_program(path)
    assert not marker.exists()
