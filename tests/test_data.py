"""Datasets: the embedded digits split is fixed; local paths are read or explained; hostile files
(tests/untrusted_data.py) are one line, in bounded memory."""
from __future__ import annotations

import pathlib
import pickle
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from untrusted_data import (BOUND_BYTES, EPS_AS_PNG, batch, blank_images, cifar_folder, flat_png, forged_dtype_batch,
                            hashed_key_batch, many_scan_jpeg, nested_labels_batch, overlong_bytes_batch, python2_batch,
                            run_bounded, strided_batch, tiled_tiff, unknown_codec_batch)

from ordercomp.data.cifar import write_cifar
from ordercomp.data.datasets import DataError, check_layout, load_data


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


def test_a_cifar_folder_missing_a_batch_is_refused_by_its_layout_before_any_is_read(tmp_path):
    """The dashboard checks a data path by its layout alone; an incomplete download passed, and failed the job later."""
    root, _, _ = _cifar_like(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"is not a readable cifar10 folder \(.*data_batch_3 is missing\)"):
        check_layout(str(root))


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



def test_batches_name_the_rows_they_hold():
    """Training hands each batch's rows in the split to its loss (distillation looks up the teacher's outputs by them);
    they must be the rows the images and labels came from, in the order of the plain iteration."""
    data = load_data("digits")
    images, labels = data.train.tensors
    plain, indexed = data.loader("train", 64, shuffle=True, seed=3), data.loader("train", 64, shuffle=True, seed=3)
    seen = []
    for (x, y), (x2, y2, rows) in zip(plain, indexed.with_indices(), strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(images[rows], x2) and torch.equal(labels[rows], y2)
        seen.append(rows)
    assert sorted(torch.cat(seen).tolist()) == list(range(len(data.train)))

def test_writing_a_cifar_folder_never_replaces_one(tmp_path):
    root, _, _ = _cifar_like(tmp_path)
    before = (root / "cifar-10-batches-py" / "test_batch").read_bytes()
    with pytest.raises(FileExistsError, match="exists already"):
        _cifar_like(tmp_path, n_test=3)
    assert (root / "cifar-10-batches-py" / "test_batch").read_bytes() == before


def flat_image(path, size, fmt, **options):
    """A one-colour greyscale image: it compresses to almost nothing in every format but BMP."""
    Image.new("L", size, 90).save(path, format=fmt, **options)


def small_tree(root, per_class: int = 6):
    """root/cat and root/dog holding `per_class` small PNGs each."""
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for index in range(per_class):
            (root / label / f"{index}.png").write_bytes(flat_png(8, 8))
    return root


@pytest.fixture(scope="module")
def bounded(tmp_path_factory):
    """The reproductions that ask for memory (or endless CPU), each through `ordercomp explore` in one
    child process capped at 1.5 GiB above its size after imports: (scratch folder, results)."""
    root = tmp_path_factory.mktemp("bounded")
    bomb_tree = small_tree(root / "bomb-tree")
    (bomb_tree / "cat" / "bomb.png").write_bytes(flat_png(6000, 6000))
    folders = {"strided images": cifar_folder(root / "strided", {"data_batch_1": strided_batch()}),
               "nested labels": cifar_folder(root / "nested", {"data_batch_2": nested_labels_batch()}),
               "hashed key": cifar_folder(root / "key", {"test_batch": hashed_key_batch()}),
               "image bomb": bomb_tree}
    argv = ["explore", "--quiet", "--cache", str(root / "cache"), "--out", str(root / "out"), "--data"]
    return root, run_bounded({name: ("cli", argv + [str(folder)]) for name, folder in folders.items()}, root)


@pytest.mark.parametrize("case, message", [
    ("strided images", "data_batch_1 is not a CIFAR batch: it calls numpy.ndarray directly"),
    ("nested labels", "data_batch_2 is not a CIFAR batch: its 'labels' are not all whole numbers in 0..9"),
    ("hashed key", "test_batch is not a CIFAR batch: it holds a dict key of type tuple"),
    ("image bomb", "bomb.png is 6000x6000 pixels in 105,048 bytes"),
])
def test_a_small_file_declaring_huge_contents_is_one_line_in_bounded_memory(bounded, case, message):
    """Issue 19: a 281-byte batch asked torch for 12 GB, 3.4 kB of labels ran into a MemoryError, a tuple
    key hashed without end, a 36-megapixel PNG of 105 kB decoded to hundreds of MB."""
    root, results = bounded
    lines = results[case]["stderr"].splitlines()
    assert results[case]["code"] == 2 and len(lines) == 1, results[case]["stderr"][-2000:]
    assert lines[0].startswith("ordercomp: error: ") and message in lines[0]
    assert not (root / "cache").exists() and not (root / "out").exists()
    assert results["peak_growth"] < BOUND_BYTES


def one_error_line(capfd, argv) -> str:
    """The CLI's only output for a refused input: one `ordercomp: error:` line, exit 2, no warning."""
    from ordercomp import cli

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(argv)
    err = capfd.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("ordercomp: error: "), err
    assert not caught, [str(warning.message) for warning in caught]
    return err.strip()


@pytest.mark.parametrize("make, message", [
    (lambda root: cifar_folder(root, {"data_batch_1": batch(blank_images(1), [2 ** 70])}), "not all whole numbers in 0..9"),
    (lambda root: cifar_folder(root, {"data_batch_1": batch(blank_images(1), [float("inf")])}), "not all whole numbers in 0..9"),
    (lambda root: cifar_folder(root, {"data_batch_1": unknown_codec_batch()}), "_codecs.encode for something other than bytes"),
    (lambda root: cifar_folder(root, {"data_batch_1": forged_dtype_batch()}), "u1 dtype with a state numpy never writes"),
    (lambda root: cifar_folder(root, {"data_batch_1": overlong_bytes_batch()}), "data_batch_1 is not a CIFAR batch: pickle exhausted"),
    (lambda root: cifar_folder(root, {"data_batch_1": batch(blank_images(2), np.array([0, 1], dtype=object))}), "holds 'O8' values"),
    (lambda root: cifar_folder(root, {"data_batch_1": batch(np.zeros(1, [("pixels", "u1", 3072)]), [0])}), "holds 'V3072' values"),
    (lambda root: cifar_folder(root, {"data_batch_1": pickle.dumps({"data": blank_images(1), "labels": [0], "seen": {1}})}),
     "it holds a set"),
    (lambda root: cifar_folder(root, train_batches([0] * 5)), "has 0 images to split: too few"),
    (lambda root: cifar_folder(root, train_batches([1, 0, 0, 0, 0])), "has 1 image to split: too few (its validation split would hold 0"),
])
def test_cifar_values_no_batch_holds_are_one_line(tmp_path, capfd, make, message):
    """Issue 19: 2**70 and inf were an OverflowError, an unknown codec a LookupError, forged dtype flags
    numpy's "Internal error", empty batches a torch warning and a single image a crash after training."""
    folder = make(tmp_path / "data")
    line = one_error_line(capfd, ["explore", "--quiet", "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"),
                                  "--data", str(folder)])
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def train_batches(counts: list[int]) -> dict[str, bytes]:
    """data_batch_1..5 holding `counts` blank images."""
    return {f"data_batch_{index}": batch(blank_images(count), [0] * count) for index, count in enumerate(counts, 1)}


