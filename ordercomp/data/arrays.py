"""Data as users hold it: (images, labels) tensors or arrays, torch Datasets, and NumPy .npz files.

Images are N x C x H x W (square, 4..512 px), float or uint8 (divided by 255); labels are whole numbers
0..K-1. A single set is split into train / validation / test by the same seeded rule as every other
source; a (train, val, test) triple keeps its splits (a None split is carved from train).

A .npz file holds `x` and `y` (every image, split seeded), or `x_train` and `y_train` with, when the
data has them, `x_val`/`y_val` and `x_test`/`y_test`. It is read with `allow_pickle=False`, so nothing
in it runs; an array of Python objects or of anything but numbers is refused, and every array's declared
size (by its dtype's itemsize, at least float32's) is checked against MAX_BYTES, and against the bytes its member
packs (at most archives.MAX_RATIO times), before it is read.
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .datasets import DataBundle, DataError, check_held, split_and_normalise
from .preprocessing import Normalization

SPLITS = ("train", "val", "test")
NPZ_NAMES = {"x": ("train", 0), "y": ("train", 1), **{f"{axis}_{split}": (split, index) for split in SPLITS
                                                       for index, axis in enumerate("xy")}}
MAX_BYTES = 4 << 30  # images and labels held in memory, as read (at least as float32)
MAX_NPZ_MEMBERS = 64  # x and y of three splits, and room for arrays it refuses by name
NUMBER_KINDS = "biuf"  # bool, signed and unsigned integers, floats
MAX_SIZE = 512
HOW = ("give images as N x C x H x W and labels 0..K-1: (images, labels) tensors, a Dataset of (image, label), "
       "or a (train, val, test) triple of those")


def held_data(data, input_size: int | None, normalization: Normalization) -> DataBundle:
    """A DataBundle from a torch Dataset, (images, labels) tensors or arrays, or a (train, val, test) triple of those."""
    if isinstance(data, (tuple, list)) and len(data) == 3:
        splits = {split: _pair(part, split) for split, part in zip(SPLITS, data) if part is not None}
        if "train" not in splits:
            raise DataError(f"the training split is missing: {HOW}")
    else:
        splits = {"train": _pair(data, "data")}
    return bundle_of(type(data).__name__ if isinstance(data, Dataset) else "tensors", splits, input_size, normalization)


def _pair(part, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) from a Dataset or a pair of tensors or arrays."""
    if isinstance(part, TensorDataset) and len(part.tensors) == 2:
        return part.tensors[0], part.tensors[1]
    if isinstance(part, Dataset):
        return _materialise(part, where)
    if isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(t, (torch.Tensor, np.ndarray)) for t in part):
        return torch.as_tensor(part[0]), torch.as_tensor(part[1])
    raise DataError(f"{where} is a {type(part).__name__}: {HOW}")


def _materialise(dataset: Dataset, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, label) of a map-style Dataset, stacked; its size is checked on the first image."""
    try:
        count = len(dataset)
    except TypeError:
        raise DataError(f"{where} has no length (an IterableDataset?): give a map-style Dataset or tensors") from None
    if count == 0:
        raise DataError(f"{where} is empty: give at least a few labelled images")
    images, labels = [], []
    for index in range(count):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], (torch.Tensor, np.ndarray)):
            raise DataError(f"{where}[{index}] is not an (image tensor, label) pair: convert images to tensors "
                            "(e.g. torchvision.transforms.ToTensor()) and return (image, label)")
        image = torch.as_tensor(item[0])
        if index == 0:
            _check_bytes(count * image.numel() * 4, where)
        images.append(image)
        labels.append(int(item[1]))
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise DataError(f"{where} holds images of {len(shapes)} shapes (e.g. {', '.join(map(str, sorted(shapes)[:2]))}): "
                        "resize them to one size")
    return torch.stack(images), torch.tensor(labels)


def bundle_of(name: str, splits: dict, input_size: int | None, normalization: Normalization) -> DataBundle:
    """Check every split's images and labels, bring them to one size, split what is missing and normalise."""
    eight_bit = all(images.dtype == torch.uint8 for images, _ in splits.values())
    checked = {split: _checked(*pair, split) for split, pair in splits.items()}
    channels = {images.shape[1] for images, _ in checked.values()}
    sizes = {images.shape[-1] for images, _ in checked.values()}
    if len(channels) > 1:
        raise DataError(f"the splits have different channel counts ({', '.join(map(str, sorted(channels)))}): give every split the same")
    if input_size is None and len(sizes) > 1:
        raise DataError(f"the splits have images of {', '.join(map(str, sorted(sizes)))} px: give one size, or --input-size")
    size = input_size or sizes.pop()
    classes = max(int(labels.max()) for _, labels in checked.values()) + 1
    if classes < 2:
        raise DataError(f"the labels name {classes} class: a classifier needs at least 2 (labels 0..K-1)")
    images = sum(len(labels) for _, labels in checked.values())
    if classes > images:  # a label of 10,000,000 on 12 images would give the model a head of 10,000,000 outputs
        raise DataError(f"the largest label is {classes - 1:,}, so the labels name {classes:,} classes, more than the {images:,} "
                        "images: number the classes 0..K-1")
    check_held(name, sum(len(images) for images, _ in checked.values()), channels.pop(), size)
    resized = {split: (_resize(images, size), labels) for split, (images, labels) in checked.items()}
    pixels = "uint8 values divided by 255" if eight_bit else "as given"
    resize = "none" if input_size is None else "bilinear (torch.nn.functional.interpolate, align_corners=False)"
    return split_and_normalise(name, *resized["train"], classes, size, test=resized.get("test"), val=resized.get("val"),
                               normalization=normalization, pixels=pixels, resize=resize)


