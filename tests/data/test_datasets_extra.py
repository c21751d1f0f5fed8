"""nnlab.data.{mnist1d,vision,timeseries,tabular}: MNIST-1D and its cache, MNIST/Fashion-MNIST/CIFAR-10
read from files in torchvision's own formats, the sine forecasting set, CSV files and their errors.

Nothing here touches the network: the image sets are tiny stand-ins (datafiles.py) written in the
exact on-disk formats torchvision reads, and downloads are switched off (or replaced by a failing stub).
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torchvision.datasets

from datafiles import CIFAR_NAMES, accept_checksums_of, write_cifar10, write_csv, write_mnist_like
from helpers import assert_finite_metrics
from nnlab.data import mnist1d as mnist1d_module
from nnlab.data import tabular, timeseries, vision
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.impute import Impute
from nnlab.data.mnist1d import mnist1d
from nnlab.data.split import split_indices
from nnlab.errors import ConfigValueError, UserError


# ------------------------------------------------------------------------------------ MNIST-1D
@pytest.fixture(scope="module")
def mnist1d_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the generated (and cached) default MNIST-1D."""
    root = tmp_path_factory.mktemp("data")
    mnist1d(str(root))
    return root


def test_mnist1d_is_the_benchmark_with_its_test_split(mnist1d_root: Path) -> None:
    ds = mnist1d(str(mnist1d_root))
    assert ds.x.shape == (5000, 1, 40) and ds.x.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(10))
    assert ds.kind == "classification" and ds.class_names == [str(d) for d in range(10)]
    assert ds.test_mask.sum() == 1000 and ds.test_mask[-1000:].all()  # the package's last 20%
    assert abs(ds.x.mean()) < 1e-3 and ds.x.std() == pytest.approx(1.0, abs=1e-3)  # the package centres and scales


def test_mnist1d_rows_are_the_packages_own(tmp_path: Path) -> None:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 100, 3
    expected = make_dataset(args)
    ds = mnist1d(str(tmp_path), num_samples=100, seed=3)
    assert np.allclose(ds.x[~ds.test_mask, 0], expected["x"]) and np.allclose(ds.x[ds.test_mask, 0], expected["x_test"])
    assert np.array_equal(ds.y, np.concatenate([expected["y"], expected["y_test"]]))


