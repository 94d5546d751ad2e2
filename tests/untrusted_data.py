"""Hostile data files from the untrusted-input audits (issue 19), made on demand, and a runner that
feeds them to ordercomp in a child process whose memory and CPU time are capped.

Each maker returns a small file's bytes (or writes a small folder) that declares far more than it
holds or carries a value a reader must refuse: CIFAR batches (pickles), images and packed model
files. `run_bounded` runs CLI commands and packed-file loads in one child process limited (RLIMIT_AS)
to BOUND_BYTES above what it holds once torch and ordercomp are imported, so a reader that trusts a
declared size fails there instead of exhausting the machine, and a hash that never ends runs into
RLIMIT_CPU.
"""
from __future__ import annotations

import codecs
import io
import json
import pickle
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

BOUND_BYTES = 3 << 29  # 1.5 GiB: the audit's promise for every reproduction
CPU_SECONDS = 120      # what the child may spend in all: the refusals take seconds, an endless hash forever


class Call:
    """Pickles as `function(*args)`, then `__setstate__(state)` when a state is given: what a hostile
    batch may ask of the globals a CIFAR reader lets through."""

    def __init__(self, function, args: tuple, state=None):
        self.function, self.args, self.state = function, args, state

    def __reduce__(self):
        return (self.function, self.args) if self.state is None else (self.function, self.args, self.state)


def batch(data, labels, protocol: int = 2) -> bytes:
    return pickle.dumps({"data": data, "labels": labels}, protocol=protocol)


def blank_images(count: int) -> np.ndarray:
    return np.zeros((count, 3 * 32 * 32), dtype=np.uint8)


def strided_batch() -> bytes:
    """281 bytes: one zero byte seen as 10**6 images of 3072 bytes (strides 0) and eight as 10**6
    labels, by calling numpy.ndarray directly; as float tensors that is 12 GB."""
    many = 10 ** 6
    return batch(Call(np.ndarray, ((many, 3072), np.dtype(np.uint8), b"\0", 0, (0, 0))),
                 Call(np.ndarray, ((many,), np.dtype(np.int64), bytes(8), 0, (0,))))


def nested_labels_batch() -> bytes:
    """One image whose label is a list holding one list twice, 33 levels deep: 2**33 entries in 3.4 kB."""
    label = [0, 0]
    for _ in range(32):
        label = [label, label]
    return batch(blank_images(1), [label])


def hashed_key_batch(levels: int = 40) -> bytes:
    """A dict whose key is a tuple holding one tuple twice, 40 levels deep: hashing it takes 2**40 steps.
    Written opcode by opcode (a dict holding it cannot be built here either)."""
    key = (0, 0)
    for _ in range(levels - 1):
        key = (key, key)
    opcodes = pickle.dumps(key, protocol=2)[2:-1]  # without PROTO and STOP
    return b"\x80\x02}" + opcodes + b"K\x00s."     # EMPTY_DICT, key, 0, SETITEM, STOP


def forged_dtype_batch() -> bytes:
    """Two images in numpy's own pickle layout, their uint8 dtype pickled with flags 63 (it holds
    object references): numpy treats the bytes as pointers ("Internal error" and worse)."""
    reconstruct = np.zeros(1).__reduce__()[0]
    dtype = Call(np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 63))
    return batch(Call(reconstruct, (np.ndarray, (0,), b"b"), (1, (2, 3072), dtype, False, bytes(2 * 3072))), [0, 1])


def unknown_codec_batch() -> bytes:
    """`_codecs.encode` (how protocol 2 writes bytes) asked for a codec that does not exist."""
    return batch(blank_images(1), Call(codecs.encode, ("0", "ordercomp-no-such-codec")))


def overlong_bytes_batch() -> bytes:
    """The image bytes as BYTEARRAY8 declaring 1.4 GB, followed by 3072 bytes."""
    good = bytearray(batch(blank_images(1), [0], protocol=5))
    at = good.index(b"\x96")  # BYTEARRAY8 <8-byte length> <bytes>
    good[at + 1:at + 9] = struct.pack("<Q", 3 << 29)
    return bytes(good)


