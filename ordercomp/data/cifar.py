"""CIFAR-10/100 folders (the "python version": pickled batches), read without running code from them
and in memory bounded by the bytes they hold.

torchvision's reader accepts only the genuine files (it checks their MD5), so a CIFAR-format folder
of other images (a generated 50k-image benchmark set, a relabelled copy) could not be read. This
reader accepts any file in the layout. A pickle can call any function it names and can describe far
more than it holds (an array that views one byte a million times, a list that holds itself twice at
every level, a dtype with forged flags, a dict key whose hash never ends), so:

- the unpickler answers the few globals numpy's pickles name (its array and dtype reconstructors, and
  `_codecs.encode` and `bytes()`, how protocol 2 writes bytes) with stand-ins that only record what the
  file says, and refuses any other callable by name, like `torch.load(weights_only=True)`; it takes
  dict keys of text, bytes and whole numbers only and no sets, so hashing costs no more than the bytes read;
  a pickle of more opcodes than `pickles.MAX_OPCODES` is refused before any is run (each builds an object:
  a file of one-byte `}` opcodes is ~70 bytes of empty dicts per byte);
- `batch_arrays` then makes the two entries it needs into arrays, each holding exactly the bytes its
  shape and plain whole-number dtype declare, and accepts as labels one whole number in the class
  range per image (a flat list or a 1-D array), checked without expanding anything else.

`write_cifar` writes either layout (the CIFAR-size benchmark folder, the tests).
"""
from __future__ import annotations

import io
import math
import pickle
import struct
from pathlib import Path

import numpy as np

from ..pickles import check_opcodes

CIFAR10_DIR, CIFAR100_DIR = "cifar-10-batches-py", "cifar-100-python"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
# kind: (folder, training batches, test batch, the labels read, classes)
LAYOUTS = {"cifar10": (CIFAR10_DIR, CIFAR10_TRAIN, "test_batch", "labels", 10),
           "cifar100": (CIFAR100_DIR, ("train",), "test", "fine_labels", 100)}
MAX_BATCH_BYTES = 1 << 30
IMAGE_BYTES = 3 * 32 * 32
WHOLE_NUMBER_TYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")  # the dtype names numpy pickles for them
BYTE_ORDERS = ("<", ">", "|", "=")
MAX_DIMS = 8


class UnsafeBatch(pickle.UnpicklingError):
    """The batch asks for something a CIFAR batch never holds."""


class _ArrayClass:
    """Stands for numpy.ndarray, which numpy's own pickles name only as what `_reconstruct` makes;
    called directly it builds an array over a buffer with any offset and strides (one byte seen a
    million times)."""

    def __new__(cls, *args, **kwargs):
        raise UnsafeBatch("it calls numpy.ndarray directly (an array over a buffer with strides of its choosing), "
                          "which numpy's own pickles never do (refused)")


class _Dtype:
    """numpy.dtype(name, align, copy) and the state pickled with it, recorded; `resolve` makes the dtype."""

    name = state = None

    def __init__(self, name=None, align=False, copy=True):
        self.name = name

    def __setstate__(self, state):
        self.state = state

    def resolve(self, key: str) -> np.dtype:
        """The dtype, if it is a plain whole-number type with the state numpy writes for it (no forged flags)."""
        if not (type(self.name) is str and self.name in WHOLE_NUMBER_TYPES):
            shown = repr(self.name)[:20] if type(self.name) is str else type(self.name).__name__
            raise ValueError(f"its '{key}' holds {shown} values, not the whole numbers of a CIFAR batch")
        plain, state = np.dtype(self.name).__reduce__()[2], self.state  # (3, byte order, None, None, None, -1, -1, flags)
        if not (type(state) is tuple and len(state) == len(plain) and _same(state[0], plain[0])
                and type(state[1]) is str and state[1] in BYTE_ORDERS and all(map(_same, state[2:], plain[2:]))):
            raise ValueError(f"its '{key}' has a {self.name} dtype with a state numpy never writes (forged flags or fields)")
        return np.dtype(self.name).newbyteorder(state[1]) if state[1] in "<>" else np.dtype(self.name)


