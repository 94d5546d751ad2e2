"""Datasets: the embedded digits split is fixed; local paths are read or explained."""
from __future__ import annotations

import pathlib
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from ordercomp.data.cifar import write_cifar
from ordercomp.data.datasets import DataError, load_data


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


def image_tree(root, counts: dict[str, int]):
    """root/<split>/<class>/<i>.png for {"train/cat": 10, ...}; shades differ by class."""
    for folder, count in counts.items():
        (root / folder).mkdir(parents=True)
        for index in range(count):
            Image.new("L", (6, 6), 40 if folder.endswith("cat") else 200).save(root / folder / f"{index}.png")
    return root


def test_train_and_val_folders_are_splits_not_classes(tmp_path):
    tree = image_tree(tmp_path / "pets", {"train/cat": 20, "train/dog": 20, "val/cat": 3, "val/dog": 4})
    data = load_data(str(tree), input_size=6)
    assert data.num_classes == 2 and len(data.val) == 7
    assert len(data.train) + len(data.test) == 40 and len(data.test) == 8  # test carved from train/ (a fifth)
    assert sorted(data.val.tensors[1].tolist()) == [0, 0, 0, 1, 1, 1, 1]  # cat = 0, dog = 1, as in train/


@pytest.mark.parametrize("val_name", ["valid", "validation", "Val"])
def test_every_split_folder_name_is_recognised_and_given_splits_are_kept_whole(tmp_path, val_name):
    tree = image_tree(tmp_path / "pets", {"train/cat": 10, "train/dog": 10, f"{val_name}/cat": 2, f"{val_name}/dog": 2,
                                          "test/cat": 5, "test/dog": 1})
    data = load_data(str(tree), input_size=6)
    assert (data.num_classes, len(data.train), len(data.val), len(data.test)) == (2, 20, 4, 6)


def test_a_split_folder_with_a_class_train_lacks_is_refused(tmp_path):
    tree = image_tree(tmp_path / "pets", {"train/cat": 4, "train/dog": 4, "test/cow": 2})
    with pytest.raises(DataError, match=r"test has classes that .*train lacks \(cow\)"):
        load_data(str(tree), input_size=6)


def _cifar_like(root, n_train=50, n_test=10):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_train)
    test = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n_test)
    return write_cifar(root, train, test), train, test


def test_a_cifar_format_folder_of_other_images_is_read(tmp_path):
    """torchvision's reader took only the genuine CIFAR-10 files (MD5); a generated folder failed."""
    root, train, test = _cifar_like(tmp_path)
    data = load_data(str(root), input_size=32)
    assert (data.num_classes, data.in_channels, data.input_size) == (10, 3, 32)
    assert len(data.train) + len(data.val) == 50 and len(data.test) == 10
    assert sorted(data.test.tensors[1].tolist()) == sorted(test[1].tolist())


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_crafted_cifar_batch_runs_no_code(tmp_path):
    root, _, _ = _cifar_like(tmp_path / "data")
    marker = tmp_path / "ran"
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": _Touch(marker), "labels": []}))
    with pytest.raises(DataError, match="data_batch_3.*pathlib.*refused") as error:
        load_data(str(root))
    assert not marker.exists() and "\n" not in str(error.value)


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_are_those_of_a_dataloader_with_the_same_seed(shuffle):
    """Results cached by earlier versions (which used a DataLoader) stay reproducible."""
    from torch.utils.data import DataLoader

    data = load_data("digits")
    ours = data.loader("train", 64, shuffle=shuffle, seed=7)
    theirs = DataLoader(data.train, batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
    assert len(ours) == len(theirs)
    for _ in range(2):  # a second pass draws a new order from the same generator
        for (x, y), (x2, y2) in zip(ours, theirs, strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
    partial = data.loader("train", 64, shuffle=shuffle, seed=7)
    reference = DataLoader(data.train, batch_size=64, shuffle=shuffle, generator=torch.Generator().manual_seed(7))
    for loader in (partial, reference):  # a pass cut short, as training stops mid-epoch
        next(iter(loader))
    assert torch.equal(next(iter(partial))[1], next(iter(reference))[1])


def test_writing_a_cifar_folder_never_replaces_one(tmp_path):
    root, _, _ = _cifar_like(tmp_path)
    before = (root / "cifar-10-batches-py" / "test_batch").read_bytes()
    with pytest.raises(FileExistsError, match="exists already"):
        _cifar_like(tmp_path, n_test=3)
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == before
