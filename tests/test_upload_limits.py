"""The limits on uploads, each met by a crafted file: a zip whose members declare more than 1 GiB, a member
that unpacks to more than it declares, absolute and drive-letter names, and uploads over 200 MB. Each is
refused with one line that says what to do, and leaves nothing behind."""
from __future__ import annotations

import io
import struct
import zipfile

import pytest

from ordercomp import uploads
from ordercomp.data.datasets import DataError

CENTRAL = b"PK\x01\x02"  # a central-directory record; its uncompressed size is the 4 bytes at offset 24


def zip_of(files: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def declaring(archive: bytes, sizes: dict[str, int]) -> bytes:
    """The zip with the uncompressed sizes its central directory declares for some members rewritten."""
    data, start = bytearray(archive), 0
    while (start := data.find(CENTRAL, start)) >= 0:
        name_length = struct.unpack_from("<H", data, start + 28)[0]
        name = data[start + 46:start + 46 + name_length].decode()
        if name in sizes:
            struct.pack_into("<I", data, start + 24, sizes[name])
        start += 4
    return bytes(data)


def refused_in_one_line(data: bytes, folder, message: str) -> str:
    with pytest.raises(DataError, match=message) as refusal:
        uploads.extract_image_zip(data, folder)
    assert "\n" not in str(refusal.value)
    return str(refusal.value)


def everything_under(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) if folder.exists() else []


def test_members_that_declare_more_than_a_gibibyte_are_refused_before_anything_is_written(tmp_path):
    small = zip_of({"cat/1.png": b"x" * 4096, "dog/1.png": b"y" * 4096})
    huge = declaring(small, {"cat/1.png": 600 << 20, "dog/1.png": 600 << 20})  # 1.17 GiB declared, 8 KiB real
    assert [m.file_size for m in zipfile.ZipFile(io.BytesIO(huge)).infolist()] == [600 << 20] * 2
    refused_in_one_line(huge, tmp_path / "datasets", r"^the zip unpacks to more than 1024 MB: use a folder on this machine instead$")
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"])
def test_a_member_that_unpacks_to_more_than_it_declares_is_stopped_and_nothing_is_kept(tmp_path, compression):
    lying = declaring(zip_of({"cat/1.png": bytes(8 << 20), "dog/1.png": b"y" * 64}, compression), {"cat/1.png": 4096})
    refused_in_one_line(lying, tmp_path / "datasets", r"^cat/1.png cannot be unpacked \(.*\): the zip is damaged; zip the folder again$")
    assert everything_under(tmp_path / "datasets") == []  # what was unpacked is gone; the uploads folder stays


@pytest.mark.parametrize("name", ["/etc/cat/1.png", "C:/data/cat/1.png", "C:\\data\\cat\\1.png", "d:cat/1.png", "../cat/1.png",
                                  "cat/../../1.png"])
def test_absolute_drive_letter_and_parent_names_are_refused(tmp_path, name):
    unsafe = zip_of({name: b"x", "dog/1.png": b"y", "cat/2.png": b"z"})
    assert name in [m.filename for m in zipfile.ZipFile(io.BytesIO(unsafe)).infolist()]  # the name reached the archive as written
    message = refused_in_one_line(unsafe, tmp_path / "datasets", r"^the zip holds an unsafe path ")
    assert repr(name) in message and message.endswith("nothing was extracted; zip the folder itself")
    assert everything_under(tmp_path) == []


OVER_200_MB = bytes((200 << 20) + 1)


def test_a_checkpoint_over_200_mb_is_refused_before_it_is_saved(tmp_path):
    with pytest.raises(DataError, match=r"^big.pt is larger than the 200 MB an upload may be \(200.0 MB\): give a smaller file$"):
        uploads.keep_checkpoint(tmp_path / "uploads", "big.pt", OVER_200_MB)
    assert everything_under(tmp_path) == []


def test_a_zip_over_200_mb_is_refused_before_it_is_read(tmp_path):
    refused_in_one_line(OVER_200_MB, tmp_path / "datasets",
                        r"^the zip is larger than the 200 MB an upload may be \(200.0 MB\): use a folder on this machine instead$")
    assert everything_under(tmp_path) == []