def _same(value, plain) -> bool:
    """`value == plain` for a value from the file, compared only when of the same plain type (cheap)."""
    return type(value) is type(plain) and value == plain


class _Array:
    """An ndarray as the pickle describes it (shape, dtype, Fortran order, raw bytes), recorded by
    numpy's `_reconstruct` + `__setstate__` or by protocol 5's `_frombuffer`; `_array` makes it."""

    shape = dtype = fortran = raw = None

    def __setstate__(self, state):
        if type(state) is not tuple or len(state) not in (4, 5):  # [version,] shape, dtype, Fortran order, raw
            raise UnsafeBatch("an array's pickled state is not numpy's")
        self.shape, self.dtype, self.fortran, self.raw = state[-4:]


def _reconstruct(cls, shape, typecode) -> _Array:
    if cls is not _ArrayClass:
        raise UnsafeBatch("it calls numpy's _reconstruct for something other than an array")
    return _Array()


def _frombuffer(buffer, dtype, shape, order) -> _Array:
    array = _Array()
    array.__setstate__((shape, dtype, order == "F" if type(order) is str and order in ("C", "F") else None, buffer))
    return array


def _latin1_bytes(text, encoding) -> bytes:
    """`_codecs.encode(text, "latin1")`: how protocol 2 writes bytes; any other use is refused."""
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
        raise UnsafeBatch("it calls _codecs.encode for something other than bytes written as latin-1 text (refused)")
    return text.encode("latin1")


def _empty_bytes() -> bytes:
    """`bytes()`: how protocol 2 writes empty bytes (an empty array's); `bytes(n)` would allocate n."""
    return b""


STAND_INS = {
    ("numpy", "ndarray"): _ArrayClass, ("numpy", "dtype"): _Dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct, ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _latin1_bytes, ("__builtin__", "bytes"): _empty_bytes, ("builtins", "bytes"): _empty_bytes,
}


class _Opcodes(dict):
    def __missing__(self, code: int):
        raise pickle.UnpicklingError(f"it holds byte {code:#04x} where a pickle opcode belongs")


def _plain_key(key):
    if type(key) not in (str, bytes, int):
        raise UnsafeBatch(f"it holds a dict key of type {type(key).__name__}; a CIFAR batch's keys are text")
    return key


class _BatchUnpickler(pickle._Unpickler):
    """Python's own unpickler in its pure-Python form, whose opcodes can be replaced (the C one builds
    dicts and sets itself, hashing whatever keys the file nests): globals are answered by STAND_INS,
    dict keys are plain, sets are refused, and a bytearray is as long as the bytes read, not as declared."""

    dispatch = _Opcodes(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str):
        if (module, name) not in STAND_INS:
            raise UnsafeBatch(f"it asks to call {module[:80]}.{name[:80]}, which a CIFAR batch never holds (refused: unpickling it would run code)")
        return STAND_INS[module, name]

    def _fill(self, target, items: list) -> None:
        for index in range(0, len(items), 2):
            target[_plain_key(items[index])] = items[index + 1]

    def load_setitem(self):
        value, key = self.stack.pop(), self.stack.pop()
        self._fill(self.stack[-1], [key, value])

    def load_setitems(self):
        items = self.pop_mark()
        self._fill(self.stack[-1], items)

    def load_dict(self):
        items = self.pop_mark()
        self.append({})
        self._fill(self.stack[-1], items)

    def load_set(self):
        raise UnsafeBatch("it holds a set, which a CIFAR batch never does")

    def load_bytearray8(self):
        size, = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(min(size, MAX_BATCH_BYTES))))

    dispatch[pickle.SETITEM[0]], dispatch[pickle.SETITEMS[0]], dispatch[pickle.DICT[0]] = load_setitem, load_setitems, load_dict
    dispatch[pickle.EMPTY_SET[0]] = dispatch[pickle.ADDITEMS[0]] = dispatch[pickle.FROZENSET[0]] = load_set
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def load_batch(path: Path) -> dict:
    """One pickled batch as a dict with str keys, read by the restricted unpickler (arrays still stand-ins)."""
    if path.stat().st_size > MAX_BATCH_BYTES:
        raise ValueError(f"it is {path.stat().st_size >> 20} MiB, more than a CIFAR batch")
    data = path.read_bytes()
    check_opcodes(io.BytesIO(data))  # one object built per opcode: 1 MB of '}' would be 70 MB of empty dicts
    try:
        record = _BatchUnpickler(io.BytesIO(data), encoding="latin1").load()
    except EOFError:
        raise pickle.UnpicklingError("it ends before its pickle does (truncated)") from None
    if type(record) is not dict:
        raise ValueError(f"it holds a {type(record).__name__}, not a dict of data and labels")
    return {key.decode("latin1") if type(key) is bytes else key: value for key, value in record.items()}