def _checked(images: torch.Tensor, labels: torch.Tensor, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Float images (N, C, H, W) and long labels (N,), or a DataError naming what is wrong."""
    if images.dim() != 4:
        hint = ": add the channel axis, e.g. x.unsqueeze(1)" if images.dim() == 3 else ""
        raise DataError(f"{split} images have shape {tuple(images.shape)}: they must be N x C x H x W{hint}")
    if images.shape[-1] in (1, 3) and images.shape[1] > 4:
        raise DataError(f"{split} images have shape {tuple(images.shape)}, which looks channels-last (N x H x W x C): "
                        "give N x C x H x W, e.g. x.permute(0, 3, 1, 2)")
    if images.shape[-1] != images.shape[-2] or not 4 <= images.shape[-1] <= MAX_SIZE:
        raise DataError(f"{split} images are {images.shape[-2]}x{images.shape[-1]} px: they must be square, 4..{MAX_SIZE} px")
    if images.dtype == torch.uint8:
        images = images.float() / 255
    elif not images.is_floating_point():
        raise DataError(f"{split} images are {images.dtype}: give float pixel values (or uint8, divided by 255)")
    images = images.float()
    if not torch.isfinite(images).all():
        raise DataError(f"{split} images hold NaN or infinite values: clean or drop those images")
    if labels.dim() != 1 or len(labels) != len(images):
        raise DataError(f"{split} labels have shape {tuple(labels.shape)} for {len(images)} images: give one label per image")
    if labels.is_floating_point() and not torch.equal(labels, labels.round()) or labels.dtype == torch.bool or labels.is_complex():
        raise DataError(f"{split} labels must be whole numbers 0..K-1, got {labels.dtype} values")
    labels = labels.long()
    if len(labels) and labels.min() < 0:
        raise DataError(f"{split} labels must be 0..K-1, got {int(labels.min())}")
    return images.contiguous(), labels


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


def _check_bytes(count: int, where: str) -> None:
    if count > MAX_BYTES:
        raise DataError(f"{where} would take {count / 2**30:.1f} GiB in memory, over the {MAX_BYTES >> 30} GiB limit: "
                        "give fewer or smaller images")


def read_npz(path: Path, input_size: int | None, normalization: Normalization) -> DataBundle:
    """A DataBundle from a .npz file (see the module's docstring for the array names)."""
    arrays = _npz_arrays(path, input_size)
    unknown = sorted(set(arrays) - set(NPZ_NAMES))
    if unknown:
        raise DataError(f"{path.name} holds arrays named {', '.join(unknown)}: name them x and y, or x_train, y_train "
                        "(and x_val, y_val, x_test, y_test)")
    if "x" in arrays and "x_train" in arrays:
        raise DataError(f"{path.name} holds both x and x_train: give x and y (split here) or x_train and y_train")
    splits: dict[str, list] = {}
    for name, array in arrays.items():
        split, index = NPZ_NAMES[name]
        splits.setdefault(split, [None, None])[index] = torch.from_numpy(array)
    for name in arrays:
        counterpart = ("y" if name[0] == "x" else "x") + name[1:]
        if counterpart not in arrays:
            raise DataError(f"{path.name} has {name} but no {counterpart}: give images (x) and labels (y) of every split")
    if "train" not in splits:
        raise DataError(f"{path.name} has no training images: add x and y (or x_train and y_train)")
    return bundle_of(f"npz:{path.name}", {k: tuple(v) for k, v in splits.items()}, input_size, normalization)


def _npz_arrays(path: Path, input_size: int | None) -> dict[str, np.ndarray]:
    """The arrays of a .npz file, each checked by its header (dtype, size) before it is read, and the images together
    by what they take at the input size (`check_held`: 0.6 MB of deflated blank images took 9 GB)."""
    _check_container(path)
    try:
        archive = np.load(path, allow_pickle=False)  # a zip (an NpzFile), or a pickle it refuses
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path.name} is not a readable .npz file ({type(error).__name__}): save it with numpy.savez") from None
    with archive:
        total, images = 0, []
        for name in archive.files:
            shape, dtype = _header(archive, name, path)
            if NPZ_NAMES.get(name, ("", 1))[1] == 0 and len(shape) == 4 and shape[-1] == shape[-2]:  # N x C x H x W images
                images.append(shape)
            if dtype.hasobject:
                raise DataError(f"{path.name}: array {name} holds Python objects, which only pickle can read; nothing from it "
                                "was run: save plain numeric arrays")
            if dtype.kind not in NUMBER_KINDS:  # records, raw bytes, text, dates, complex: no images or labels
                raise DataError(f"{path.name}: array {name} holds {str(dtype)[:40]} values, not numbers: save images and "
                                "labels as plain numeric arrays (e.g. float32 and int64)")
            _check_packing(archive, name, math.prod(shape) * dtype.itemsize, path)
            # as read (its own itemsize, a float64 takes 8), and at least as the float32 it becomes
            total += math.prod(shape) * max(dtype.itemsize, 4)
        _check_bytes(total, path.name)
        if images:
            check_held(f"npz:{path.name}", sum(shape[0] for shape in images), max(shape[1] for shape in images),
                       input_size or max(shape[-1] for shape in images))
        try:
            return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
            raise DataError(f"{path.name} is damaged ({type(error).__name__}): save it again with numpy.savez") from None


def _check_packing(archive, name: str, declared: int, path: Path) -> None:
    """Refuse an array whose header declares far more bytes than its member packs (np.savez_compressed of blank images:
    0.6 MB declared 655 MB of pixels, which took 9 GB as float32 splits)."""
    from ..archives import MAX_RATIO, inflates_too_much

    packed = archive.zip.getinfo(f"{name}.npy").compress_size
    if inflates_too_much(declared, packed):
        raise DataError(f"{path.name}: array {name} declares {declared:,} bytes in {packed:,} packed, over {MAX_RATIO}:1 (images do not "
                        "compress like that, a zip bomb does): save the arrays uncompressed with numpy.savez")


def _check_container(path: Path) -> None:
    """Refuse, before np.load reads anything, a file that is one .npy array (np.load allocates what its header declares:
    8 GiB for a 192-byte file) and a zip of more entries than a .npz of every split holds, counted before zipfile builds
    an object for each (a 47 MB file of 1M empty entries took 420 MB in np.load)."""
    from ..archives import TooManyMembers, open_zip

    try:
        with path.open("rb") as file:
            single = file.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX
            file.seek(0)
            if not single and zipfile.is_zipfile(file):
                file.seek(0)
                open_zip(file, path.name, MAX_NPZ_MEMBERS).close()
    except TooManyMembers as refusal:
        raise DataError(f"{refusal}; a .npz holds one per array: save images and labels with numpy.savez(path, x=..., y=...)") from None
    except (OSError, ValueError):  # unreadable, or not a zip after all: np.load says what it is
        return
    if single:
        raise DataError(f"{path.name} holds a single array, not a .npz archive: save images and labels with numpy.savez(path, x=..., y=...)")


def _header(archive, name: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of one member, read from its .npy header only."""
    try:
        with archive.zip.open(f"{name}.npy") as member:
            version = np.lib.format.read_magic(member)
            read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is None:
                raise ValueError(f"npy format version {version}")
            shape, _, dtype = read(member)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path.name}: array {name} is not readable ({str(error).splitlines()[0][:80] if str(error) else type(error).__name__}): "
                        "save it again with numpy.savez") from None
    return shape, dtype
