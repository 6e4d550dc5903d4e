"""Data specs: the embedded default, an ImageFolder tree and a Hugging Face dataset made here."""

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from edgevit.config import AugConfig
from edgevit.data import build_datasets
from edgevit.errors import EdgevitError


def _check(ds, n_classes, size):
    assert ds.num_classes == n_classes
    x, y = ds.train[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32 and 0 <= y < n_classes
    xs = torch.stack([ds.val[i][0] for i in range(min(32, len(ds.val)))])
    # normalised with ImageNet mean/std: roughly zero-centred, not in [0, 1]
    assert xs.min() < 0 and xs.max() > 1 and abs(float(xs.mean())) < 2


def test_embedded_default_digits():
    ds = build_datasets({"spec": "digits", "img_size": 32}, AugConfig(hflip=0))
    _check(ds, 10, 32)
    assert len(ds.train) + len(ds.val) == 1797 and len(ds.val) == 360
    # the held-out split is stratified: every class is there
    assert set(ds.val.labels) == set(range(10))


def _digit_images(n):
    d = load_digits()
    return [Image.fromarray((d.images[i] * 15.9).astype(np.uint8)).resize((24, 24)) for i in range(n)], d.target[:n]


def test_image_folder_tree(tmp_path):
    images, labels = _digit_images(60)
    seen: dict = {}
    for i, (img, y) in enumerate(zip(images, labels)):
        seen[y] = seen.get(y, 0) + 1
        split = "val" if seen[y] <= 2 else "train"  # two of each class held out
        (tmp_path / split / f"digit{y}").mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / split / f"digit{y}" / f"{i}.png")
    ds = build_datasets({"spec": str(tmp_path), "img_size": 28}, None)
    _check(ds, 10, 28)
    assert ds.classes[3] == "digit3" and len(ds.val) == 20


def test_image_folder_errors(tmp_path):
    with pytest.raises(EdgevitError, match="does not exist"):
        build_datasets({"spec": str(tmp_path / "nope")})
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(EdgevitError, match="needs train/ and val/"):
        build_datasets({"spec": str(tmp_path)})


def test_huggingface_dataset_from_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    images, labels = _digit_images(50)
    features = datasets.Features(
        {"img": datasets.Image(), "digit": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    full = datasets.Dataset.from_dict({"img": images, "digit": [int(v) for v in labels]}, features=features)
    parts = full.train_test_split(test_size=0.3, seed=0)
    datasets.DatasetDict(train=parts["train"], validation=parts["test"]).save_to_disk(str(tmp_path / "hfds"))
    ds = build_datasets({"spec": f"hf:{tmp_path / 'hfds'}", "img_size": 32}, AugConfig(hflip=0))
    _check(ds, 10, 32)
    assert len(ds.val) == 15 and ds.classes == [str(i) for i in range(10)]


def test_cifar_offline_says_where_to_put_files(tmp_path, monkeypatch):
    import socket

    def no_network(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)  # this test is about the offline message
    with pytest.raises(EdgevitError, match="cifar-10-batches-py"):
        build_datasets({"spec": f"cifar10:{tmp_path}"})