def test_a_cifar_folder_with_fewer_images_than_batches_is_written(tmp_path):
    """Splitting 3 images over 5 batches left empty ones, which reshape(0, -1) could not write."""
    root, train, _ = _cifar_like(tmp_path, n_train=3)
    from ordercomp.data.cifar import read_cifar

    (images, labels), _, _ = read_cifar(root, "cifar10")
    assert np.array_equal(images, train[0]) and np.array_equal(labels, train[1])


def _reencoded(images, labels):
    """(name, batch bytes) of one CIFAR batch as other writers pickle it."""
    flat = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    return [("protocol 2", batch(flat, [int(v) for v in labels], protocol=2)),
            ("protocol 5", batch(flat, [int(v) for v in labels], protocol=5)),
            ("Python 2", python2_batch(flat, [int(v) for v in labels])),
            ("Fortran order, big-endian labels", batch(np.asfortranarray(flat), labels.astype(">i8"), protocol=4)),
            ("int32 label array", batch(flat, labels.astype("<i4"), protocol=4))]


def test_numpy_pickles_as_others_write_them_still_load(tmp_path):
    """The restricted reader takes what numpy writes in every protocol, and the genuine files' Python 2 form."""
    from ordercomp.data.cifar import read_cifar

    root, train, _ = _cifar_like(tmp_path / "plain")
    expected = read_cifar(root, "cifar10")
    first = expected[0][0][:10], expected[0][1][:10]  # data_batch_1 holds the first 10 of 50
    for name, data in _reencoded(*first):
        (root / "cifar-10-batches-py" / "data_batch_1").write_bytes(data)
        (images, labels), _, _ = read_cifar(root, "cifar10")
        assert np.array_equal(images, expected[0][0]) and np.array_equal(labels, expected[0][1]), name


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("GIF", {}), ("TIFF", {"compression": "tiff_adobe_deflate"}),
                                          ("WEBP", {"lossless": True})])
