"""Datasets for ordercomp: the embedded digits default, local CIFAR / ImageFolder trees, NumPy .npz
files, and data a Python caller holds (tensors, torch Datasets; see `arrays.py`).

Nothing here downloads. Every dataset is materialised as three in-memory tensor splits
(train / validation / test) with a fixed, seeded split, so every method and every order
sees exactly the same images, normalised as `--normalize` says (`preprocessing.py`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset

from .cifar import read_cifar
from .preprocessing import Normalization, record

SPLIT_SEED = 20240326
DEFAULT_INPUT_SIZE = 8


class DataError(ValueError):
    """A dataset could not be read; the message says what the expected layout is."""


@dataclass
class DataBundle:
    """Three labelled splits plus what a model needs to know about them."""

    name: str
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int
    in_channels: int
    input_size: int
    preprocessing: dict = field(default_factory=dict)  # how an image becomes the model's input (preprocessing.record)

    def split(self, name: str) -> TensorDataset:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}: use train, val or test")
        return getattr(self, name)

    def loader(self, split: str, batch_size: int, *, shuffle: bool = False, seed: int = 0,
               device: torch.device | None = None) -> "Batches":
        return Batches(self.split(split), batch_size, shuffle=shuffle, seed=seed, device=device)

    def example_input(self, batch: int = 1) -> torch.Tensor:
        return self.train.tensors[0][:batch].clone()

    def fingerprint(self) -> str:
        """A short hash of the images and labels, used as part of cache keys."""
        digest = hashlib.sha256(self.name.encode())
        for split in (self.train, self.val, self.test):
            images, labels = split.tensors
            digest.update(images.numpy().tobytes())
            digest.update(labels.numpy().tobytes())
        return digest.hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "name": self.name, "classes": self.num_classes, "channels": self.in_channels,
            "input_size": self.input_size, "train": len(self.train), "val": len(self.val), "test": len(self.test),
            "preprocessing": self.preprocessing,
        }


class Batches:
    """A split in batches of (images, labels), indexed straight from its tensors, which are moved to
    `device` once per pass (on a GPU the data stays resident there). The batches and their order are
    those of a DataLoader over the split with the same seed (same random draws), without its per-image
    collation, which dominates an epoch of small images on the CPU."""

    def __init__(self, dataset: TensorDataset, batch_size: int, *, shuffle: bool, seed: int, device: torch.device | None):
        self.tensors, self.device = dataset.tensors, device
        self.generator = torch.Generator().manual_seed(seed)
        order = RandomSampler(dataset, generator=self.generator) if shuffle else SequentialSampler(dataset)
        self.batches = BatchSampler(order, batch_size, drop_last=False)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # DataLoader's draw of its workers' seed
        images, labels = (t.to(self.device) if self.device is not None else t for t in self.tensors)
        for index in self.batches:
            index = torch.tensor(index, device=images.device)
            yield images[index], labels[index]


def load_data(spec="digits", *, input_size: int | None = None, limit: int | None = None, normalize: str = "dataset") -> DataBundle:
    """Load `digits`, a CIFAR-10/100 folder, an ImageFolder tree or a .npz file given by path, or data a
    caller holds: a torch Dataset, a (train, val, test) triple, (images, labels) tensors, or a DataBundle
    (returned as it is). Images are normalised as `normalize` says (preprocessing.Normalization)."""
    if isinstance(spec, DataBundle):
        return spec
    if input_size is not None and not 4 <= input_size <= 512:
        raise DataError(f"input size {input_size} is out of range: use 4..512 pixels")
    normalization = Normalization.parse(normalize)
    if not isinstance(spec, str):
        from .arrays import held_data

        return held_data(spec, input_size, normalization)
    if spec == "digits":
        return _digits(input_size or DEFAULT_INPUT_SIZE, normalization)
    kind, path = check_layout(spec)
    if kind == "npz":
        from .arrays import read_npz

        return read_npz(path, input_size, normalization)
    if kind != "imagefolder":
        return _cifar(path, input_size or 32, limit, normalization)
    return _image_folder(path, input_size or 32, limit, normalization)


def data_label(data) -> str:
    """What a spec records as its data: the text given, or object:<type> for data a caller held."""
    return data if isinstance(data, str) else f"object:{type(data).__name__}"


def check_layout(spec: str) -> tuple[str, Path]:
    """('cifar10' | 'cifar100' | 'imagefolder' | 'npz', path) for a dataset path, checked without loading images."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return "npz", path
    if not path.is_dir():
        raise DataError(f"data path {path} does not exist or is not a folder: give 'digits', a CIFAR-10/100 folder, "
                        "an ImageFolder tree or a .npz file")
    kind = _cifar_kind(path)
    if kind:
        return kind, path
    if len(_class_folders(split_folders(path).get("train", path))) < 2:
        raise DataError(
            f"{path} is not an ImageFolder tree: expected one sub-folder per class (at least 2) "
            "holding images, e.g. root/cat/1.png, root/dog/2.png; or a CIFAR folder holding cifar-10-batches-py/"
        )
    return "imagefolder", path


