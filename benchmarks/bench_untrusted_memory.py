"""Untrusted files against memory: the eight resource-exhaustion attacks of stop 40's audit (r01-r04, r06-r08; r05 is
not about memory), each fed to ordercomp's public loader in a child process, with the crafted file's size, what
ordercomp did (accepted, or its refusal's one line) and the child's peak memory (maximum RSS, as getrusage
reports it in the child itself). Loading ordercomp with torch imported peaks near 700 MB (the baseline row; the
numpy-side loaders ~510 MB): a refusal should stay near it, a hole shows as gigabytes. Each child runs under
`prlimit --as` (AS_BYTES; the imports alone take ~3.6 GB of address space) and `timeout`, so a reopened hole fails
there instead of exhausting the machine; nothing crafted here runs in this process (the .pt2 graphs are only
traced, on fake tensors). The whole run takes under a minute.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_untrusted_memory.py
"""
import io
import json
import os
import pickle
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
import numpy as np
import torch
import untrusted_data as ud
import untrusted_files as uf

AS_BYTES = 8_000_000_000  # each child's address space: ~3.6 GB after imports, the rest for the refusal path
SECONDS = 120             # each child's wall time
GIB, MIB = 1 << 30, 1 << 20


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def deflated_zeros(head: bytes, block: int, count: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC, size) of `head` followed by `count` blocks of `block` zero bytes: one full-flushed
    block compressed once and repeated, so a stream inflating to gigabytes takes a second to make."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = packer.compress(head) + packer.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(block)
    repeated = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    return start + repeated * count + packer.flush(), crc, len(head) + block * count


def zip_with_deflated(members: dict[str, bytes], name: str, head: bytes, block: int, count: int) -> bytes:
    """A zip of `members` (stored) plus `name` holding `head` and `count` x `block` zero bytes, deflated: written
    stored as its raw deflate stream, then marked deflated with the inflated CRC and size in its local header
    (method at offset 8) and central directory entry (offset 10)."""
    stream, crc, size = deflated_zeros(head, block, count)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.writestr(name, stream)
    data = bytearray(buffer.getvalue())
    info = zipfile.ZipFile(io.BytesIO(bytes(data))).getinfo(name)
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(name)] != name.encode():
        entry = data.index(b"PK\x01\x02", entry + 4)
    for method_at in (info.header_offset + 8, entry + 10):
        times = struct.unpack_from("<HH", data, method_at + 2)
        struct.pack_into("<HHHIII", data, method_at, zipfile.ZIP_DEFLATED, *times, crc, len(stream), size)
    return bytes(data)


def zip_bomb_pt(count: int) -> bytes:
    """r01: a torch state dict of one uint8 tensor of `count` bytes whose storage record is deflated zeros."""
    storage = object()

    class Tensor:
        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storage, 0, (count,), (1,), False, OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.ByteStorage, "0", "cpu", count) if obj is storage else None

    pkl = io.BytesIO()
    Pickler(pkl, protocol=2).dump({"fc.weight": Tensor()})
    members = {"archive/data.pkl": pkl.getvalue(), "archive/byteorder": b"little", "archive/version": b"3\n"}
    return zip_with_deflated(members, "archive/data/0", b"", MIB, count // MIB)


def void_npz(item: int, count: int) -> bytes:
    """r03: x.npy of `count` elements of dtype |V`item` (deflated zeros) and y.npy of `count` labels."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": f"|V{item}", "fortran_order": False, "shape": (count,)})
    labels = io.BytesIO()
    np.lib.format.write_array(labels, np.zeros(count, dtype=np.int64))
    return zip_with_deflated({"y.npy": labels.getvalue()}, "x.npy", header.getvalue(), item, count)


def dicts_pickle(megabytes: int) -> bytes:
    """r04/r07: a pickle of one-byte EMPTY_DICT opcodes, each building an object (~70 bytes of memory per byte)."""
    return b"\x80\x02" + b"}" * (megabytes << 20) + b"."


def stored_pt(data_pkl: bytes) -> bytes:
    """A torch file (zip, stored members) whose data.pkl is `data_pkl`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


class Allocating(torch.nn.Module):
    """r06: a tiny classifier whose graph also calls aten.ones of a size fixed at export (never run here)."""

    def __init__(self, elements: int):
        super().__init__()
        self.elements, self.fc = elements, torch.nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) + torch.ones(self.elements).sum() * 0


CHILD = r"""
import json, sys
from pathlib import Path
path, work = Path(sys.argv[1]), Path(sys.argv[2])

def case():
{body}

try:
    said = case()
    result = {{"accepted": True, "message": said or ""}}
except BaseException as error:
    kind = type(error)
    result = {{"accepted": False, "ordercomp": kind.__module__.startswith("ordercomp"), "message": f"{{kind.__name__}}: {{error}}"}}
import resource
result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT", json.dumps(result), flush=True)
"""


