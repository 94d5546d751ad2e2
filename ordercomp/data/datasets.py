"""Datasets for ordercomp: the embedded digits default, local CIFAR / ImageFolder trees, NumPy .npz
files, and data a Python caller holds (tensors, torch Datasets; see `arrays.py`).

Nothing here downloads. Every dataset is materialised as three in-memory tensor splits
(train / validation / test) with a fixed, seeded split, so every method and every order
sees exactly the same images, normalised as `--normalize` says (`preprocessing.py`).
"""
from __future__ import annotations

import hashlib
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, RandomSampler, SequentialSampler, TensorDataset

from .cifar import missing_files, read_cifar
from .preprocessing import Normalization, record

SPLIT_SEED = 20240326
DEFAULT_INPUT_SIZE = 8
FOLDER_INPUT_SIZE = 32  # CIFAR and ImageFolder images without an --input-size (an .npz file keeps its own)
MIN_SPLIT = {"train": 1, "validation": 2, "test": 1}  # pair decisions compare two orders image by image on validation
HELD_COPIES = 3  # a data set is held about three times over while it is prepared: as read, in split order, normalised
MIN_CROP = 0.25  # an image is resized to at most 4 times the input size before its centre is kept (1/0.001: 512,000 px)


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
        for images, labels, _ in self.with_indices():
            yield images, labels

    def with_indices(self):
        """(images, labels, their rows in the split) per batch, in the same order."""
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # DataLoader's draw of its workers' seed
        images, labels = (t.to(self.device) if self.device is not None else t for t in self.tensors)
        for index in self.batches:
            index = torch.tensor(index, device=images.device)
            yield images[index], labels[index], index


def load_data(spec="digits", *, input_size: int | None = None, limit: int | None = None, normalize: str = "dataset",
              crop: float | None = None) -> DataBundle:
    """Load `digits`, a CIFAR-10/100 folder, an ImageFolder tree or a .npz file given by path, or data a
    caller holds: a torch Dataset, a (train, val, test) triple, (images, labels) tensors, or a DataBundle
    (returned as it is). Images are normalised as `normalize` says (preprocessing.Normalization); an ImageFolder
    tree's images are resized whole to the input size, or with `crop` resized and centre-cropped (`_sized`)."""
    if isinstance(spec, DataBundle):
        return spec
    if input_size is not None and not 4 <= input_size <= 512:
        raise DataError(f"input size {input_size} is out of range: use 4..512 pixels")
    kind, path = check_layout(spec) if isinstance(spec, str) and spec != "digits" else (None, None)
    check_crop_fits(spec, crop, kind)
    normalization = Normalization.parse(normalize)
    if not isinstance(spec, str):
        from .arrays import held_data

        return held_data(spec, input_size, normalization)
    if spec == "digits":
        return _digits(input_size or DEFAULT_INPUT_SIZE, normalization)
    if kind == "npz":
        from .arrays import read_npz

        return read_npz(path, input_size, normalization)
    if kind != "imagefolder":
        return _cifar(path, input_size or FOLDER_INPUT_SIZE, limit, normalization)
    return _image_folder(path, input_size or FOLDER_INPUT_SIZE, limit, normalization, crop)


def check_crop_fits(data, crop, kind: str | None = None) -> None:
    """A crop is a share in [MIN_CROP, 1] (`check_crop`), for an ImageFolder tree: the only data whose images come in any
    shape. `kind` is the data's layout where the caller has checked it already (`check_layout`)."""
    check_crop(crop)
    if crop is None:
        return
    if kind is None and isinstance(data, str) and data != "digits":
        kind = check_layout(data)[0]
    if kind != "imagefolder":
        raise DataError(f"--crop (crop={crop:g}) is for an ImageFolder tree's images, which come in any shape; "
                        f"{data_label(data)} is read as it is: leave crop out")



def check_crop(crop) -> None:
    """A crop is the share of the resized image's shorter side that is kept: [MIN_CROP, 1], e.g. 0.875 (256 px to 224 px)."""
    if crop is not None and (isinstance(crop, bool) or not isinstance(crop, (int, float)) or not MIN_CROP <= crop <= 1):
        raise DataError(f"crop must be the share of the shorter side kept, in [{MIN_CROP:g}, 1], e.g. 0.875 (224 of 256 px), "
                        f"got {crop!r}")


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
    if kind and missing_files(path, kind):
        raise _unreadable_cifar(path, kind, f"{missing_files(path, kind)[0]} is missing")
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