def test_an_image_out_of_proportion_to_its_bytes_is_refused_before_decoding(tmp_path, fmt, options):
    """Under 40 megapixels but over 100 pixels per byte of its file: a decompression bomb's shape."""
    tree = small_tree(tmp_path / "tree")
    flat_image(tree / "dog" / f"flat.{fmt.lower()}", (3000, 2000), fmt, **options)
    with pytest.raises(DataError, match=r"flat\.\w+ is 3000x2000 pixels in [\d,]+ bytes \([\d,]+ pixels per byte; over 4 "
                                        r"megapixels the limit is 100\)") as error:
        load_data(str(tree))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name, data, message", [
    ("tiled.tif", lambda: tiled_tiff(16, 16, 4096), r"tiled\.tif is 16x16 pixels in 4096x4096-pixel tiles in [\d,]+ bytes"),
    ("scans.jpg", lambda: many_scan_jpeg(200), r"scans\.jpg is a JPEG of 206 scans \(photos have about ten"),
])
def test_an_image_whose_decoder_would_work_out_of_proportion_is_refused(tmp_path, name, data, message):
    """Found beside issue 19: libtiff allocates whole tiles whatever the image size (1 GB for a 16 x 16
    image in a 1 MB file), and repeated JPEG scans each cost a pass over every pixel."""
    tree = small_tree(tmp_path / "tree")
    (tree / "dog" / name).write_bytes(data())
    with pytest.raises(DataError, match=message):
        load_data(str(tree))


def test_photos_of_a_few_megapixels_still_load(tmp_path):
    tree = small_tree(tmp_path / "tree")
    noise = np.random.default_rng(0).integers(0, 256, (2000, 2600, 3), dtype=np.uint8)  # 5.2 MP, a photo's entropy
    Image.fromarray(noise).save(tree / "cat" / "photo.jpg", quality=80)
    data = load_data(str(tree), input_size=16)
    assert len(data.train) + len(data.val) + len(data.test) == 13 and data.in_channels == 3


def test_sixteen_bit_greyscale_keeps_its_values(tmp_path):
    """Converting a 16-bit image to 8-bit L clipped every value above 255: a ramp read as a white field."""
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for index in range(6):
            Image.fromarray(ramp).save(tmp_path / label / f"{index}.png")
    row = load_data(str(tmp_path), input_size=16).train.tensors[0][0, 0, 0]
    assert torch.all(row[1:] > row[:-1])


def test_an_image_in_a_format_outside_the_suffixes_is_not_decoded(tmp_path, monkeypatch):
    """PIL identifies a file by its content: an EPS file named .png went to Ghostscript, which runs PostScript."""
    from PIL import EpsImagePlugin

    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: ran.append(args) or Image.new("L", (8, 8)).im)
    tree = small_tree(tmp_path / "tree")
    (tree / "cat" / "drawing.png").write_bytes(EPS_AS_PNG)
    with pytest.raises(DataError, match=r"cannot read image .*drawing.png: cannot identify image file"):
        load_data(str(tree))
    assert ran == []


def test_a_tree_too_small_to_split_is_one_line_before_any_work(tmp_path):
    """Two images per class left the validation split with fewer than the 2 images a pair decision needs."""
    with pytest.raises(DataError, match=r"has 4 images to split: too few \(its validation split would hold 0, it needs at least 2\)"):
        load_data(str(image_tree(tmp_path / "tree", {"cat": 2, "dog": 2})))


def test_a_cifar_batch_of_more_pickle_operations_than_a_batch_takes_is_refused_before_it_is_built(tmp_path, monkeypatch):
    # each '}' builds an empty dict (~70 bytes of memory a byte of file, up to the 1 GiB a batch file may be); the
    # limit is lowered to keep the test fast, and a genuine batch (a few operations a label) still reads
    import ordercomp.pickles
    from ordercomp.data.cifar import read_cifar

    monkeypatch.setattr(ordercomp.pickles, "MAX_OPCODES", 1000)
    root = cifar_folder(tmp_path / "data", {}, train=100, test=10)
    assert len(read_cifar(root, "cifar10")[0][1]) == 100
    cifar_folder(tmp_path / "bomb", {"data_batch_1": b"\x80\x02" + b"}" * 2000 + b"."})
    with pytest.raises(ValueError, match="data_batch_1 is not a CIFAR batch: more than 1,000 pickle operations"):
        read_cifar(tmp_path / "bomb", "cifar10")