def _class_folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*")))


BILINEAR = "bilinear (torch.nn.functional.interpolate, align_corners=False)"


def _digits(input_size: int, normalization: Normalization) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    images = _resize(images, input_size)
    return split_and_normalise("digits", images, labels, 10, input_size, normalization=normalization,
                               pixels="scikit-learn's gray levels 0..16, divided by 16", resize=BILINEAR)


def _resize(images: torch.Tensor, input_size: int) -> torch.Tensor:
    if images.shape[-1] == input_size and images.shape[-2] == input_size:
        return images
    return F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)


def split_and_normalise(name, images, labels, num_classes, input_size, test=None, val=None, *,
                        normalization: Normalization, pixels: str, resize: str) -> DataBundle:
    """Seeded split into train/val/test (of the splits not given), then normalise as `normalization` says
    (by default with the training statistics); `pixels` and `resize` say how the images were read."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
    images, labels = images[order], labels[order]
    n = len(images)
    carve_test = test is None
    if carve_test:
        n_test = n // 5
        test = (images[n - n_test:], labels[n - n_test:])
        images, labels = images[: n - n_test], labels[: n - n_test]
    if val is None:
        n_val = n // 5 if carve_test else n // 10
        val = (images[:n_val], labels[:n_val])
        images, labels = images[n_val:], labels[n_val:]
    train = (images, labels)
    mean, std = normalization.statistics(train[0])

    def dataset(split):
        return TensorDataset(((split[0] - mean) / std).contiguous(), split[1].contiguous())

    steps = record(normalization, mean, std, pixels=pixels, resize=resize, input_size=input_size)
    return DataBundle(name, dataset(train), dataset(val), dataset(test), num_classes, images.shape[1], input_size, steps)


def _cifar_kind(path: Path) -> str | None:
    if (path / "cifar-10-batches-py").is_dir():
        return "cifar10"
    if (path / "cifar-100-python").is_dir():
        return "cifar100"
    return None


def _cifar(path: Path, input_size: int, limit: int | None, normalization: Normalization) -> DataBundle:
    kind = _cifar_kind(path)
    try:
        (train_images, train_labels), (test_images, test_labels), classes = read_cifar(path, kind)
    except ValueError as error:
        raise DataError(
            f"{path} is not a readable {kind} folder ({error}); expected {path}/cifar-10-batches-py/"
            "data_batch_1..5 and test_batch (or cifar-100-python/train and test)"
        ) from None

    def tensors(images, labels, cap):
        images = torch.from_numpy(np.ascontiguousarray(images[:cap])).permute(0, 3, 1, 2).float() / 255.0
        return _resize(images, input_size), torch.from_numpy(labels[:cap])

    images, labels = tensors(train_images, train_labels, limit)
    test_split = tensors(test_images, test_labels, limit // 5 if limit else None)
    return split_and_normalise(kind, images, labels, classes, input_size, test=test_split, normalization=normalization,
                               pixels="8-bit RGB values divided by 255", resize=BILINEAR)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_IMAGE_PIXELS = 40_000_000  # every image is shrunk to at most 512x512; a bigger one is a mistake or a decompression bomb


SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def split_folders(path: Path) -> dict[str, Path]:
    """{'train': root/train, 'val': root/valid, 'test': root/test} when an ImageFolder tree is split
    into folders (train/ at least; val/, valid/ or validation/; test/), else {}."""
    found: dict[str, Path] = {}
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        if folder.name.lower() in SPLIT_NAMES:
            found.setdefault(SPLIT_NAMES[folder.name.lower()], folder)
    return found if "train" in found else {}


PIL_RESIZE = "PIL Image.resize to the input size (bicubic)"
PIL_PIXELS = "8-bit values divided by 255; gray images as 1 channel (L), others as RGB; gray repeated when the tree mixes both"


def _split_image_folder(path: Path, splits: dict[str, Path], input_size: int, limit: int | None,
                        normalization: Normalization) -> DataBundle:
    """An ImageFolder tree split into folders: the classes are train/'s; a split without a folder is
    carved from train/ as usual (seeded)."""
    classes = _class_folders(splits["train"])
    read = {}
    for split, folder in splits.items():
        strangers = sorted(set(_class_folders(folder)) - set(classes))
        if strangers:
            raise DataError(f"{folder} has classes that {splits['train']} lacks ({', '.join(strangers)}): give every class a folder in train/")
        read[split] = _read_classes(folder, classes, input_size, limit)
    channels = max(images.shape[1] for images, _ in read.values())
    read = {split: (images.expand(-1, channels, -1, -1), labels) for split, (images, labels) in read.items()}
    return split_and_normalise(f"imagefolder:{path.name}", *read["train"], len(classes), input_size, test=read.get("test"),
                               val=read.get("val"), normalization=normalization, pixels=PIL_PIXELS, resize=PIL_RESIZE)


def _image_folder(path: Path, input_size: int, limit: int | None, normalization: Normalization) -> DataBundle:
    splits = split_folders(path)
    if splits:
        return _split_image_folder(path, splits, input_size, limit, normalization)
    classes = _class_folders(path)
    images, labels = _read_classes(path, classes, input_size, limit)
    return split_and_normalise(f"imagefolder:{path.name}", images, labels, len(classes), input_size,
                               normalization=normalization, pixels=PIL_PIXELS, resize=PIL_RESIZE)


def _read_classes(path: Path, classes: list[str], input_size: int, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of path/<class>/... with their class index, up to `limit` in all."""
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in _images_in(path / name)[: limit // len(classes) if limit else None]:
            images.append(_read_image(file, input_size))
            labels.append(label)
    if not images:
        raise DataError(f"{path} holds no images of the classes {', '.join(classes)}: put images in its class folders")
    channels = max(t.shape[0] for t in images)
    return torch.stack([t.expand(channels, -1, -1) for t in images]), torch.tensor(labels)


def _read_image(file: Path, input_size: int) -> torch.Tensor:
    """One image as a tensor; an unreadable or oversized file is one DataError line, checked before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise DataError(f"image {file} is {image.width}x{image.height} pixels, over the {MAX_IMAGE_PIXELS // 1_000_000} "
                                "megapixel limit: shrink or remove it")
            return _image_tensor(image, input_size)
    except DataError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        raise DataError(f"cannot read image {file}: {str(error).splitlines()[0] if str(error) else type(error).__name__}; "
                        "remove or replace it") from None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_tensor(image, input_size: int) -> torch.Tensor:
    mode = "L" if image.mode in ("L", "1", "I", "I;16") else "RGB"
    image = image.convert(mode).resize((input_size, input_size))
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0
    return tensor.unsqueeze(0) if mode == "L" else tensor.permute(2, 0, 1)
