"""scikit-learn's bundled real datasets: shipped with the package, so nothing is downloaded.

scikit-learn is imported inside each function: it costs about a second of start-up.
"""

from __future__ import annotations

from nnlab.data.arrays import ArrayDataset


def digits() -> ArrayDataset:
    """1797 handwritten digits as 8x8 grey images, 10 classes. Shape (N, 1, 8, 8).

    The 17 grey levels (0-16) are scaled to [0, 1], like the pixels of the torchvision sets."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return ArrayDataset(d.images[:, None] / 16.0, d.target, "classification", [str(c) for c in d.target_names])


def iris() -> ArrayDataset:
    """Fisher's 150 irises: 4 measurements, 3 species."""
    from sklearn.datasets import load_iris

    d = load_iris()
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names))


def wine() -> ArrayDataset:
    """178 wines: 13 chemical measurements, 3 cultivars."""
    from sklearn.datasets import load_wine

    d = load_wine()
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names))


def breast_cancer() -> ArrayDataset:
    """569 breast-mass biopsies: 30 features, malignant (0) or benign (1)."""
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    return ArrayDataset(d.data, d.target, "classification", list(d.target_names))


def diabetes() -> ArrayDataset:
    """442 diabetes patients: 10 baseline features, regression target = disease progression after a year."""
    from sklearn.datasets import load_diabetes

    d = load_diabetes()
    return ArrayDataset(d.data, d.target, "regression")