@pytest.fixture()
def small_machine(monkeypatch):
    """A machine of 64 MB: a data set may take 32 MB while it is prepared (three copies of its float32 images)."""
    import ordercomp.live_memory

    monkeypatch.setattr(ordercomp.live_memory, "machine_memory", lambda: 64 << 20)


def test_a_data_set_larger_than_memory_at_its_input_size_is_refused_before_an_image_is_decoded(tmp_path, small_machine, monkeypatch):
    # a 1x1 PNG is 69 bytes and 3 MB of float32 at 512 px: 3,000 of them in a 496 kB zip asked for 26 GiB
    import ordercomp.data.datasets as datasets

    flat = small_tree(tmp_path / "flat", per_class=6)
    split = image_tree(tmp_path / "split", {"train/cat": 1, "train/dog": 1, "test/cat": 1, "test/dog": 1})
    cifar = _cifar_like(tmp_path / "cifar", n_train=4, n_test=1)[0]
    np.savez(tmp_path / "tiny.npz", x=np.zeros((12, 1, 4, 4), np.float32), y=np.arange(12) % 2)
    decoded = datasets._read_image
    monkeypatch.setattr(datasets, "_read_image", lambda *args: pytest.fail("an image was decoded"))
    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", lambda *args: pytest.fail("an array was read"))
    for source, images, channels in ((flat, 12, 3), (split, 4, 3), (cifar, 5, 3), (tmp_path / "tiny.npz", 12, 1), ("digits", 1797, 1)):
        with pytest.raises(DataError, match=rf"^the data set \S+ holds {images:,} images, which at 512x512 px and {channels} "
                                            r"channels? take about [\d,]+ MiB while it is prepared, more than 50% of this machine's 64 MiB: use a smaller"):
            load_data(str(source), input_size=512)
    monkeypatch.setattr(datasets, "_read_image", decoded)
    assert load_data(str(flat), input_size=64).input_size == 64


def test_a_centre_crop_reads_photos_of_any_shape_as_torchvisions_resize_then_center_crop_does(tmp_path):
    """Stop 44: every ImageFolder image was resized whole to a square, so a model trained and evaluated on photos with
    torchvision's Resize(256) then CenterCrop(224) saw them squashed. `crop` resizes and crops as those do."""
    from torchvision import transforms

    rng = np.random.default_rng(0)
    shapes = {"cat": [(40, 30), (30, 44)], "dog": [(50, 50), (37, 29)]}  # width x height, wide, tall and square
    for label, sizes in shapes.items():
        (tmp_path / label).mkdir()
        for index, (width, height) in enumerate(sizes * 3):
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(tmp_path / label / f"{index}.png")
    data = load_data(str(tmp_path), input_size=16, crop=0.8, normalize="none")
    expected = transforms.Compose([transforms.Resize(20, interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(16), transforms.PILToTensor()])
    read = {tuple(expected(Image.open(path)).float().div(255).flatten().tolist()) for path in tmp_path.rglob("*.png")}
    assert {tuple(image.flatten().tolist()) for split in (data.train, data.val, data.test) for image in split.tensors[0]} == read
    assert data.preprocessing["resize"] == ("PIL Image.resize of the shorter side to 20 px (bicubic), then the centre 16x16 px "
                                            "(crop 0.8: torchvision's Resize then CenterCrop)")
    whole = load_data(str(tmp_path), input_size=16, normalize="none")
    assert whole.fingerprint() != data.fingerprint()  # cached steps of one never serve the other


@pytest.mark.parametrize("crop, message", [
    (0, r"crop must be the share of the shorter side kept, in \[0.25, 1\], e.g. 0.875 \(224 of 256 px\), got 0$"),
    (0.001, r"got 0.001$"), (1.5, r"got 1.5$"), ("0.9", r"got '0.9'$")])  # 0.001: each image at 1,000 times the input size
def test_a_crop_outside_0_to_1_is_one_line(crop, message):
    with pytest.raises(DataError, match=message):
        load_data("digits", crop=crop)


def test_a_crop_of_square_data_is_refused_rather_than_ignored(tmp_path):
    with pytest.raises(DataError, match=r"^--crop \(crop=0.875\) is for an ImageFolder tree's images, which come in any shape; "
                                        r"digits is read as it is: leave crop out$"):
        load_data("digits", crop=0.875)
    _cifar_like(tmp_path)
    with pytest.raises(DataError, match=r"is read as it is: leave crop out$"):
        load_data(str(tmp_path), crop=0.875)
