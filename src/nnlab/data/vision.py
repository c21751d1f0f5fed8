"""MNIST, Fashion-MNIST and CIFAR-10, read by torchvision's own dataset classes.

torchvision downloads each set on first use (`download=True`) into the folder layout it expects
under `root`, and reads it from there afterwards. Here its train and test parts are joined into one
`ArrayDataset` whose `test_mask` marks the official test images, so the DataModule tests on exactly
those and draws the validation split from the training images. Pixels are scaled to [0, 1] float32,
channels first: (N, 1, 28, 28) or (N, 3, 32, 32).

torchvision is imported inside the functions (about a second of start-up).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import UserError

# What torchvision's loaders raise for a missing, corrupt or undownloadable set: RuntimeError
# ("Dataset not found", failed checksums, all mirrors failed), URLError (an OSError) when offline,
# and assertion/unpickling errors for a damaged file.
_LOAD_ERRORS = (RuntimeError, OSError, ValueError, TypeError, KeyError, AssertionError, EOFError, pickle.PickleError)


@dataclass(frozen=True)
class _Layout:
    """Where a torchvision dataset class looks for its files, for the messages."""

    name: str  # human name
    cls: str  # class in torchvision.datasets
    folder: str  # under root
    files: tuple[str, ...]
    offline: str  # how to install it by hand
    size: str  # download size


def _idx_layout(name: str, cls: str, size: str, source: str) -> _Layout:
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    # MNIST._check_exists looks for the unpacked files only; its download() finds .gz files that are
    # already there (by their checksums) and unpacks them without going online.
    offline = f"unpacked, or the four .gz files from {source} with download=true, which unpacks them offline"
    return _Layout(name, cls, f"{cls}/raw", files, offline, size)


MNIST = _idx_layout("MNIST", "MNIST", "12 MB", "https://ossci-datasets.s3.amazonaws.com/mnist/")
FASHION_MNIST = _idx_layout(
    "Fashion-MNIST", "FashionMNIST", "31 MB", "https://github.com/zalandoresearch/fashion-mnist"
)
CIFAR10 = _Layout(
    "CIFAR-10",
    "CIFAR10",
    "cifar-10-batches-py",
    ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"),
    # CIFAR10.download() skips the download when the archive is already in root with the right checksum.
    "unpacked from cifar-10-python.tar.gz of https://www.cs.toronto.edu/~kriz/cifar.html; or put that archive "
    "in the data folder with download=true, which unpacks it offline",
    "170 MB",
)


def mnist(root: str = "data", download: bool = True) -> ArrayDataset:
    """MNIST handwritten digits: 60,000 train + 10,000 test 28x28 grey images, x (70000, 1, 28, 28).

    root: the data folder; torchvision keeps the files in `<root>/MNIST/raw/`.
    download: fetch the files (about 12 MB) when they are missing; needs internet access once.
    """
    return _load(MNIST, root, download, class_names=[str(d) for d in range(10)])


def fashion_mnist(root: str = "data", download: bool = True) -> ArrayDataset:
    """Zalando's Fashion-MNIST: 60,000 + 10,000 28x28 grey images of 10 kinds of clothing, x (70000, 1, 28, 28).

    A drop-in replacement for MNIST (same sizes and file format) that is harder to classify.
    root: the data folder; torchvision keeps the files in `<root>/FashionMNIST/raw/`.
    download: fetch the files (about 31 MB) when they are missing; needs internet access once.
    """
    return _load(FASHION_MNIST, root, download)


def cifar10(root: str = "data", download: bool = True) -> ArrayDataset:
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images of 10 classes, x (60000, 3, 32, 32).

    root: the data folder; torchvision keeps the files in `<root>/cifar-10-batches-py/` and checks
        each against its published MD5 checksum.
    download: fetch the archive (about 170 MB) when the files are missing; needs internet access once.
    """
    return _load(CIFAR10, root, download)


def _load(layout: _Layout, root: str, download: bool, class_names: list[str] | None = None) -> ArrayDataset:
    import torchvision.datasets

    cls = getattr(torchvision.datasets, layout.cls)
    try:
        # The first call downloads everything (train and test files) when asked.
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=False)
    except _LOAD_ERRORS as e:
        raise UserError(_not_loaded_message(layout, root, download, e)) from None
    images = [_channels_first(train.data), _channels_first(test.data)]
    x = np.empty((sum(len(i) for i in images), *images[0].shape[1:]), dtype=np.float32)  # one allocation
    x[: len(images[0])] = images[0]
    x[len(images[0]) :] = images[1]
    x /= 255.0
    y = np.concatenate([np.asarray(train.targets), np.asarray(test.targets)])
    test_mask = np.arange(len(y)) >= len(images[0])
    return ArrayDataset(x, y, "classification", class_names or list(train.classes), test_mask=test_mask)


def _channels_first(data) -> np.ndarray:
    """torchvision's uint8 images, (N, H, W) tensor (MNIST) or (N, H, W, C) array (CIFAR), as (N, C, H, W)."""
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    return data[:, None] if data.ndim == 3 else data.transpose(0, 3, 1, 2)


def _not_loaded_message(layout: _Layout, root: str, download: bool, error: BaseException) -> str:
    folder = Path(root).resolve() / layout.folder
    missing = [f for f in layout.files if not (folder / f).is_file()]
    reason = " ".join(str(error).split()) or type(error).__name__  # one line, whatever torchvision wrote
    put = f"put its files in {folder}/ yourself: {', '.join(layout.files)} ({layout.offline})"
    if not missing:
        what = f"{layout.name}'s files are all in {folder}, but torchvision could not load them ({reason})."
        fix = (
            "They may be damaged or not the originals: delete them and run with data.dataset.download=true "
            f"(needs internet access), or {put}."
        )
    elif download:
        what = f"{layout.name} could not be downloaded into {folder} ({reason})."
        fix = f"data.dataset.download=true needs internet access; without it, {put}."
    else:
        where = "is not in" if len(missing) == len(layout.files) else f"is incomplete (missing {', '.join(missing)}) in"
        what = f"{layout.name} {where} {folder} and data.dataset.download=false."
        fix = f"Set data.dataset.download=true to fetch it (about {layout.size}; needs internet access), or {put}."
    elsewhere = "To keep datasets elsewhere, set data.dataset.root or paths.data_dir (it follows NNLAB_ROOT)."
    return f"{what} {fix} {elsewhere}"
