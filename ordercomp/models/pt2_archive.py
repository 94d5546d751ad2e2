"""What a torch.export (.pt2) archive must hold before torch reads it, and the archive torch then reads.

Besides the strings it evaluates (`pt2_record`), torch.export.load unpickles weights, constants and
sample inputs it cannot read as raw tensors, loads AOTInductor compiled code, allocates the size an
empty weight record declares, and falls back to an older reader, which unpickles, when reading
fails. `checked_archive` refuses such an archive, raising `Unsafe` (torch would run something from
it) or `Malformed` (it is not what torch.export.save writes), and otherwise returns the archive
rebuilt from the members it checked, so torch reads exactly what was checked:

- members: under one root folder, each name once, from the layout torch.export.save writes,
  stored uncompressed as torch writes them and together no larger than the file (no zip bomb,
  no members sharing bytes);
- JSON records: at most MAX_JSON_BYTES and MAX_DEPTH levels, every string checked by `pt2_record`;
- weights and constants: raw tensors only, each record holding the bytes its declared dtype,
  sizes, strides and storage offset need, so nothing is allocated beyond what the file holds;
- sample inputs: a stored torch zip that `torch.load(weights_only=True)` reads (torch falls back
  to a full unpickle when that fails), its pickle of at most `pickles.MAX_OPCODES` opcodes.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from typing import BinaryIO

import torch

from .. import archives
from ..pickles import PickleRefused, check_opcodes
from .pt2_record import MAX_DEPTH, depth, record_refusal

MAX_JSON_BYTES = 8 << 20         # MobileNetV2's program record is 0.44 MB; torch takes ~20 MB of memory per MB it reads
MAX_MEMBERS = 100_000
MAX_DIMENSION = 1 << 48          # sizes, strides and offsets; more than any tensor on any machine
PROGRAM, WEIGHTS, CONSTANTS, SAMPLES = ("models/model.json", "data/weights/model_weights_config.json",
                                        "data/constants/model_constants_config.json", "data/sample_inputs/model.pt")
PAYLOADS = {"weight": ("data/weights/", "weight_"), "constant": ("data/constants/", "tensor_")}
LAYOUT = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|models/model\.json|"
                    r"data/(weights|constants)/[A-Za-z0-9_.]{1,200}|data/sample_inputs/model\.pt|extra/[A-Za-z0-9_.-]{1,200}")
OLD_PROGRAM_FILE = "serialized_exported_program.json"  # torch <= 2.7 wrote it beside pickled weights
ROOT = re.compile(r"[^/\\\x00]{1,255}")  # torch.export.save names it after the file: "my model (v2)"


class Unsafe(ValueError):
    """A part of the archive torch would unpickle, load as compiled code or evaluate as Python."""


class Malformed(ValueError):
    """A part of the archive that is not what torch.export.save writes."""


def checked_archive(data: bytes) -> bytes:
    """The archive rebuilt from its checked members; raises Unsafe or Malformed naming the refused part."""
    archive = open_zip(io.BytesIO(data), "the file")
    members = _layout(stored_members(archive, len(data)))
    records = {name: _record(archive, members[name], name) for name in (WEIGHTS, CONSTANTS, PROGRAM)}
    for kind, name in (("weight", WEIGHTS), ("constant", CONSTANTS)):
        _check_payloads(records[name], kind, members)
    for name, record in records.items():
        refusal = record_refusal(record)
        if refusal:
            raise Unsafe(f"{refusal} in {name}")
    _check_sample_inputs(_read(archive, members[SAMPLES]))
    return _rebuilt(archive, members.values())


def open_zip(source: BinaryIO, what: str) -> zipfile.ZipFile:
    """A zip archive of at most MAX_MEMBERS entries (counted before zipfile parses them), else Malformed."""
    try:
        return archives.open_zip(source, what, MAX_MEMBERS)
    except archives.TooManyMembers as refusal:
        raise Malformed(f"{refusal}; torch writes far fewer") from None
    except archives.ZipRefused as refusal:
        raise Malformed(str(refusal)) from None


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:  # a damaged header, or bytes that fail their CRC
        raise Malformed(f"a damaged member {info.filename[:80]!r} ({type(error).__name__})") from None


def stored_members(archive: zipfile.ZipFile, archive_bytes: int) -> list[zipfile.ZipInfo]:
    """The members of a torch zip, each stored uncompressed (as torch writes them) and named once, together
    no larger than the archive: reading them all takes no more memory than the archive's own bytes."""
    members = archive.infolist()
    twice = [name for name, count in Counter(info.filename for info in members).items() if count > 1]
    if twice:
        raise Malformed(f"the member {twice[0][:80]!r} twice")
    packed = [info.filename for info in members if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1
              or info.file_size != info.compress_size]
    if packed:
        raise Malformed(f"a compressed or encrypted member {packed[0][:80]!r}; torch stores its members as they are")
    if sum(info.file_size for info in members) > archive_bytes:
        raise Malformed("members declaring more bytes than the archive holds")
    return members