def run_child(body: str, path: Path, work: Path) -> tuple[dict | None, float, str]:
    """(the child's RESULT or None when it died first, seconds, the tail of its stderr) for a case body. The child
    reports its own peak: wait4's figure for the prlimit/timeout chain would include this process's size at the fork."""
    code = CHILD.format(body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    command = ["prlimit", f"--as={AS_BYTES}", "timeout", str(SECONDS), sys.executable, "-c", code, str(path), str(work)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.time()
    child = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, errors="replace")
    seconds, stdout, stderr = time.time() - start, child.stdout, child.stderr
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    result = json.loads(lines[-1][len("RESULT "):].replace(str(work), "$TMP")) if lines else None
    if result is None:
        stderr = f"exit {child.returncode}: " + (stderr.strip().splitlines() or [""])[-1]
    return result, seconds, stderr


def outcome(result: dict | None, stderr: str) -> str:
    """ACCEPTED, refused (an ordercomp error) or FAILED (any other exception), then the line, cut at 110 characters
    (the temporary folder's path in it written $TMP)."""
    if result is None:
        return f"NO RESULT  {stderr[:110]}"
    if result["accepted"]:
        return f"ACCEPTED   {result['message'][:110]}"
    lines = result["message"].splitlines() or [""]
    more = f" [+{len(lines) - 1} more lines]" if len(lines) > 1 else ""
    return f"{'refused' if result['ordercomp'] else 'FAILED':10s} {lines[0][:110]}{more}"


def size(count: int) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{count / 1024:.1f} kB" if count >= 1024 else f"{count} B"


root = Path(tempfile.mkdtemp(prefix="bench-untrusted-memory-"))
print(f"torch {torch.__version__}, Python {platform.python_version()}, CPU {cpu_model()} ({os.cpu_count()} cores), "
      f"memory {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.1f} GiB; "
      f"each child: prlimit --as={AS_BYTES / 1e9:.0f} GB, timeout {SECONDS} s")
torch.manual_seed(0)
uploads = root / "uploads"
cases = []  # (name, crafted file, the child's body: returns a line when accepted, raises when refused)

cases.append(("baseline (imports only)", None, """
    import ordercomp.uploads, ordercomp.models.checkpoints, ordercomp.data.datasets
    return "imports only"
"""))

KEEP = """
    from ordercomp.uploads import keep_checkpoint
    keep_checkpoint(work / "uploads", path.name, path.read_bytes())
"""
(root / "bomb.pt").write_bytes(zip_bomb_pt(2 * GIB))
cases.append(("r01 .pt zip bomb, 2 GiB declared", root / "bomb.pt", KEEP))

torch.save({"head.2.weight": torch.zeros(1).expand(16_000_000, 32)}, root / "classes.pt")
cases.append(("r02 stride-0 weight, 16M classes", root / "classes.pt", """
    from ordercomp.uploads import check_checkpoint, keep_checkpoint
    kept = keep_checkpoint(work / "uploads", path.name, path.read_bytes())
    return check_checkpoint(kept, "cnn_tiny")
"""))

LOAD_DATA = """
    from ordercomp.data.datasets import load_data
    bundle = load_data(str(path))
    return f"{bundle.num_classes} classes"
"""
(root / "void.npz").write_bytes(void_npz(1_000_000, 2000))
cases.append(("r03 .npz of |V1000000 x 2000", root / "void.npz", LOAD_DATA))

dicts = dicts_pickle(20)
cifar = ud.cifar_folder(root / "cifar", {"data_batch_1": dicts})
cases.append(("r04a CIFAR batch of 20M '}'", cifar / "cifar-10-batches-py" / "data_batch_1", """
    from ordercomp.data.datasets import load_data
    bundle = load_data(str(path.parent.parent))
    return f"{bundle.num_classes} classes"
"""))

(root / "dicts.pt").write_bytes(stored_pt(dicts))
cases.append(("r04b .pt data.pkl of 20M '}'", root / "dicts.pt", KEEP))

LOAD_PROGRAM = """
    import torch
    from ordercomp.models.checkpoints import load_program
    program = load_program(path)
    program(torch.zeros(2, 1, 8, 8))  # reached only when the file was accepted: forward checks again, then allocates
    return "by load_program, and its forward ran"
"""
(root / "alloc.pt2").write_bytes(uf.genuine_pt2(Allocating(1 << 33)))  # export traces on fake tensors: nothing allocated
cases.append(("r06 .pt2 calling aten.ones(2**33)", root / "alloc.pt2", LOAD_PROGRAM))

small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
(root / "samples.pt2").write_bytes(uf.sample_inputs_of_dicts(uf.genuine_pt2(small), 20 << 20))
cases.append(("r07 .pt2 sample inputs of 20M '}'", root / "samples.pt2", LOAD_PROGRAM))

(root / "many.npz").write_bytes(uf.many_members(1_000_000))
cases.append(("r08 .npz of 1M empty entries", root / "many.npz", LOAD_DATA))

try:
    for name, path, body in cases:
        shutil.rmtree(uploads, ignore_errors=True)
        result, seconds, stderr = run_child(body, path or root, root)
        peak = f"{result['peak_mb']:6.0f}" if result else "     ?"
        print(f"{name:36s} file {size(path.stat().st_size) if path else '-':>10s}  peak {peak} MB  {seconds:5.1f} s  "
              f"{outcome(result, stderr)}")
finally:
    shutil.rmtree(root)