def test_mnist1d_second_call_reads_the_cache(mnist1d_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (cache,) = (mnist1d_root / "mnist1d").glob("*.npz")
    stamp = cache.stat().st_mtime_ns
    first = mnist1d(str(mnist1d_root))

    def fail(*args, **kwargs):
        raise AssertionError("regenerated although the cache exists")

    monkeypatch.setattr(mnist1d_module, "_generate", fail)
    again = mnist1d(str(mnist1d_root))
    assert cache.stat().st_mtime_ns == stamp
    assert np.array_equal(first.x, again.x) and np.array_equal(first.y, again.y)
    with np.load(cache, allow_pickle=False) as f:  # a plain .npz: no pickled objects inside
        assert sorted(f.files) == ["x", "x_test", "y", "y_test"]


def test_mnist1d_unreadable_cache_is_regenerated(tmp_path: Path) -> None:
    good = mnist1d(str(tmp_path), num_samples=50)
    (cache,) = (tmp_path / "mnist1d").glob("*.npz")
    cache.write_bytes(b"not an npz")
    assert np.array_equal(mnist1d(str(tmp_path), num_samples=50).x, good.x)
    assert np.load(cache)["x"].shape == (40, 40)


def test_mnist1d_leaves_the_global_generators_alone(tmp_path: Path) -> None:
    """The package reseeds NumPy's global generator; a run must not depend on whether the cache existed."""
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d(str(tmp_path), num_samples=50)
    assert np.random.rand() == expected


# ---------------------------------------------------------------- MNIST, Fashion-MNIST, CIFAR-10
@pytest.mark.parametrize(
    "load, folder, names",
    [
        (vision.mnist, "MNIST", [str(d) for d in range(10)]),
        (vision.fashion_mnist, "FashionMNIST", list(torchvision.datasets.FashionMNIST.classes)),
    ],
)
def test_mnist_family_reads_idx_files(load, folder: str, names: list[str], tmp_path: Path) -> None:
    written = write_mnist_like(tmp_path, folder, n_train=30, n_test=10)
    ds = load(root=str(tmp_path), download=False)
    assert ds.x.shape == (40, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    images = np.concatenate([written["train"][0], written["t10k"][0]])
    assert np.allclose(ds.x[:, 0], images / 255.0)
    assert np.array_equal(ds.y, np.concatenate([written["train"][1], written["t10k"][1]]))
    assert ds.test_mask.tolist() == [False] * 30 + [True] * 10
    assert ds.class_names == names


def test_cifar10_reads_python_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_cifar10(tmp_path, per_batch=4, n_test=10)
    accept_checksums_of(monkeypatch, tmp_path)
    ds = vision.cifar10(root=str(tmp_path), download=False)
    assert ds.x.shape == (30, 3, 32, 32) and ds.x.dtype == np.float32
    order = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    images = np.concatenate([written[name][0] for name in order])
    assert np.allclose(ds.x, images / 255.0)  # channels first, planes in R, G, B order
    assert ds.y.tolist() == [label for name in order for label in written[name][1]]
    assert ds.test_mask.sum() == 10 and ds.test_mask[-10:].all()
    assert ds.class_names == CIFAR_NAMES  # from batches.meta


def test_cifar10_files_that_fail_the_checksum_are_reported(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(UserError) as info:
        vision.cifar10(root=str(tmp_path), download=False)
    message = str(info.value)
    assert "files are all in" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "not the originals" in message


@pytest.mark.parametrize(
    "load, folder, first_file",
    [
        (vision.mnist, "MNIST/raw", "train-images-idx3-ubyte"),
        (vision.fashion_mnist, "FashionMNIST/raw", "train-images-idx3-ubyte"),
        (vision.cifar10, "cifar-10-batches-py", "data_batch_1"),
    ],
)
def test_missing_files_name_the_folder_and_the_files(load, folder: str, first_file: str, tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load(root=str(tmp_path), download=False)
    message = str(info.value)
    assert str(tmp_path / folder) in message and first_file in message
    assert "download=false" in message and "data.dataset.download=true" in message and "internet" in message
    assert "\n" not in message  # one paragraph


def test_failed_download_says_it_needs_internet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self) -> None:  # what MNIST.download raises once every mirror failed
        raise RuntimeError(f"Error downloading train-images-idx3-ubyte.gz:\nTried x, got:\n{URLError('no network')}")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    with pytest.raises(UserError, match="could not be downloaded") as info:
        vision.mnist(root=str(tmp_path), download=True)
    message = str(info.value)
    assert "needs internet access" in message and "no network" in message
    assert str(tmp_path / "MNIST" / "raw") in message and "t10k-labels-idx1-ubyte" in message


def test_missing_mnist_on_the_command_line(run_cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(["data=mnist", f"data.dataset.root={empty}", "data.dataset.download=false"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert str(empty / "MNIST" / "raw") in line and "train-labels-idx1-ubyte" in line


# ------------------------------------------------------------------------------------------ sine
def test_sine_shapes_and_seeding() -> None:
    ds = timeseries.sine(n_series=200, window=24, horizon=6, seed=1)
    assert ds.kind == "regression" and ds.x.shape == (200, 1, 24) and ds.y.shape == (200, 6)
    assert ds.x.dtype == ds.y.dtype == np.float32 and ds.num_classes is None and ds.test_mask is None
    assert np.array_equal(ds.x, timeseries.sine(n_series=200, window=24, horizon=6, seed=1).x)
    assert not np.array_equal(ds.x, timeseries.sine(n_series=200, window=24, horizon=6, seed=2).x)


def test_sine_rows_are_noisy_sums_of_sines() -> None:
    clean = timeseries.sine(n_series=500, n_components=1, noise=0.0, seed=0)
    series = np.concatenate([clean.x[:, 0], clean.y], axis=1)
    assert np.abs(series).max() <= 1.5 + 1e-5  # one sine of amplitude <= 1.5
    noisy = timeseries.sine(n_series=500, n_components=1, noise=0.3, seed=0)
    residual = np.concatenate([noisy.x[:, 0], noisy.y], axis=1) - series
    assert residual.std() == pytest.approx(0.3, rel=0.05)


def test_naive_last_value_mse() -> None:
    from nnlab.data.arrays import ArrayDataset

    x = np.array([[[0.0, 1.0]], [[5.0, 2.0]]])  # last values 1 and 2
    y = np.array([[1.0, 3.0], [2.0, 2.0]])  # errors (0, 2) and (0, 0)
    ds = ArrayDataset(x, y, "regression")
    assert timeseries.naive_last_value_mse(ds) == pytest.approx(1.0)
    assert timeseries.naive_last_value_mse(ds, rows=np.array([1])) == 0.0


def test_sine_is_predictable_beyond_the_naive_forecast() -> None:
    """A least-squares linear forecaster fitted on the training rows beats repeating the last value
    on the test rows by a wide margin: the windows carry the information the task asks for."""
    ds = timeseries.sine(n_series=3000, seed=0)
    train, _, test = split_indices(ds.y, 0.0, 0.2, stratify=False, seed=0)
    design = np.c_[ds.x[:, 0], np.ones(len(ds.x))]
    weights = np.linalg.lstsq(design[train], ds.y[train], rcond=None)[0]
    linear = float(np.mean((design[test] @ weights - ds.y[test]) ** 2))
    naive = timeseries.naive_last_value_mse(ds, rows=test)
    assert linear < 0.5 * naive, (linear, naive)
    assert linear > 0.1**2  # the noise floor


def test_sine_bad_periods_name_the_keys() -> None:
    with pytest.raises(ConfigValueError, match="data.dataset.max_period"):
        timeseries.sine(min_period=20.0, max_period=10.0)
    with pytest.raises(ConfigValueError, match="data.dataset.min_period"):
        timeseries.sine(min_period=1.0)


# ------------------------------------------------------------------------------------------- CSV
def write(tmp_path: Path, text: str, name: str = "data.csv") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


FLOWERS = """\
height,colour,width,species
1.0,red,10,a
2.0,blue,20,b
,red,30,a
4.0,,40,c
5.0,red,NA,b
"""


def test_csv_numeric_and_one_hot_features_keep_their_gaps(tmp_path: Path) -> None:
    ds = tabular.csv(write(tmp_path, FLOWERS), target="species")
    assert ds.kind == "classification" and ds.class_names == ["a", "b", "c"]
    assert ds.y.tolist() == [0, 1, 0, 2, 1]
    # height, colour=blue, colour=red, width: a blank or NA number stays NaN (the DataModule fills it
    # with train-split statistics), a blank category is all zeros in its one-hot columns
    assert ds.x.dtype == np.float32 and ds.x.shape == (5, 4)
    assert ds.feature_names == ["height", "colour=blue", "colour=red", "width"]
    np.testing.assert_array_equal(ds.x[:, 0], [1.0, 2.0, np.nan, 4.0, 5.0])
    assert ds.x[:, 1:3].tolist() == [[0, 1], [1, 0], [0, 1], [0, 0], [0, 1]]
    np.testing.assert_array_equal(ds.x[:, 3], [10.0, 20.0, 30.0, 40.0, np.nan])


@pytest.mark.parametrize(
    "strategy, height, width, rows",
    [
        ("mean", 3.0, 25.0, 5),
        ("median", 3.0, 25.0, 5),
        ("most_frequent", 1.0, 10.0, 5),  # every value once: ties go to the smallest
        # a missing category is no gap: the row with no colour stays; val/test gaps get the kept rows' means
        ("drop", 7 / 3, 70 / 3, 3),
    ],
)
def test_csv_gaps_are_filled_by_the_impute_edit(strategy: str, height, width, rows: int, tmp_path: Path) -> None:
    """What the loader's `impute` option did, the impute edit does (here fitted on every row)."""
    ds = tabular.csv(write(tmp_path, FLOWERS), target="species")
    imputer = Impute(strategy)
    x, y = imputer.fit(ds.x, ds.y)
    assert len(x) == len(y) == rows
    assert imputer.values[[0, 3]].tolist() == pytest.approx([height, width])
    if strategy == "drop":
        assert x[:, 0].tolist() == [1.0, 2.0, 4.0] and y.tolist() == [0, 1, 2]
    else:
        filled = imputer(ds.x)
        assert (filled[2, 0], filled[4, 3]) == (height, width) and not np.isnan(filled).any()


def test_csv_minmax_scales_numeric_features_to_the_unit_interval(tmp_path: Path) -> None:
    """Min-max scaling moved from the loader to `data.normalize=minmax`, fitted on the train split."""
    text = "height,colour,species\n" + "".join(
        f"{i * 0.5},{'red' if i % 3 else 'blue'},{'ab'[i % 2]}\n" for i in range(40)
    )
    ds = tabular.csv(write(tmp_path, text), target="species")
    data = DataModule(ds, normalize="minmax", seed=0)
    train = data._arrays["train"][0]
    assert train.min(0).tolist() == [0.0, 0.0, 0.0] and train.max(0).tolist() == [1.0, 1.0, 1.0]
    heights = ds.x[split_indices(ds.y, 0.1, 0.2, True, 0)[0], 0]  # the train rows' raw heights
    assert (data.x_scale[0][0], data.x_scale[1][0]) == (heights.min(), heights.max() - heights.min())


def test_csv_target_kind_auto(tmp_path: Path) -> None:
    floats = "x,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(30))
    ints_few = "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(30))
    ints_many = "x,y\n" + "".join(f"{i},{i}\n" for i in range(30))
    assert tabular.csv(write(tmp_path, floats), target="y").kind == "regression"
    few = tabular.csv(write(tmp_path, ints_few), target="y")
    assert few.kind == "classification" and few.class_names == ["0", "1", "2"]
    assert tabular.csv(write(tmp_path, ints_many), target="y").kind == "regression"
    forced = tabular.csv(write(tmp_path, ints_many), target="y", kind="classification")
    assert forced.num_classes == 30 and forced.class_names[:3] == ["0", "1", "2"]  # sorted as numbers


def test_csv_rows_without_a_target_are_dropped(tmp_path: Path) -> None:
    ds = tabular.csv(write(tmp_path, "x,y\n1,2.5\n2,\n3,4.5\n"), target="y")
    assert ds.kind == "regression" and ds.y.tolist() == [2.5, 4.5] and ds.x[:, 0].tolist() == [1.0, 3.0]


def test_csv_options_categorical_drop_delimiter(tmp_path: Path) -> None:
    text = "id;zip;size;label\n1;100;2.5;yes\n2;200;3.5;no\n3;100;1.5;yes\n"
    ds = tabular.csv(write(tmp_path, text), target="label", delimiter=";", categorical=["zip"], drop=["id"])
    assert ds.x.tolist() == [[1, 0, 2.5], [0, 1, 3.5], [1, 0, 1.5]]  # zip=100, zip=200, size
    assert ds.class_names == ["no", "yes"] and ds.y.tolist() == [1, 0, 1]
    tabbed = tabular.csv(write(tmp_path, text.replace(";", "\t"), "t.tsv"), target="label", delimiter="tab")
    assert tabbed.x.shape == (3, 3)


def test_csv_quoted_fields_and_blank_lines(tmp_path: Path) -> None:
    ds = tabular.csv(write(tmp_path, 'name,x,y\n"Smith, J",1,a\n\n"Doe, A",2,b\n'), target="y")
    assert ds.x.tolist() == [[0, 1, 1], [1, 0, 2]]  # name=Doe, A; name=Smith, J; x
    assert ds.class_names == ["a", "b"]


@pytest.mark.parametrize(
    "text, kwargs, expected",
    [
        # a missing target column: the columns, and the closest one
        (
            FLOWERS,
            {"target": "specis"},
            ["no column 'specis'", "Did you mean 'species'?", "height, colour, width, species"],
        ),
        (FLOWERS, {"target": None}, ["data.dataset.target", "height, colour, width, species"]),
        # text in a numeric column: the line (header = line 1), the column and the value
        (
            "a,b,y\n1,2,0\n3,4,1\n5,oops,0\n7,8,1\n",
            {"target": "y"},
            ["line 4", "column 'b'", "'oops'", "data.dataset.categorical"],
        ),
        ("", {"target": "y"}, ["is empty", "header line"]),
        ("a,b,y\n", {"target": "y"}, ["no data rows"]),
        # a row with the wrong number of fields
        ("a,b,y\n1,2,0\n3,4,5,1\n", {"target": "y"}, ["line 3", "4 fields", "3 columns (a, b, y)"]),
        ("a,b,y\n1,2,0\n3,4\n", {"target": "y"}, ["line 3", "2 fields"]),
        ("a,a,y\n1,2,0\n", {"target": "y"}, ["'a' twice"]),
        ("a,,y\n1,2,0\n", {"target": "y"}, ["column 2 of the header has no name"]),
        ("1,2,3\n4,5,6\n", {"target": "y"}, ["no column 'y'", "looks like data"]),
        ("a,y\n1,x\n2,3.5\n", {"target": "y", "kind": "regression"}, ["line 2", "'x'", "kind=classification"]),
        ("a,y\n1,1.5\n2,2.5\n3,x\n4,3.5\n", {"target": "y"}, ["line 4", "target column 'y'", "'x'"]),
        ("a,y\n1,s\n2,s\n", {"target": "y"}, ["single value 's'"]),
        ("a,y\n1,s\n", {"target": "y", "drop": ["b"]}, ["data.dataset.drop", "'b'"]),
        ("a,y\n1,s\n", {"target": "y", "drop": ["a"]}, ["no feature columns"]),
        ("a,y\n,s\n,t\n", {"target": "y"}, ["every feature column is empty"]),
    ],
)
def test_csv_errors_name_the_place_and_the_fix(text: str, kwargs: dict, expected: list[str], tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        tabular.csv(write(tmp_path, text), **kwargs)
    message = str(info.value)
    for part in expected:
        assert part in message, message
    assert "\n" not in message


def test_csv_missing_file_and_bad_options(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist") as info:
        tabular.csv(str(tmp_path / "nope.csv"), target="y")
    assert str(tmp_path / "nope.csv") in str(info.value)
    with pytest.raises(UserError, match="data.dataset.path=<file.csv>"):
        tabular.csv(None, target="y")
    path = write(tmp_path, FLOWERS)
    with pytest.raises(ConfigValueError, match="data.dataset.kind='regresion'.*Did you mean 'regression'"):
        tabular.csv(path, target="species", kind="regresion")
    with pytest.raises(ConfigValueError, match="data.dataset.delimiter=';;' must be one character"):
        tabular.csv(path, target="species", delimiter=";;")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("a,y\n1,caf\xe9\n2,th\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        tabular.csv(str(latin1), target="y")


# --------------------------------------------------------------------------- end-to-end runs
def test_train_on_a_csv_file(train_run, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "data.csv")
    run = train_run(["data=csv", f"data.dataset.path={path}", "data.dataset.target=label"], tmp_path / "run")
    assert_finite_metrics(run.metrics, "classification")
    weights = [v for k, v in run.checkpoint()["model"].items() if k.endswith("weight") and v.ndim == 2]
    assert weights[0].shape[1] == 5 and weights[-1].shape[0] == 2  # a, b, 3 colours -> neg, pos


def test_train_on_sine(train_run, tmp_path: Path) -> None:
    run = train_run(["data=sine", "model=mlp", "data.dataset.n_series=300"], tmp_path)
    assert_finite_metrics(run.metrics, "regression")
    weights = [v for k, v in run.checkpoint()["model"].items() if k.endswith("weight") and v.ndim == 2]
    assert weights[0].shape[1] == 32 and weights[-1].shape[0] == 8  # window in, horizon out


def test_train_on_mnist1d(train_run, mnist1d_root: Path, tmp_path: Path) -> None:
    run = train_run(["data=mnist1d", "model=mlp", f"data.dataset.root={mnist1d_root}"], tmp_path)
    assert_finite_metrics(run.metrics, "classification")
    assert len(list((mnist1d_root / "mnist1d").glob("*.npz"))) == 1  # the cached set was used