def _layout(members: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    """The members by their name under the archive's one root folder, each from the layout torch.export.save writes."""
    if any(info.filename.rpartition("/")[2] == OLD_PROGRAM_FILE for info in members):
        raise Unsafe("a program in the layout of torch 2.7 and older, whose weights load with pickle")
    roots = {info.filename.partition("/")[0] for info in members}
    if len(roots) != 1:
        raise Malformed(f"members under {len(roots)} root folders instead of one")
    if not ROOT.fullmatch(next(iter(roots))):
        raise Malformed(f"a root folder named {next(iter(roots))[:80]!r}")
    named = {info.filename.partition("/")[2]: info for info in members}
    for name in named:
        if name.startswith("data/aotinductor/"):
            raise Unsafe("compiled AOTInductor code")
        if name in ("data/weights/model.pt", "data/constants/model.pt"):
            raise Unsafe("pickled weights in the legacy layout")
        if not LAYOUT.fullmatch(name):
            raise Malformed(f"an unexpected member {name[:80]!r}")
    if PROGRAM not in named:
        raise Unsafe("no exported program in the current format (older archives load weights with pickle)")
    missing = [name for name in (WEIGHTS, CONSTANTS, SAMPLES) if name not in named]
    if missing:
        raise Malformed(f"no {missing[0]}")
    return named


def _record(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str):
    """A JSON record of the archive, parsed within the size and nesting limits."""
    if info.file_size > MAX_JSON_BYTES:
        raise Malformed(f"{name} of {info.file_size:,} bytes (the limit is {MAX_JSON_BYTES >> 20} MB)")
    try:
        record = json.loads(_read(archive, info).decode("utf-8"))
    except RecursionError:
        raise Malformed(f"{name} nested deeper than Python can read") from None
    except ValueError as error:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Malformed(f"{name} is not readable JSON ({type(error).__name__})") from None
    if depth(record) > MAX_DEPTH:
        raise Malformed(f"{name} nested more than {MAX_DEPTH} levels deep")
    return record


def _check_payloads(record, kind: str, members: dict[str, zipfile.ZipInfo]) -> None:
    """Every weight (or constant) is a raw tensor whose record holds what its metadata declares."""
    folder, prefix = PAYLOADS[kind]
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict):
        raise Malformed(f"a {kind}s record without its config")
    for fqn, payload in config.items():
        path_name = payload.get("path_name") if isinstance(payload, dict) else None
        if not isinstance(path_name, str) or payload.get("use_pickle") is not False or not path_name.startswith(prefix):
            raise Unsafe(f"pickled {kind} {fqn[:60]}")
        if folder + path_name not in members:
            raise Malformed(f"{kind} {fqn[:60]} without its record {path_name[:60]!r}")
        needed, present = _tensor_bytes(payload.get("tensor_meta"), f"{kind} {fqn[:60]}"), members[folder + path_name].file_size
        if needed > present:
            raise Malformed(f"{kind} {fqn[:60]} declares {needed:,} bytes but its record holds {present:,}")


def _tensor_bytes(meta, what: str) -> int:
    """The bytes a raw tensor record must hold for its declared dtype, sizes, strides and storage offset."""
    if not isinstance(meta, dict):
        raise Malformed(f"{what} without its tensor metadata")
    itemsize = _itemsize(meta.get("dtype"), what)
    sizes, strides = _dimensions(meta.get("sizes"), what), _dimensions(meta.get("strides"), what)
    (offset,) = _dimensions([meta.get("storage_offset")], what)
    if len(sizes) != len(strides):
        raise Malformed(f"{what} with {len(sizes)} sizes but {len(strides)} strides")
    if 0 in sizes:
        return 0
    return (offset + sum((size - 1) * stride for size, stride in zip(sizes, strides)) + 1) * itemsize


def _itemsize(code, what: str) -> int:
    """Bytes per element of a dtype as torch's serializer numbers them (torch._export.serde.schema.ScalarType)."""
    from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE

    dtype = _SERIALIZE_TO_TORCH_DTYPE.get(code) if type(code) is int else None
    if dtype is None:
        raise Malformed(f"{what} of an unknown dtype ({str(code)[:20]})")
    return dtype.itemsize


def _dimensions(values, what: str) -> list[int]:
    """Sizes, strides or an offset: plain integers (torch reads raw tensors only with as_int) in [0, MAX_DIMENSION]."""
    if not isinstance(values, list):
        raise Malformed(f"{what} without sizes and strides")
    numbers = [value.get("as_int") if isinstance(value, dict) and set(value) == {"as_int"} else None for value in values]
    if not all(type(number) is int and 0 <= number <= MAX_DIMENSION for number in numbers):
        raise Malformed(f"{what} with a size, stride or offset that is not an integer from 0 to 2**48")
    return numbers


def check_torch_zip(archive: zipfile.ZipFile, archive_bytes: int) -> None:
    """A `torch.save` zip's members stored as torch writes them (`stored_members`) and its pickle of at most
    `pickles.MAX_OPCODES` operations (torch's weights-only unpickler builds an object per operation: ~70 bytes of memory
    a byte of '}'); raises Malformed or PickleRefused."""
    for info in stored_members(archive, archive_bytes):
        if info.filename.rpartition("/")[2] == "data.pkl":
            check_opcodes(io.BytesIO(_read(archive, info)))


def _check_sample_inputs(data: bytes) -> None:
    try:
        check_torch_zip(open_zip(io.BytesIO(data), SAMPLES), len(data))
    except PickleRefused as refusal:
        raise Malformed(f"sample inputs whose pickle has {refusal}") from None
    try:
        torch.load(io.BytesIO(data), weights_only=True)
    except Exception:  # any failure here makes torch retry with a full unpickle
        raise Unsafe("sample inputs that are more than tensors") from None


def _rebuilt(archive: zipfile.ZipFile, members) -> bytes:
    """A fresh zip of the checked members alone: torch cannot read anything its checks did not see."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as rebuilt:
        for info in members:
            rebuilt.writestr(info.filename, _read(archive, info))
    return buffer.getvalue()