def check_held(name: str, images: int, channels: int, input_size: int) -> None:
    """Refuse, before any image is read at `input_size`, a data set that would hold more than MEMORY_SHARE of this
    machine's memory: it is held whole as float32 at the input size, however small its files (a 69-byte 1x1 PNG is 3 MB
    at 512 px, and 300 of them in a 49 kB zip took 2.8 GB)."""
    from ..live_memory import MEMORY_SHARE, machine_memory

    need, memory = HELD_COPIES * images * channels * input_size * input_size * 4, machine_memory()
    if need > MEMORY_SHARE * memory:
        raise DataError(f"the data set {name} holds {images:,} images, which at {input_size}x{input_size} px and {channels} channel"
                        f"{'s' * (channels != 1)} take about {need >> 20:,} MiB while it is prepared, more than {MEMORY_SHARE:.0%} of "
                        f"this machine's {memory >> 20:,} MiB: use a smaller input size or fewer images")


BILINEAR = "bilinear (torch.nn.functional.interpolate, align_corners=False)"


def _digits(input_size: int, normalization: Normalization) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    check_held("digits", len(digits.images), 1, input_size)
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
                        normalization: Normalization, pixels: str, resize: str, crop: float | None = None) -> DataBundle:
    """Seeded split into train/val/test (of the splits not given), then normalise as `normalization` says
    (by default with the training statistics); `pixels`, `resize` and `crop` say how the images were read."""
    n = len(images)
    n_test, n_val = _carved_sizes(name, n, test, val)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    images, labels = images[order], labels[order]
    if test is None:
        test = (images[n - n_test:], labels[n - n_test:])
        images, labels = images[: n - n_test], labels[: n - n_test]
    if val is None:
        val = (images[:n_val], labels[:n_val])
        images, labels = images[n_val:], labels[n_val:]
    train = (images, labels)
    mean, std = normalization.statistics(train[0])

    def dataset(split):
        return TensorDataset(((split[0] - mean) / std).contiguous(), split[1].contiguous())

    steps = record(normalization, mean, std, pixels=pixels, resize=resize, input_size=input_size, crop=crop)
    return DataBundle(name, dataset(train), dataset(val), dataset(test), num_classes, images.shape[1], input_size, steps)


