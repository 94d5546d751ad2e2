"""CIFAR-10/100 folders (the "python version": pickled batches), read without running code from them.

torchvision's reader accepts only the genuine files (it checks their MD5), so a CIFAR-format folder
of other images (a generated 50k-image benchmark set, a relabelled copy) could not be read. This
reader accepts any file in the layout; as unpickling can call any function a file names, its
unpickler accepts only what a CIFAR batch holds (dicts, lists, numbers, text, bytes and numpy
arrays) and refuses any other callable by name, like `torch.load(weights_only=True)`.
`write_cifar` writes either layout (the CIFAR-size benchmark folder, the tests).
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
# kind: (folder, training batches, test batch, the labels read, classes)
LAYOUTS = {"cifar10": (CIFAR10_DIR, CIFAR10_TRAIN, "test_batch", "labels", 10),
           "cifar100": (CIFAR100_DIR, ("train",), "test", "fine_labels", 100)}
MAX_BATCH_BYTES = 1 << 30
SAFE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
}


class UnsafeBatch(pickle.UnpicklingError):
    """The batch names a callable a CIFAR batch never holds."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in SAFE_GLOBALS:
            raise UnsafeBatch(f"it asks to call {module}.{name}, which a CIFAR batch never holds (refused: unpickling it would run code)")
        return super().find_class(module, name)


def load_batch(path: Path) -> dict:
    """One pickled batch as a dict with str keys, read by the restricted unpickler."""
    if path.stat().st_size > MAX_BATCH_BYTES:
        raise ValueError(f"it is {path.stat().st_size >> 20} MiB, more than a CIFAR batch")
    record = _ArraysOnly(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    if not isinstance(record, dict):
        raise ValueError(f"it holds a {type(record).__name__}, not a dict of data and labels")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in record.items()}


def batch_arrays(record: dict, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N int64) of one batch, checked."""
    data, labels = record.get("data"), record.get(label_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError("its 'data' is not an N x 3072 uint8 array")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),):
        raise ValueError(f"it has {len(data)} images but {labels.size} '{label_key}'")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar(root: Path, kind: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], int]:
    """((train images, labels), (test images, labels), classes) of a CIFAR-10 or CIFAR-100 folder.
    Raises ValueError naming the file and what is wrong with it."""
    folder_name, train_files, test_file, label_key, classes = LAYOUTS[kind]
    folder = root / folder_name

    def read(names):
        parts = []
        for name in names:
            path = folder / name
            try:
                parts.append(batch_arrays(load_batch(path), label_key))
            except FileNotFoundError:
                raise ValueError(f"{path} is missing") from None
            except (ValueError, pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError) as error:
                raise ValueError(f"{path} is not a CIFAR batch: {error}") from None
        images, labels = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        if labels.size and (labels.min() < 0 or labels.max() >= classes):
            raise ValueError(f"{folder} has labels outside 0..{classes - 1}")
        return images, labels

    return read(train_files), read((test_file,)), classes


def write_cifar(root: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], kind: str = "cifar10") -> Path:
    """Write images (N x 32 x 32 x 3 uint8) and labels as a CIFAR-10 or CIFAR-100 python-version folder under
    `root` (CIFAR-100: the labels as fine labels, and coarse labels beside them as fine // 5, five classes a
    superclass like the real set's 20); refused when `root` already holds one: its files are not ordercomp's to replace."""
    folder_name, train_files, test_file, label_key, _ = LAYOUTS[kind]
    folder = Path(root) / folder_name
    if folder.exists():
        raise FileExistsError(f"{folder} exists already: give a new folder")
    folder.mkdir(parents=True)

    def dump(name, images, labels):
        record = {"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1)),
                  label_key: [int(v) for v in labels]}
        if kind == "cifar100":
            record["coarse_labels"] = [int(v) // 5 for v in labels]
        (folder / name).write_bytes(pickle.dumps(record, protocol=4))

    for name, part in zip(train_files, np.array_split(np.arange(len(train[0])), len(train_files))):
        dump(name, train[0][part], train[1][part])
    dump(test_file, *test)
    return Path(root)