def python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch as the genuine CIFAR files are written (Python 2's cPickle, protocol 2): text as
    SHORT_BINSTRING, the image bytes as one BINSTRING, the dtype's arguments as ints."""
    def text(value: bytes) -> bytes:
        return b"U" + bytes([len(value)]) + value

    raw = np.ascontiguousarray(images.reshape(len(images), -1)).tobytes()
    return b"".join([
        b"\x80\x02}(", text(b"data"),
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85", text(b"b"), b"\x87R(",
        b"K\x01J", struct.pack("<i", len(images)), b"M\x00\x0c\x86",
        b"cnumpy\ndtype\n", text(b"u1"), b"K\x00K\x01\x87R(K\x03", text(b"|"), b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb",
        b"\x89T", struct.pack("<I", len(raw)), raw, b"tb",
        text(b"labels"), b"](", b"".join(b"K" + bytes([label]) for label in labels), b"eu.",
    ])


def cifar_folder(root: Path, batches: dict[str, bytes], train: int = 50, test: int = 10) -> Path:
    """A CIFAR-10 folder of random images (`train` + `test`), with the batches named in `batches` replaced."""
    from ordercomp.data.cifar import CIFAR10_DIR, write_cifar

    rng = np.random.default_rng(0)
    write_cifar(root, (rng.integers(0, 256, (train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, train)),
                (rng.integers(0, 256, (test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, test)))
    for name, data in batches.items():
        (root / CIFAR10_DIR / name).write_bytes(data)
    return root


def flat_png(width: int, height: int, channels: int = 3) -> bytes:
    """A real PNG of width x height black pixels, compressed as it is written (never held whole)."""
    colour_type = {1: 0, 3: 2, 4: 6}[channels]
    row, packer = bytes(1 + width * channels), zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def image_bomb_zip() -> bytes:
    """An ImageFolder zip of 2.5 kB: a 36-megapixel PNG (105 kB, under the zip's 1 MB ratio floor,
    decoding to 144 MB and more) beside two small images."""
    return zipped({"cat/bomb.png": flat_png(6000, 6000), "cat/1.png": flat_png(8, 8), "dog/1.png": flat_png(8, 8)})


def tiled_tiff(width: int, height: int, tile: int) -> bytes:
    """A deflate-compressed greyscale TIFF of width x height pixels stored as one tile x tile tile of
    zeros: libtiff allocates the whole tile (a 16 x 16 image in 4096-pixel tiles asks for 16 MB)."""
    packer, row = zlib.compressobj(9), bytes(tile)
    pixels = b"".join(packer.compress(row) for _ in range(tile)) + packer.flush()
    tags = [(256, width), (257, height), (258, 8), (259, 8), (262, 1), (277, 1), (322, tile), (323, tile), (324, 0), (325, len(pixels))]
    data_offset = 8 + 2 + 12 * len(tags) + 4
    entries = b"".join(struct.pack("<HHII", tag, 4, 1, data_offset if tag == 324 else value) for tag, value in tags)  # LONG values
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0) + pixels


def far_tags_tiff(tags: int, size: int = 1 << 20) -> bytes:
    """An 8x8 greyscale TIFF of `size` bytes whose directory sits at its end, with `tags` extra tags (1000 and up, which
    PIL defines nothing for) each holding 8 bytes back at the file's start: reading a tag seeks there and back."""
    entries = [(256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (278, 3, 1, 8),
               (279, 4, 1, 64)] + [(1000 + index, 1, 8, 8) for index in range(tags)]
    directory_at = size - 2 - 12 * len(entries) - 4
    body = bytearray(size)
    body[:8] = b"II*\x00" + struct.pack("<I", directory_at)
    directory = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *entry) for entry in sorted(entries)) + bytes(4)
    body[directory_at:directory_at + len(directory)] = directory
    return bytes(body)


def many_scan_jpeg(repeats: int) -> bytes:
    """A progressive 200 x 200 JPEG whose smallest scan is repeated `repeats` times: each scan is a pass
    over every coefficient (20,000 repeats at 4 megapixels took a minute of CPU in 300 kB)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (200, 200), 128).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    starts = [index for index in range(len(data) - 1) if data[index:index + 2] == b"\xff\xda"] + [len(data) - 2]
    smallest = min((data[a:b] for a, b in zip(starts[1:], starts[2:])), key=len)
    return data[:-2] + smallest * repeats + b"\xff\xd9"


EPS_AS_PNG = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def packed_file(path: Path, arch, blob: bytes = bytes(8), *, version=1, text: str | None = None) -> Path:
    """A packed safetensors file holding `blob` and the description {"version", "arch"} (or `text` as it is)."""
    import torch
    from safetensors.torch import save_file

    from ordercomp.deploy.packed import METADATA_KEY

    description = text if text is not None else json.dumps({"version": version, "arch": arch})
    save_file({"blob": torch.frombuffer(bytearray(blob), dtype=torch.uint8)}, str(path), metadata={METADATA_KEY: description})
    return path


def reused_bitmap_packed(path: Path, layers: int = 200) -> Path:
    """200 linear layers of 1024 x 8192 weights, every one naming the same 1 MiB bitmap (all zero, so no
    values are stored) and the same bias: a 1 MiB file asking for 6.7 GB of float weights."""
    bitmap, bias = [0, 1 << 20], [1 << 20, 4096]
    layer = {"t": "linear", "w": {"shape": [1024, 8192], "bits": 32, "bitmap": bitmap, "values": [0, 0]}, "b": bias}
    return packed_file(path, {"t": "seq", "c": [layer] * layers}, bytes((1 << 20) + 4096))


def nested_description(levels: int) -> dict:
    """Sequences inside sequences, `levels` deep (two JSON levels each)."""
    node = {"t": "id"}
    for _ in range(levels):
        node = {"t": "seq", "c": [node]}
    return node


CHILD = r"""
import json, os, resource, sys, tempfile, traceback
from ordercomp import cli
from ordercomp.deploy.packed import PackError, load_packed

def held(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) << 10 for line in status if line.startswith(key))

cases, bound, cpu, out = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
limit, start = held("VmSize:") + bound, held("VmRSS:")
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

def run(call, args):
    if call == "cli":
        return cli.main(args)
    try:
        load_packed(args[0])
    except PackError as error:
        print(f"PackError: {error}", file=sys.stderr)
        return 2
    return 0

results = {}
for name, (call, args) in cases.items():
    with tempfile.TemporaryFile("w+") as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            code = run(call, args)
        except BaseException:
            traceback.print_exc()
            code = "raised"
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
        captured.seek(0)
        results[name] = {"code": code, "stderr": captured.read()}
results["peak_growth"] = held("VmHWM:") - start
with open(out, "w") as file:
    json.dump(results, file)
"""


def run_bounded(cases: dict[str, tuple[str, list[str]]], folder: Path) -> dict[str, dict]:
    """{name: {"code", "stderr"}} of every case, each `("cli", argv)` for `ordercomp.cli.main` or
    `("packed", [path])` for `load_packed` (code 2 and the message when it raises PackError), run one
    after another in a child process capped at BOUND_BYTES above its size after imports and at
    CPU_SECONDS; with "peak_growth", the most resident memory the child held above its size after
    imports. The child's own failure (killed by a limit) is an AssertionError with its output."""
    out = folder / "bounded-results.json"
    child = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cases), str(BOUND_BYTES), str(CPU_SECONDS), str(out)],
                           capture_output=True, text=True, timeout=1800)
    assert child.returncode == 0 and out.exists(), f"the bounded child failed ({child.returncode}): {child.stderr[-3000:]}"
    return json.loads(out.read_text())
