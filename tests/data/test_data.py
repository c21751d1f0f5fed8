"""nnlab.data: seeded stratified splits, train-only standardization, the two batching paths."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from nnlab.data import sklearn, synthetic
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.order import FixedOrder
from nnlab.data.split import split_indices
from nnlab.errors import ConfigValueError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return sklearn.digits()


def collect(batches) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat(ys)


# -------------------------------------------------------------------------------------- digits


def test_digits_read_from_the_shipped_file_equal_scikit_learns_loader(digits, monkeypatch) -> None:
    from sklearn.datasets import load_digits

    reference = load_digits()
    assert digits.x.shape == (1797, 1, 8, 8) and digits.class_names == [str(c) for c in range(10)]
    assert np.array_equal(digits.x, (reference.images[:, None] / 16.0).astype(np.float32))
    assert np.array_equal(digits.y, reference.target)

    monkeypatch.setattr(sklearn, "bundled_file", lambda name: None)  # a scikit-learn that moved the file
    fallback = sklearn.digits()
    assert np.array_equal(fallback.x, digits.x) and np.array_equal(fallback.y, digits.y)


def test_loading_digits_does_not_import_scikit_learn() -> None:
    code = "import sys; from nnlab.data import sklearn; sklearn.digits(); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---------------------------------------------------------------------------------------- split
def test_split_is_disjoint_and_covers_every_row(digits) -> None:
    train, val, test = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=0)
    assert len(np.intersect1d(train, val)) == len(np.intersect1d(train, test)) == len(np.intersect1d(val, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), np.arange(len(digits.y)))


def test_split_is_stratified(digits) -> None:
    """Each class is split on its own: every split holds round(fraction x class size) of each class."""
    train, val, test = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=0)
    for c in np.unique(digits.y):
        n = int((digits.y == c).sum())
        assert (digits.y[test] == c).sum() == round(0.2 * n)
        assert (digits.y[val] == c).sum() == round(0.1 * n)
        assert (digits.y[train] == c).sum() == n - round(0.2 * n) - round(0.1 * n)


def test_unstratified_split_sizes() -> None:
    y = np.zeros(1000)
    train, val, test = split_indices(y, 0.15, 0.25, stratify=False, seed=0)
    assert (len(train), len(val), len(test)) == (600, 150, 250)


def test_split_is_seeded(digits) -> None:
    first = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=7)
    again = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=7)
    other = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[2], other[2])


def test_datamodule_split_sizes(digits) -> None:
    data = DataModule(digits, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert (data.size("train"), data.size("val"), data.size("test")) == (1259, 179, 359)
    assert data.size("train") + data.size("val") + data.size("test") == len(digits.y)
    assert data.input_shape == (1, 8, 8) and data.num_outputs == 10 and data.kind == "classification"


# ------------------------------------------------------------------------------ standardization
def test_standardization_uses_train_statistics_only(digits) -> None:
    seed = 3
    data = DataModule(digits, edits=[FixedOrder()], seed=seed)
    data.setup(CPU)
    train_x, _ = collect(data.train_batches(0))
    val_x, _ = collect(data.eval_batches("val"))

    # Recompute from the raw rows: mean/std of the training rows only, applied to every split.
    train_idx, val_idx, _ = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=seed)
    raw_train, raw_val = digits.x[train_idx], digits.x[val_idx]
    mean, std = raw_train.mean(0), raw_train.std(0)
    std[std < 1e-8] = 1.0  # constant pixels (digits has some) are only centred
    assert torch.allclose(val_x, torch.from_numpy((raw_val - mean) / std), atol=1e-5)

    per_feature_mean = train_x.flatten(1).mean(0)
    per_feature_std = train_x.flatten(1).std(0, unbiased=False)
    constant = torch.from_numpy(raw_train.reshape(len(raw_train), -1).std(0) < 1e-8)
    assert constant.any() and not constant.all()
    assert torch.allclose(per_feature_mean, torch.zeros(64), atol=1e-5)
    assert torch.allclose(per_feature_std[~constant], torch.ones(int((~constant).sum())), atol=1e-4)
    assert torch.all(per_feature_std[constant] == 0)
    # Validation rows were not used: their means are off zero.
    assert val_x.flatten(1).mean(0).abs().max() > 0.05


def test_normalize_none_keeps_raw_values(digits) -> None:
    data = DataModule(digits, normalize="none", edits=[FixedOrder()], seed=0)
    data.setup(CPU)
    train_x, _ = collect(data.train_batches(0))
    train_idx, _, _ = split_indices(digits.y, 0.1, 0.2, stratify=True, seed=0)
    assert torch.equal(train_x, torch.from_numpy(digits.x[train_idx]))


def test_regression_target_is_standardized_with_train_statistics() -> None:
    data = DataModule(sklearn.diabetes(), stratify=False, edits=[FixedOrder()], standardize_target=True, seed=0)
    data.setup(CPU)
    _, train_y = collect(data.train_batches(0))
    assert abs(train_y.mean().item()) < 1e-5
    assert train_y.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert data.num_outputs == 1


def test_regression_target_kept_raw_when_asked() -> None:
    diabetes = sklearn.diabetes()
    data = DataModule(diabetes, stratify=False, edits=[FixedOrder()], standardize_target=False, seed=0)
    data.setup(CPU)
    _, train_y = collect(data.train_batches(0))
    train_idx, _, _ = split_indices(diabetes.y, 0.1, 0.2, stratify=False, seed=0)
    assert torch.equal(train_y, torch.from_numpy(diabetes.y[train_idx]))
    assert data.kind == "regression" and data.num_outputs == 1


# ------------------------------------------------------------------------------------- batching
def test_in_memory_and_dataloader_give_identical_batches(digits) -> None:
    in_memory = DataModule(digits, batch_size=64, in_memory=True, seed=5)
    loader = DataModule(digits, batch_size=64, in_memory=False, seed=5)
    assert (in_memory.in_memory, loader.in_memory) == (True, False)
    in_memory.setup(CPU)
    loader.setup(CPU)
    for epoch in (0, 1):
        a, b = list(in_memory.train_batches(epoch)), list(loader.train_batches(epoch))
        assert len(a) == len(b) == in_memory.steps_per_epoch == 20
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for split in ("val", "test"):
        a, b = collect(in_memory.eval_batches(split)), collect(loader.eval_batches(split))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_an_epoch_visits_every_training_row_once_in_epoch_order(digits) -> None:
    data = DataModule(digits, batch_size=100, seed=1)
    data.setup(CPU)
    ordered = DataModule(digits, batch_size=100, edits=[FixedOrder()], seed=1)
    ordered.setup(CPU)
    train_x, _ = collect(ordered.train_batches(0))  # the rows in split order
    for epoch in (0, 1):
        order = data.epoch_order(epoch)
        assert torch.equal(torch.sort(order).values, torch.arange(data.size("train")))
        x, _ = collect(data.train_batches(epoch))
        assert torch.equal(x, train_x[order])


def test_epoch_orders_differ_between_epochs_and_replay(digits) -> None:
    data = DataModule(digits, seed=1)
    again = DataModule(digits, seed=1)
    other_seed = DataModule(digits, seed=2)
    assert not torch.equal(data.epoch_order(0), data.epoch_order(1))
    assert torch.equal(data.epoch_order(1), again.epoch_order(1))
    assert torch.equal(data.epoch_order(3), data.epoch_order(3))
    assert not torch.equal(data.epoch_order(0), other_seed.epoch_order(0))
    assert torch.equal(DataModule(digits, edits=[FixedOrder()]).epoch_order(4), torch.arange(data.size("train")))


@pytest.mark.parametrize("drop_last, steps, last_size", [(False, 20, 1259 - 19 * 64), (True, 19, 64)])
def test_drop_last(digits, drop_last: bool, steps: int, last_size: int) -> None:
    for in_memory in (True, False):
        data = DataModule(digits, batch_size=64, drop_last=drop_last, in_memory=in_memory)
        data.setup(CPU)
        batches = list(data.train_batches(0))
        assert data.steps_per_epoch == len(batches) == steps
        assert len(batches[-1][0]) == last_size


# --------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"batch_size": 0}, "data.batch_size"),
        ({"val_fraction": 1.0}, "data.val_fraction"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "data.val_fraction + data.test_fraction"),
        ({"num_workers": -1}, "data.num_workers"),
    ],
)
def test_bad_settings_name_the_key(digits, kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key.replace("+", r"\+")):
        DataModule(digits, **kwargs)


def test_bad_in_memory_names_the_key(digits) -> None:
    with pytest.raises(ConfigValueError, match="data.in_memory"):
        DataModule(digits, in_memory="maybe")


# ----------------------------------------------------------------------------- the datasets
@pytest.mark.parametrize(
    "make, n, shape, classes",
    [
        (sklearn.digits, 1797, (1, 8, 8), 10),
        (sklearn.iris, 150, (4,), 3),
        (sklearn.wine, 178, (13,), 3),
        (sklearn.breast_cancer, 569, (30,), 2),
        (synthetic.moons, 1000, (2,), 2),
        (synthetic.circles, 1000, (2,), 2),
        (synthetic.spirals, 1000, (2,), 2),
    ],
)
def test_classification_datasets(make, n: int, shape: tuple, classes: int) -> None:
    ds = make()
    assert ds.kind == "classification"
    assert ds.x.shape == (n, *shape) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(classes))
    assert ds.num_classes == len(ds.class_names) == classes


def test_regression_dataset() -> None:
    ds = sklearn.diabetes()
    assert ds.kind == "regression" and ds.x.shape == (442, 10) and ds.y.dtype == np.float32
    assert ds.num_classes is None


@pytest.mark.parametrize("make", [synthetic.moons, synthetic.circles, synthetic.spirals])
def test_synthetic_sets_are_seeded(make) -> None:
    assert np.array_equal(make(seed=4).x, make(seed=4).x)
    assert not np.array_equal(make(seed=4).x, make(seed=5).x)


def test_spirals_arms_are_balanced_within_the_documented_radius() -> None:
    ds = synthetic.spirals(n_samples=1000, num_classes=4, noise=0.0, seed=0)
    assert np.bincount(ds.y).tolist() == [250] * 4
    radius = np.linalg.norm(ds.x, axis=1)
    assert radius.min() >= 0.1 - 1e-6 and radius.max() <= 1.0 + 1e-6  # documented radius range


def test_official_test_split_is_kept() -> None:
    """A dataset's own test rows (test_mask) are the test split; val comes from the others."""
    from nnlab.data.arrays import ArrayDataset

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = np.arange(200) % 4
    mask = np.zeros(200, dtype=bool)
    mask[150:] = True
    data = DataModule(ArrayDataset(x, y, "classification", test_mask=mask), val_fraction=0.2, normalize="none")
    assert data.size("test") == 50
    assert data.size("val") == 30 and data.size("train") == 120
    data.setup(CPU)
    test_x, _ = collect(data.eval_batches("test"))
    assert torch.equal(test_x, torch.from_numpy(x[150:]))


def test_tabular_datasets_carry_their_feature_names(tmp_path) -> None:
    from nnlab.data.tabular import csv as csv_dataset

    assert sklearn.iris().feature_names == [
        "sepal length (cm)",
        "sepal width (cm)",
        "petal length (cm)",
        "petal width (cm)",
    ]
    data = DataModule(sklearn.wine(), batch_size=16)
    assert data.feature_names[:2] == ["alcohol", "malic_acid"] and len(data.feature_names) == data.input_shape[0]
    assert sklearn.digits().feature_names is None  # images: no per-column names
    (tmp_path / "t.csv").write_text("height,colour,y\n1.5,red,0\n1.7,blue,1\n1.6,red,0\n1.8,blue,1\n")
    table = csv_dataset(str(tmp_path / "t.csv"), target="y")  # "colour" one-hot: colour=blue, colour=red
    assert len(table.feature_names) == table.x.shape[1] and table.feature_names[0] == "height"
