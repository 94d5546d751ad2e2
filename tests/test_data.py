"""Datasets: the embedded digits split is fixed; local paths are read or explained."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from ordercomp.data import DataError, load_data


def test_digits_split_is_fixed_and_normalised():
    a, b = load_data("digits"), load_data("digits")
    assert (len(a.train), len(a.val), len(a.test)) == (1079, 359, 359)
    assert a.fingerprint() == b.fingerprint()
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert abs(a.train.tensors[0].mean().item()) < 1e-4
    assert load_data("digits", input_size=16).train.tensors[0].shape[-1] == 16


def test_image_folder_tree_is_read_with_labels_per_folder(tmp_path):
    for label, shade in (("cat", 30), ("dog", 220)):
        (tmp_path / label).mkdir()
        for index in range(10):
            Image.new("RGB", (20, 20), (shade, index * 10, 0)).save(tmp_path / label / f"{index}.png")
    data = load_data(str(tmp_path), input_size=12)
    assert data.num_classes == 2 and data.in_channels == 3 and data.input_size == 12
    assert len(data.train) + len(data.val) + len(data.test) == 20


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "ImageFolder"),
])
def test_bad_paths_name_the_expected_layout(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        load_data(str(make(tmp_path)))


def test_incomplete_cifar_folder_names_the_expected_files(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="data_batch_1..5"):
        load_data(str(tmp_path))


def test_input_size_out_of_range_is_refused():
    with pytest.raises(DataError, match="input size"):
        load_data("digits", input_size=2)


@pytest.mark.parametrize("size, message", [((20000, 20000), "1.png"),  # over PIL's bomb limit
                                           ((7000, 7000), "megapixel limit")])  # under it, over ours: refused before decoding
def test_oversized_image_is_one_line_before_decoding(tmp_path, bomb_png, size, message):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        Image.new("L", (8, 8)).save(tmp_path / label / "0.png")
    bomb_png(tmp_path / "cat" / "1.png", *size)
    with pytest.raises(DataError, match=message) as error:
        load_data(str(tmp_path))
    assert "\n" not in str(error.value)