def _carved_sizes(name: str, count: int, test, val) -> tuple[int, int]:
    """(test, validation) images to carve from `count` of the splits not given: a fifth each, or a tenth
    for validation alone. A split too small to train or decide on is refused here, before any work."""
    n_test = count // 5 if test is None else 0
    n_val = (count // 5 if test is None else count // 10) if val is None else 0
    sizes = {"train": (count - n_test - n_val, False), "validation": (n_val, False) if val is None else (len(val[0]), True),
             "test": (n_test, False) if test is None else (len(test[0]), True)}
    for split, (size, given) in sizes.items():
        if size >= MIN_SPLIT[split]:
            continue
        if given:
            raise DataError(f"the data set {name} has {size} {split} image{'s' * (size != 1)}; it needs at least "
                            f"{MIN_SPLIT[split]}: give it more")
        raise DataError(f"the data set {name} has {count} image{'s' * (count != 1)} to split: too few (its {split} split would "
                        f"hold {size}, it needs at least {MIN_SPLIT[split]}); give more images")
    return n_test, n_val


def _cifar_kind(path: Path) -> str | None:
    if (path / "cifar-10-batches-py").is_dir():
        return "cifar10"
    if (path / "cifar-100-python").is_dir():
        return "cifar100"
    return None


def _unreadable_cifar(path: Path, kind: str, problem) -> DataError:
    return DataError(f"{path} is not a readable {kind} folder ({problem}); expected {path}/cifar-10-batches-py/"
                     "data_batch_1..5 and test_batch (or cifar-100-python/train and test)")


def _cifar(path: Path, input_size: int, limit: int | None, normalization: Normalization) -> DataBundle:
    kind = _cifar_kind(path)
    try:
        (train_images, train_labels), (test_images, test_labels), classes = read_cifar(path, kind)
    except ValueError as error:
        raise _unreadable_cifar(path, kind, error) from None

    def tensors(images, labels, cap):
        images = torch.from_numpy(np.ascontiguousarray(images[:cap])).permute(0, 3, 1, 2).float() / 255.0
        return _resize(images, input_size), torch.from_numpy(labels[:cap])

    check_held(kind, len(train_images[:limit]) + len(test_images[:limit // 5 if limit else None]), 3, input_size)
    images, labels = tensors(train_images, train_labels, limit)
    test_split = tensors(test_images, test_labels, limit // 5 if limit else None)
    return split_and_normalise(kind, images, labels, classes, input_size, test=test_split, normalization=normalization,
                               pixels="8-bit RGB values divided by 255", resize=BILINEAR)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# the formats those suffixes hold: Image.open tries no other decoder, whatever a file's content says (an EPS
# file named cat.png would otherwise be handed to Ghostscript, which runs the PostScript program it holds)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
MAX_IMAGE_PIXELS = 40_000_000  # every image is shrunk to at most 512x512; a bigger one is a mistake or a decompression bomb
# a photo takes a byte per 20 pixels or fewer, a plain drawing one per 100 or so, a decompression bomb one per 300
# and more (a black 36-megapixel PNG is 105 kB): beyond FREE_PIXELS, an image may decode to this many pixels per byte
FREE_PIXELS = 4_000_000
MAX_PIXELS_PER_BYTE = 100
# a progressive JPEG has about ten scans, each a pass over every coefficient: 20,000 repeats of a 14-byte scan
# make a 300 kB file of 4 megapixels that takes a minute of CPU to decode
MAX_JPEG_SCANS = 100
# greyscale modes of more than 8 bits, read as numbers scaled by their range: converting them to L clips at 255
DEEP_GREY = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


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


def pil_resize(input_size: int, crop: float | None) -> str:
    """How `_sized` resizes an image, for the preprocessing record."""
    if crop is None:
        return PIL_RESIZE
    return (f"PIL Image.resize of the shorter side to {_shorter_side(input_size, crop)} px (bicubic), then the centre "
            f"{input_size}x{input_size} px (crop {crop:g}: torchvision's Resize then CenterCrop)")


def _shorter_side(input_size: int, crop: float) -> int:
    return math.floor(input_size / crop)  # as timm's crop_pct: 224 / 0.875 = 256


def _split_image_folder(path: Path, splits: dict[str, Path], input_size: int, limit: int | None,
                        normalization: Normalization, crop: float | None) -> DataBundle:
    """An ImageFolder tree split into folders: the classes are train/'s; a split without a folder is
    carved from train/ as usual (seeded)."""
    classes = _class_folders(splits["train"])
    listed = {}
    for split, folder in splits.items():
        strangers = sorted(set(_class_folders(folder)) - set(classes))
        if strangers:
            raise DataError(f"{folder} has classes that {splits['train']} lacks ({', '.join(strangers)}): give every class a folder in train/")
        listed[split] = _class_files(folder, classes, limit)
    check_held(f"imagefolder:{path.name}", sum(map(len, listed.values())), 3, input_size)
    read = {split: _read_files(splits[split], classes, files, input_size, crop) for split, files in listed.items()}
    channels = max(images.shape[1] for images, _ in read.values())
    read = {split: (images.expand(-1, channels, -1, -1), labels) for split, (images, labels) in read.items()}
    return split_and_normalise(f"imagefolder:{path.name}", *read["train"], len(classes), input_size, test=read.get("test"),
                               val=read.get("val"), normalization=normalization, pixels=PIL_PIXELS,
                               resize=pil_resize(input_size, crop), crop=crop)


def _image_folder(path: Path, input_size: int, limit: int | None, normalization: Normalization,
                  crop: float | None) -> DataBundle:
    splits = split_folders(path)
    if splits:
        return _split_image_folder(path, splits, input_size, limit, normalization, crop)
    classes = _class_folders(path)
    files = _class_files(path, classes, limit)
    check_held(f"imagefolder:{path.name}", len(files), 3, input_size)  # 3: the channels are known only once decoded
    images, labels = _read_files(path, classes, files, input_size, crop)
    return split_and_normalise(f"imagefolder:{path.name}", images, labels, len(classes), input_size,
                               normalization=normalization, pixels=PIL_PIXELS, resize=pil_resize(input_size, crop), crop=crop)


def _class_files(path: Path, classes: list[str], limit: int | None) -> list[tuple[Path, int]]:
    """The image files of path/<class>/... with their class index, up to `limit` in all."""
    return [(file, label) for label, name in enumerate(classes)
            for file in _images_in(path / name)[: limit // len(classes) if limit else None]]


def _read_files(path: Path, classes: list[str], files: list[tuple[Path, int]], input_size: int,
                crop: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The images `_class_files` listed under `path`, decoded, with their class index."""
    if not files:
        raise DataError(f"{path} holds no images of the classes {', '.join(classes)}: put images in its class folders")
    images = [_read_image(file, input_size, crop) for file, _ in files]
    channels = max(t.shape[0] for t in images)
    return torch.stack([t.expand(channels, -1, -1) for t in images]), torch.tensor([label for _, label in files])


def _read_image(file: Path, input_size: int, crop: float | None) -> torch.Tensor:
    """One image as a tensor; an unreadable or oversized file is one DataError line, checked before decoding."""
    with opened_image(file, str(file), file.stat().st_size) as image:
        least = input_size if crop is None else _shorter_side(input_size, crop)
        image.draft(None, (least, least))  # a JPEG decodes at 1/2, 1/4 or 1/8 scale while still at least the size it needs
        return _image_tensor(image, input_size, crop)


@contextmanager
def opened_image(source, name: str, file_bytes: int):
    """An image (a path or a binary file) opened with its header read and its pixels not yet decoded,
    if it is one of IMAGE_FORMATS and its size is in proportion to its `file_bytes`: at most
    MAX_IMAGE_PIXELS, and beyond FREE_PIXELS at most MAX_PIXELS_PER_BYTE pixels per byte. A refused
    or unreadable image, found here or while the caller decodes it, is one DataError line naming `name`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PIL's notes on metadata (corrupt EXIF, palette transparency) it skips
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # PIL's own bomb warning is a refusal here
            with Image.open(source, formats=IMAGE_FORMATS) as image:
                _check_proportion(image, name, file_bytes)
                yield image
    except DataError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"cannot read image {name}: {str(error).splitlines()[0] if str(error) else type(error).__name__}; "
                        "remove or replace it") from None


def _check_proportion(image, name: str, file_bytes: int) -> None:
    """Refuse an image whose decoder would allocate, or work, out of proportion to its file."""
    (width, height), tile = image.size, _tile(image)
    shape = f"{width}x{height} pixels" + (f" in {tile[0]}x{tile[1]}-pixel tiles" if tile else "")
    pixels = decoded_pixels(image)
    if pixels > MAX_IMAGE_PIXELS:
        raise DataError(f"image {name} is {shape}, over the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit: shrink or remove it")
    if pixels > FREE_PIXELS and pixels > MAX_PIXELS_PER_BYTE * file_bytes:
        raise DataError(f"image {name} is {shape} in {file_bytes:,} bytes ({pixels // max(file_bytes, 1):,} pixels "
                        f"per byte; over {FREE_PIXELS // 1_000_000} megapixels the limit is {MAX_PIXELS_PER_BYTE}): it would decode "
                        "out of all proportion to its file, like a decompression bomb; shrink or remove it")
    scans = _jpeg_scans(image.fp) if image.format in ("JPEG", "MPO") else 0
    if scans > MAX_JPEG_SCANS:
        raise DataError(f"image {name} is a JPEG of {scans:,} scans (photos have about ten; each scan is a pass over every pixel, "
                        f"the limit is {MAX_JPEG_SCANS}): save it again")


def decoded_pixels(image) -> int:
    """The pixels an opened image's decoder makes: its size, or a TIFF's tile where that is larger."""
    (width, height), tile = image.size, _tile(image)
    return max(width * height, tile[0] * tile[1] if tile else 0)


def _sized(image, input_size: int, crop: float | None):
    """The image resized whole to input_size x input_size, or with `crop`, as torchvision's Resize(shorter side) then
    CenterCrop(input_size) do it: the shorter side to input_size / crop (the longer in proportion), then the centre."""
    if crop is None:
        return image.resize((input_size, input_size))
    width, height = image.size
    short = _shorter_side(input_size, crop)
    size = (short, max(short, int(short * height / width))) if width <= height else (max(short, int(short * width / height)), short)
    image = image.resize(size)
    left, top = int(round((size[0] - input_size) / 2.0)), int(round((size[1] - input_size) / 2.0))
    return image.crop((left, top, left + input_size, top + input_size))


def _tile(image) -> tuple[int, int] | None:
    """A tiled TIFF's tile size: libtiff allocates whole tiles, however small the image."""
    tags = getattr(image, "tag_v2", {})
    sizes = [tags.get(322), tags.get(323)]  # TileWidth, TileLength
    if sizes[0] is None and sizes[1] is None:
        return None
    return tuple(max(size) if isinstance(size, tuple) else int(size or 0) for size in sizes)


def _jpeg_scans(fp) -> int:
    """Start-of-scan markers (0xFF 0xDA) in a JPEG file, read in blocks; entropy-coded data never holds one."""
    position, count, previous = fp.tell(), 0, b""
    fp.seek(0)
    for block in iter(lambda: fp.read(1 << 20), b""):
        count += (previous[-1:] + block).count(b"\xff\xda")
        previous = block
    fp.seek(position)
    return count


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _image_tensor(image, input_size: int, crop: float | None) -> torch.Tensor:
    if image.mode in DEEP_GREY:
        pixels = np.asarray(_sized(image.convert("F"), input_size, crop), dtype=np.float32) / DEEP_GREY[image.mode]
        return torch.from_numpy(pixels).unsqueeze(0)
    mode = "L" if image.mode in ("L", "1") else "RGB"
    image = _sized(image.convert(mode), input_size, crop)
    tensor = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0
    return tensor.unsqueeze(0) if mode == "L" else tensor.permute(2, 0, 1)
