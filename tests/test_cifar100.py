"""CIFAR-100 folders (`cifar-100-python/train` and `test`): read with their 100 classes and the fine labels,
not the 20 coarse ones beside them, and usable end to end as the data of `ordercomp apply`."""
from __future__ import annotations

import json

import numpy as np
import torch

from ordercomp.data.cifar import read_cifar, write_cifar
from ordercomp.cli import main
from ordercomp.data.datasets import check_layout, load_data
from ordercomp.models.zoo import create_model


def cifar100_folder(root):
    """Three training and one test image of each of the 100 classes, each image a shade of its label."""
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(100), 4))

    def images(of):
        return np.broadcast_to((of * 2).astype(np.uint8)[:, None, None, None], (len(of), 32, 32, 3)).copy()

    train, test = labels[:300], labels[300:]
    return write_cifar(root, (images(train), train), (images(test), test), kind="cifar100"), train, test


def test_a_cifar100_folder_has_100_classes_and_its_fine_labels(tmp_path):
    root, train, test = cifar100_folder(tmp_path / "data")
    assert sorted(p.name for p in (root / "cifar-100-python").iterdir()) == ["test", "train"]
    assert check_layout(str(root)) == ("cifar100", root)
    (_, read_train), (test_images, read_test), classes = read_cifar(root, "cifar100")
    assert classes == 100 and np.array_equal(read_train, train) and np.array_equal(read_test, test)
    assert np.array_equal(test_images[:, 0, 0, 0], test * 2)  # each image is still its own
    bundle = load_data(str(root))
    assert (bundle.name, bundle.num_classes, bundle.in_channels, bundle.input_size) == ("cifar100", 100, 3, 32)
    assert torch.equal(bundle.test.tensors[1], torch.from_numpy(test))  # the test split keeps the file's order
    seen = torch.cat([bundle.train.tensors[1], bundle.val.tensors[1]])
    assert sorted(seen.tolist()) == sorted(train.tolist()) and seen.max() > 19  # fine labels, not the 20 coarse ones


def test_apply_compresses_a_model_of_a_cifar100_folder(tmp_path, capsys):
    root, _, _ = cifar100_folder(tmp_path / "data")
    torch.manual_seed(0)
    torch.save(create_model("cnn_tiny", 100, 3).state_dict(), tmp_path / "tiny100.pt")
    out = tmp_path / "out"
    assert main(["apply", "--model", str(tmp_path / "tiny100.pt"), "--arch", "cnn_tiny", "--data", str(root), "--chain", "prune",
                 "--epochs", "0", "--device", "cpu", "--formats", "state_dict", "--no-measure", "--export", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    described = {key: manifest["data"][key] for key in ("name", "classes", "channels", "input_size", "test")}
    assert described == {"name": "cifar100", "classes": 100, "channels": 3, "input_size": 32, "test": 100}
    assert manifest["input_shape"] == ["batch", 3, 32, 32]
    assert torch.load(out / "model.state_dict.pt", weights_only=True)["head.2.weight"].shape[0] == 100
