"""One entry point from a data spec to train/val datasets and class names.

Specs:
- ``digits``: the embedded default — scikit-learn's 8x8 handwritten digits (1797 images, 10
  classes), shipped inside the scikit-learn wheel, so it works offline. Upscaled to the image size
  and split 80/20 (stratified, fixed seed) into train and a held-out val split.
- ``PATH``: an ImageFolder tree with ``train/`` and ``val/`` (or ``validation/``) subfolders.
- ``cifar10[:ROOT]`` / ``cifar100[:ROOT]``: torchvision's CIFAR, downloaded when online.
- ``hf:NAME_OR_PATH``: a Hugging Face dataset (hub name, or a folder written by ``save_to_disk``)
  with an image column and a label column (found by feature type unless given in the recipe).

Transforms come from ``timm.data.create_transform`` so DeiT's augmentations (RandAugment, random
erasing, ...) are available to training; ``aug=None`` gives the eval transform on both splits
(what calibration and verification use).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from torch.utils.data import Dataset

from edgevit.config import AugConfig, DataConfig
from edgevit.errors import EdgevitError

DEFAULT_SPEC = "digits"
CACHE_DIR = Path(os.environ.get("EDGEVIT_DATA", Path.home() / ".cache" / "edgevit"))


@dataclass
class Datasets:
    train: Dataset
    val: Dataset
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ImageList(Dataset):
    """Images (PIL, or anything `load` turns into PIL) with integer labels and a transform."""

    def __init__(
        self,
        images: Any,
        labels: list[int],
        transform: Callable | None,
        load: Callable[[Any], Image.Image] | None = None,
    ):
        self.images, self.labels, self.transform, self.load = images, labels, transform, load

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        img = self.images[i]
        return self.load(img) if self.load else img

    def __getitem__(self, i: int) -> tuple[Any, int]:
        img = self.image(i).convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.labels[i])


def transforms(
    img_size: int, aug: AugConfig | None, mean: tuple, std: tuple, crop_pct: float
) -> tuple[Callable, Callable]:
    """(train, eval) transforms from timm; aug=None means eval on both."""
    eval_tf = create_transform(
        img_size, is_training=False, crop_pct=crop_pct, mean=mean, std=std, interpolation="bicubic"
    )
    if aug is None:
        return eval_tf, eval_tf
    train_tf = create_transform(
        img_size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter or None,
        auto_augment=aug.auto_augment,
        interpolation="bicubic",
        re_prob=aug.reprob,
        re_mode="pixel",
        re_count=1,
        mean=mean,
        std=std,
    )
    return train_tf, eval_tf


def build_datasets(
    data: DataConfig | dict,
    aug: AugConfig | None = None,
    mean: tuple = IMAGENET_DEFAULT_MEAN,
    std: tuple = IMAGENET_DEFAULT_STD,
    crop_pct: float | None = None,
) -> Datasets:
    """Train/val datasets and class names for a data spec (see the module docstring)."""
    cfg = data if isinstance(data, DataConfig) else DataConfig.model_validate(data)
    crop = crop_pct if crop_pct is not None else (aug.crop_pct if aug else 0.875)
    train_tf, eval_tf = transforms(cfg.img_size, aug, tuple(mean), tuple(std), crop)
    spec = cfg.spec.strip()
    if spec == DEFAULT_SPEC:
        ds = _digits(cfg.img_size, train_tf, eval_tf)
    elif spec.split(":")[0] in ("cifar10", "cifar100"):
        ds = _cifar(spec, train_tf, eval_tf)
    elif spec.startswith("hf:"):
        ds = _huggingface(spec[3:], cfg, train_tf, eval_tf)
    else:
        ds = _image_folder(Path(spec).expanduser(), train_tf, eval_tf)
    if cfg.labelled < 1:
        ds.train = _unlabel(ds.train, cfg.labelled)
    return ds


UNLABELLED = -1


def _unlabel(train: Dataset, fraction: float) -> "ImageList":
    """The training split with the labels of all but a stratified `fraction` (fixed seed) set to -1."""
    if not isinstance(train, ImageList):
        raise EdgevitError("data.labelled < 1 needs an in-memory or ImageFolder training split")
    labels = np.asarray(train.labels)
    keep = np.zeros(len(labels), dtype=bool)
    rng = np.random.RandomState(0)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep[rng.choice(idx, max(1, round(fraction * len(idx))), replace=False)] = True
    return ImageList(
        train.images, [int(y) if k else UNLABELLED for y, k in zip(labels, keep)], train.transform, load=train.load
    )


class LabelledOnly(Dataset):
    """Only the labelled images of a split, repeated to the split's length: an epoch has as many
    steps as one over the whole split (each labelled image comes back with fresh augmentation)."""

    def __init__(self, base: Dataset):
        self.base = base
        self.idx = [i for i, y in enumerate(labels_of(base)) if y != UNLABELLED]
        if not self.idx:
            raise EdgevitError("data.labelled leaves no labelled image; raise it")

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        return self.base[self.idx[i % len(self.idx)]]


def labelled_only(train: Dataset) -> Dataset:
    """`train` itself when every image is labelled, else its labelled images (see LabelledOnly)."""
    return LabelledOnly(train) if UNLABELLED in labels_of(train) else train


def _digits(img_size: int, train_tf: Callable, eval_tf: Callable) -> Datasets:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)  # 8x8, values 0..16
    images = [Image.fromarray(p, mode="L").resize((img_size, img_size), Image.BICUBIC).convert("RGB") for p in pixels]
    idx = np.arange(len(images))
    tr, va = train_test_split(idx, test_size=0.2, random_state=0, stratify=bunch.target)
    classes = [str(int(c)) for c in bunch.target_names]
    return Datasets(
        ImageList([images[i] for i in tr], [int(bunch.target[i]) for i in tr], train_tf),
        ImageList([images[i] for i in va], [int(bunch.target[i]) for i in va], eval_tf),
        classes,
    )


def _image_folder(root: Path, train_tf: Callable, eval_tf: Callable) -> Datasets:
    from torchvision.datasets import ImageFolder

    if not root.exists():
        raise EdgevitError(
            f"dataset path {root} does not exist; pass an ImageFolder with train/ and val/, "
            f"or one of: digits, cifar10, cifar100, hf:NAME"
        )
    val_dir = next((root / n for n in ("val", "validation", "test") if (root / n).is_dir()), None)
    if not (root / "train").is_dir() or val_dir is None:
        raise EdgevitError(
            f"{root} is not an ImageFolder tree: it needs train/ and val/ subfolders, one folder per class inside each"
        )
    try:
        train, val = ImageFolder(root / "train"), ImageFolder(val_dir)
    except (FileNotFoundError, RuntimeError) as exc:
        raise EdgevitError(f"{root}: {exc}") from None
    if train.classes != val.classes:
        raise EdgevitError(
            f"{root}: train/ and {val_dir.name}/ have different class folders "
            f"({len(train.classes)} vs {len(val.classes)}); make them match"
        )
    return Datasets(
        ImageList([p for p, _ in train.samples], train.targets, train_tf, load=Image.open),
        ImageList([p for p, _ in val.samples], val.targets, eval_tf, load=Image.open),
        list(train.classes),
    )


def _cifar(spec: str, train_tf: Callable, eval_tf: Callable) -> Datasets:
    from torchvision import datasets as tvd

    name, _, root_s = spec.partition(":")
    root = Path(root_s).expanduser() if root_s else CACHE_DIR / name
    cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    try:
        train = cls(str(root), train=True, download=False)
        val = cls(str(root), train=False, download=False)
    except RuntimeError:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # never hang on a network call
        try:
            train = cls(str(root), train=True, download=True)
            val = cls(str(root), train=False, download=True)
        except Exception:  # noqa: BLE001 - offline: any network error means "put the files there"
            folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
            raise EdgevitError(
                f"{name} is not in {root} and could not be downloaded (offline?): put the "
                f"extracted '{folder}' folder in {root} or use {name}:ROOT"
            ) from None
        finally:
            socket.setdefaulttimeout(old)
    return Datasets(
        ImageList(train.data, list(train.targets), train_tf, load=Image.fromarray),
        ImageList(val.data, list(val.targets), eval_tf, load=Image.fromarray),
        list(train.classes),
    )


def _huggingface(name: str, cfg: DataConfig, train_tf: Callable, eval_tf: Callable) -> Datasets:
    try:
        import datasets as hfd
    except ImportError:
        raise EdgevitError("hf: datasets need the 'datasets' package: pip install -e '.[hf]'") from None
    try:
        ds = hfd.load_from_disk(name) if Path(name).exists() else hfd.load_dataset(name)
    except Exception as exc:  # noqa: BLE001 - hub/disk errors vary; one line is what the user needs
        raise EdgevitError(f"could not load Hugging Face dataset '{name}': {str(exc).splitlines()[0]}") from None
    if isinstance(ds, hfd.Dataset):
        split = ds.train_test_split(test_size=0.2, seed=0, stratify_by_column=None)
        ds = hfd.DatasetDict(train=split["train"], validation=split["test"])
    val_name = next((n for n in ("validation", "val", "test") if n in ds), None)
    if "train" not in ds or val_name is None:
        raise EdgevitError(
            f"Hugging Face dataset '{name}' needs a 'train' and a 'validation'/'test' split; it has {list(ds)}"
        )
    feats = ds["train"].features
    image_col = cfg.image_column or next((k for k, f in feats.items() if isinstance(f, hfd.Image)), None)
    label_col = cfg.label_column or next((k for k, f in feats.items() if isinstance(f, hfd.ClassLabel)), None)
    if image_col not in feats or label_col not in feats:
        raise EdgevitError(
            f"Hugging Face dataset '{name}': no image/label column found among {list(feats)}; "
            f"set data.image_column and data.label_column"
        )
    label_feat = feats[label_col]
    if isinstance(label_feat, hfd.ClassLabel):
        classes = list(label_feat.names)
    else:
        classes = [str(c) for c in sorted(set(ds["train"][label_col]))]

    def split(d: Any, tf: Callable) -> ImageList:
        labels = (
            list(d[label_col])
            if isinstance(label_feat, hfd.ClassLabel)
            else [classes.index(str(v)) for v in d[label_col]]
        )
        return ImageList(d.select_columns([image_col]), labels, tf, load=lambda row: _pil(row[image_col]))

    return Datasets(split(ds["train"], train_tf), split(ds[val_name], eval_tf), classes)


def _pil(obj: Any) -> Image.Image:
    return obj if isinstance(obj, Image.Image) else Image.fromarray(np.asarray(obj, dtype=np.uint8))


def labels_of(ds: Dataset) -> list[int]:
    return list(ds.labels) if isinstance(ds, ImageList) else [int(ds[i][1]) for i in range(len(ds))]


def seeded(fn: Callable[[], Any], seed: int) -> Any:
    """Run fn with Python's, NumPy's and torch's global RNGs seeded: a fixed augmentation for a
    given seed. torch's CPU stream (drop-path, dropout) is restored afterwards; Python's and NumPy's
    are only used by augmentation and Mixup, which are always seeded, and saving them costs more
    than the augmentation itself."""
    import random

    gen = torch.default_generator
    state = gen.get_state()
    random.seed(seed)
    np.random.seed(seed % (2**32))
    gen.manual_seed(seed)  # not torch.manual_seed: that also seeds CUDA and costs ~0.7 ms
    try:
        return fn()
    finally:
        gen.set_state(state)
