"""Tests for ordercomp.archives: a zip is refused past its member count before zipfile reads it, and a member that
unpacks out of proportion to its bytes is told from images."""
import io
import zipfile

import pytest

from ordercomp.archives import CENTRAL_DIRECTORY_ENTRY, MAX_RATIO, TooManyMembers, ZipRefused, inflates_too_much, open_zip

MIB = 1 << 20  # below this, however well a member compresses, it is no bomb (text, blank images); open_zip reads blocks of it


def zip_of(members: int) -> io.BytesIO:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for index in range(members):
            archive.writestr(f"cat/{index}.png", b"x")
    data.seek(0)
    return data


def test_a_zip_of_exactly_the_allowed_members_opens_and_one_more_is_refused():
    assert len(open_zip(zip_of(3), "the upload", 3).namelist()) == 3
    with pytest.raises(TooManyMembers, match="^the upload holds more than 2 members$"):
        open_zip(zip_of(3), "the upload", 2)


def zip_whose_central_directory_starts_at(offset: int) -> io.BytesIO:
    """Two stored members, the first padding (zeros) that puts the central directory's first entry at `offset`."""
    def build(padding: int) -> bytes:
        data = io.BytesIO()
        with zipfile.ZipFile(data, "w") as archive:
            archive.writestr("pad.bin", bytes(padding))
            archive.writestr("cat/0.png", b"x")
        return data.getvalue()

    data = build(offset - build(0).index(CENTRAL_DIRECTORY_ENTRY))
    assert data.index(CENTRAL_DIRECTORY_ENTRY) == offset
    return io.BytesIO(data)


@pytest.mark.parametrize("bytes_before_the_block_ends", [1, 2, 3, 4, 5])
def test_a_member_whose_entry_lies_across_two_read_blocks_is_counted_once(bytes_before_the_block_ends):
    offset = MIB - bytes_before_the_block_ends
    assert len(open_zip(zip_whose_central_directory_starts_at(offset), "the upload", 2).namelist()) == 2
    with pytest.raises(TooManyMembers, match="^the upload holds more than 1 members$"):
        open_zip(zip_whose_central_directory_starts_at(offset), "the upload", 1)


def test_a_file_that_is_no_zip_is_refused_in_one_line():
    with pytest.raises(ZipRefused, match="^the upload is not a zip archive$"):
        open_zip(io.BytesIO(b"not a zip at all"), "the upload", 10)


def test_only_a_member_past_a_mebibyte_and_past_the_ratio_inflates_too_much():
    assert inflates_too_much(MIB + 1, 1)
    assert not inflates_too_much(MIB, 1)  # small members may compress well
    packed = MIB  # 1 MiB packed
    assert not inflates_too_much(MAX_RATIO * packed, packed)
    assert inflates_too_much(MAX_RATIO * packed + 1, packed)
    assert inflates_too_much(MIB + 1, 0)  # an empty packed size counts as one byte