def _array(value, key: str) -> np.ndarray:
    """The array a stand-in recorded, if its raw bytes are exactly what its shape and dtype need."""
    if not isinstance(value, _Array) or not isinstance(value.dtype, _Dtype):
        raise ValueError(f"its '{key}' is not a numpy array")
    dtype, shape, raw = value.dtype.resolve(key), value.shape, value.raw
    if not (type(shape) is tuple and len(shape) <= MAX_DIMS and all(type(n) is int and 0 <= n <= MAX_BATCH_BYTES for n in shape)):
        raise ValueError(f"its '{key}' has no valid shape")
    if type(raw) is str:  # Python 2 pickles (the genuine CIFAR files) hold bytes as latin-1 text
        raw = raw.encode("latin1")
    if type(raw) not in (bytes, bytearray) or type(value.fortran) is not bool:
        raise ValueError(f"its '{key}' holds no raw bytes")
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"its '{key}' declares {math.prod(shape)} values of {dtype.itemsize} bytes but holds {len(raw)} bytes")
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if value.fortran else "C")


def _labels(value, key: str, count: int, classes: int) -> np.ndarray:
    """One class index per image, from a flat list of whole numbers or a 1-D whole-number array."""
    labels = _array(value, key) if isinstance(value, _Array) else value
    if not (type(labels) is list or isinstance(labels, np.ndarray) and labels.ndim == 1):
        raise ValueError(f"its '{key}' is not a flat list of labels")
    if len(labels) != count:
        raise ValueError(f"it has {count} images but {len(labels)} '{key}'")
    if isinstance(labels, np.ndarray):
        valid = count == 0 or (labels.min() >= 0 and labels.max() < classes)
    else:  # checked one by one: a number too big for int64 (2**70) or a float (inf) is no class
        valid = all(type(label) is int and 0 <= label < classes for label in labels)
    if not valid:
        raise ValueError(f"its '{key}' are not all whole numbers in 0..{classes - 1}")
    return np.asarray(labels, dtype=np.int64)


def batch_arrays(record: dict, label_key: str, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels N int64) of one batch, checked."""
    data = _array(record.get("data"), "data")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        raise ValueError(f"its 'data' is not an N x {IMAGE_BYTES} uint8 array")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), _labels(record.get(label_key), label_key, len(data), classes)


def missing_files(root: Path, kind: str) -> list[Path]:
    """The batch files a CIFAR-10 or CIFAR-100 folder lacks, found without reading any (an incomplete download)."""
    folder_name, train_files, test_file, _, _ = LAYOUTS[kind]
    return [root / folder_name / name for name in (*train_files, test_file) if not (root / folder_name / name).is_file()]


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
                parts.append(batch_arrays(load_batch(path), label_key, classes))
            except FileNotFoundError:
                raise ValueError(f"{path} is missing") from None
            except (ValueError, pickle.UnpicklingError, TypeError, AttributeError, IndexError, struct.error) as error:
                raise ValueError(f"{path} is not a CIFAR batch: {error}") from None
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

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
        record = {"data": np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), IMAGE_BYTES)),
                  label_key: [int(v) for v in labels]}
        if kind == "cifar100":
            record["coarse_labels"] = [int(v) // 5 for v in labels]
        (folder / name).write_bytes(pickle.dumps(record, protocol=4))

    for name, part in zip(train_files, np.array_split(np.arange(len(train[0])), len(train_files))):
        dump(name, train[0][part], train[1][part])
    dump(test_file, *test)
    return Path(root)
