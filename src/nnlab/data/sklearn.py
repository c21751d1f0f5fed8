"""scikit-learn's bundled real datasets: shipped with the package, so nothing is downloaded.

scikit-learn is imported inside each function: it costs about a second of start-up. The digits
of the default experiment are read straight from the file scikit-learn ships them in (its own
`load_digits` reads the same file the same way), so that run does not wait for that import.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from nnlab.data.arrays import ArrayDataset


def digits() -> ArrayDataset:
    """1797 handwritten digits as 8x8 grey images, 10 classes. Shape (N, 1, 8, 8).

    The 17 grey levels (0-16) are scaled to [0, 1], like the pixels of the torchvision sets."""
    shipped = bundled_file("digits.csv.gz")
    if shipped is not None:  # 1797 rows: 64 pixels, then the label
        table = np.loadtxt(shipped, delimiter=",")
        images, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        images, target = d.images, d.target
    return ArrayDataset(images[:, None] / 16.0, target, "classification", [str(c) for c in range(10)])


def bundled_file(name: str) -> Path | None:
    """scikit-learn's copy of a bundled dataset file (sklearn/datasets/data/<name>), found without
    importing scikit-learn; None if this scikit-learn keeps it elsewhere."""
    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / name
        if path.is_file():
            return path
    return None


def iris() -> ArrayDataset:
    """Fisher's 150 irises: 4 measurements, 3 species."""
    from sklearn.datasets import load_iris

    d = load_iris()
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names), feature_names=list(d.feature_names))


def wine() -> ArrayDataset:
    """178 wines: 13 chemical measurements, 3 cultivars."""
    from sklearn.datasets import load_wine

    d = load_wine()
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names), feature_names=list(d.feature_names))


def breast_cancer() -> ArrayDataset:
    """569 breast-mass biopsies: 30 features, malignant (0) or benign (1)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    names = list(d.feature_names)
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names), feature_names=names)


def diabetes() -> ArrayDataset:
    """442 diabetes patients: 10 baseline features, regression target = disease progression after a year."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return ArrayDataset(d.data, d.target, "regression", feature_names=list(d.feature_names))
