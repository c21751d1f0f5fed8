"""Tiny stand-ins for the data files a test machine does not have, in the exact formats the real
ones come in, so tests run every data config offline through the same code as a user's run.

`offline_data(name, root, monkeypatch)` writes what data config `name` needs under `root` and
returns the overrides that point the config at it; a config that builds from nothing needs none.
A new data config that reads files fails the smoke tests until it gets an entry here.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets


def offline_data(name: str, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Write the stand-in files of data config `name` under `root`; return its overrides."""
    root.mkdir(parents=True, exist_ok=True)
    if name in ("mnist", "fashion_mnist"):
        write_mnist_like(root, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name])
        return [f"data.dataset.root={root}", "data.dataset.download=false"]
    if name == "cifar10":
        write_cifar10(root)
        accept_checksums_of(monkeypatch, root)
        return [f"data.dataset.root={root}", "data.dataset.download=false"]
    if name == "csv":
        return [f"data.dataset.path={write_csv(root / 'data.csv')}", "data.dataset.target=label"]
    if name == "mnist1d":  # generated offline; cached in root rather than in the checkout's data/
        return [f"data.dataset.root={root}"]
    if name == "text":  # a text of its own: English prose, ~45,000 characters
        path = root / "book.txt"
        path.write_text(english_text(), encoding="utf-8")
        return [f"data.dataset.path='{path}'"]
    if name == "text_csv":
        return [f"data.dataset.path='{write_text_csv(root / 'texts.csv')}'"]
    return []


def english_text() -> str:
    """English prose (with some code) as a text file would hold it: a topic of Python's documentation."""
    from pydoc_data.topics import topics

    return topics["compound"]


def write_text_csv(path: Path, rows_per_class: int = 60) -> Path:
    """A labelled text CSV (header text,label): 8-word snippets of two documentation topics, labelled by topic."""
    import csv
    from pydoc_data.topics import topics

    rows = []
    for label, key in (("statements", "compound"), ("methods", "customization")):
        words = topics[key].split()
        rows += [(" ".join(words[i : i + 8]), label) for i in range(0, rows_per_class * 8, 8)]
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("text", "label"), *rows])
    return path


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, type 0x08 = ubyte, ndim), big-endian int32 sizes, data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(root: Path, folder: str, n_train: int = 60, n_test: int = 10, seed: int = 0) -> dict:
    """The four unpacked IDX files of MNIST (or FashionMNIST) in <root>/<folder>/raw/; returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10  # every class in each part
        write_idx(root / folder / "raw" / f"{split}-images-idx3-ubyte", images)
        write_idx(root / folder / "raw" / f"{split}-labels-idx1-ubyte", labels)
        arrays[split] = (images, labels)
    return arrays


CIFAR_NAMES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar10(root: Path, per_batch: int = 12, n_test: int = 10, seed: int = 0) -> dict:
    """cifar-10-batches-py/ as the python version of CIFAR-10 has it: five pickled training batches and
    a test batch, each {"data": uint8 (n, 3072) with the R, G, B planes of a 32x32 image in turn,
    "labels": [...]}, and batches.meta with the class names. Returns the images as (n, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    arrays = {}
    for k, (name, n) in enumerate([*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", n_test)]):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = [(k * per_batch + i) % 10 for i in range(n)]  # the defaults give 6 training images a class
        with open(folder / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": images.reshape(n, 3072), "labels": labels}, f)
        arrays[name] = (images, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return arrays


def accept_checksums_of(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """CIFAR10 checks each file against the MD5 of the published one, which no stand-in can match.
    Replace the expected sums by those of the files written here, so the same check still runs
    (and still fails for a missing or altered file) on the same code path as the real data."""
    cls = torchvision.datasets.CIFAR10
    folder = root / cls.base_folder

    def md5(name: str) -> str:
        return hashlib.md5((folder / name).read_bytes()).hexdigest()

    monkeypatch.setattr(cls, "train_list", [[name, md5(name)] for name, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[name, md5(name)] for name, _ in cls.test_list])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(cls.meta["filename"])})


def write_csv(path: Path, n: int = 120, seed: int = 0) -> Path:
    """Two numeric features, one text feature (one-hot encoded: 3 columns) and a text label pos/neg."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    colour = rng.choice(["red", "green", "blue"], n)
    label = np.where(a + b > 0, "pos", "neg")
    lines = ["a,b,colour,label"] + [f"{a[i]:.3f},{b[i]:.3f},{colour[i]},{label[i]}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path
