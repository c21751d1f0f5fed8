"""Row edits (`nnlab.data.edits`, the `data_edit` config group): they compose in the listed order,
the list must follow the DataModule's stages, gaps are filled (and inputs scaled) with statistics
of the training rows only, the old data keys are refused with their new spelling, and every
configs/data_edit/ file names a row edit by its own name.

DataModule-level, except one tiny CLI run of a combination and the old keys' messages (each a
subprocess that stops before anything is built, well under a second).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict

from helpers import CONFIG_DIR, TINY, assert_finite_metrics, compose_config, options, run_cli
from nnlab.checks.validation import validate_config
from nnlab.cli.app import user_error_message
from nnlab.cli.overrides import explain
from nnlab.data import sklearn, tabular
from nnlab.data.arrays import ArrayDataset
from nnlab.data.datamodule import DataModule
from nnlab.data.edits import STAGES, Rows
from nnlab.data.edits.classes import KeepClasses
from nnlab.data.edits.few_labels import FewLabels
from nnlab.data.edits.imbalance import Imbalance
from nnlab.data.edits.impute import Impute
from nnlab.data.edits.missing import MissingValues, mask_values
from nnlab.data.edits.order import BalancedSampling, FixedOrder
from nnlab.data.edits.renamed import RENAMED
from nnlab.data.split import split_indices
from nnlab.errors import ConfigValueError
from nnlab.runs.build import build_data, row_edits

SPLITS = ("train", "val", "test")


@pytest.fixture(scope="module")
def wine() -> ArrayDataset:
    return sklearn.wine()


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return sklearn.digits()


def default_split(y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row indices of the DataModule's default split (val 0.1, test 0.2, stratified)."""
    return split_indices(y, 0.1, 0.2, True, seed)


# --- edits in combination ----------------------------------------------------------------------


def test_missing_imbalance_impute_and_balanced_sampling_compose(wine) -> None:
    edits = [MissingValues(0.2), Imbalance(0.3), Impute(indicator=True), BalancedSampling()]
    combo = DataModule(wine, edits=edits, seed=0)
    alone = DataModule(wine, edits=[Imbalance(0.3)], seed=0)
    plain = DataModule(wine, seed=0)

    # The same training rows as the imbalance alone: blanking values does not change which rows.
    assert combo.class_counts == alone.class_counts
    assert np.array_equal(combo._arrays["train"][1], alone._arrays["train"][1])
    counts, balanced = np.array(alone.class_counts), np.array(plain.class_counts)
    assert counts[0] == balanced[0] and abs(counts[2] - 0.3 * balanced[2]) <= 1  # the last class keeps 30%
    # Val and test stay whole.
    for split in ("val", "test"):
        assert combo.size(split) == plain.size(split)
        assert np.array_equal(combo._arrays[split][1], plain._arrays[split][1])

    # One "was missing" column per feature with a gap among the (imbalanced) training rows.
    train, val, test = default_split(wine.y)
    train = Imbalance(0.3).edit_split(Rows(wine, train, val, test, stratify=True, seed=0)).train
    gappy = np.flatnonzero(np.isnan(mask_values(wine.x, 0.2, "mcar", 0)[train]).any(0))
    assert len(gappy) > 0 and combo.imputer.indicators.tolist() == gappy.tolist()
    assert combo.input_shape == (13 + len(gappy),)
    assert combo.feature_names[13:] == [f"{wine.feature_names[i]} missing" for i in gappy]
    for split in SPLITS:
        x = combo._arrays[split][0]
        assert x.shape == (combo.size(split), 13 + len(gappy)) and np.isfinite(x).all()

    # Each epoch draws every class about equally often, though class 0 has ~4x the rows of class 2.
    y = torch.from_numpy(combo._arrays["train"][1])
    drawn = torch.cat([combo.epoch_order(e) for e in range(20)])
    share = torch.bincount(y[drawn], minlength=3).double() / len(drawn)
    assert (share - 1 / 3).abs().max() < 0.05, share
    assert counts.max() / counts.min() > 3


def test_a_combination_runs_from_the_command_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "data=wine", "data_edit=[missing,imbalance]", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_finite_metrics(json.loads((run_dir / "metrics.json").read_text()), "classification")
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert list(saved.data_edit) == ["missing", "imbalance"]
    # No impute edit listed: the gaps were filled with train-split means.
    assert "filling missing input values with train-split means" in (run_dir / "train.log").read_text()


# --- the listed order --------------------------------------------------------------------------


def test_edits_apply_in_the_listed_order(digits) -> None:
    five = DataModule(digits, edits=[KeepClasses([5, 6, 7, 8, 9]), FewLabels(3)], seed=0)
    assert five.size("train") == 15 and five.class_counts == [3] * 5
    assert five.class_names == ["5", "6", "7", "8", "9"]
    # Within a stage the order matters too: imbalance then few labels keeps 3 rows of every class;
    # few labels then imbalance thins the 3 rows of each class by its share.
    first = DataModule(digits, edits=[Imbalance(0.5), FewLabels(3)], seed=0)
    then = DataModule(digits, edits=[FewLabels(3), Imbalance(0.5)], seed=0)
    assert first.class_counts == [3] * 10
    assert then.class_counts == [max(1, round(3 * 0.5 ** (c / 9))) for c in range(10)]
    assert then.class_counts != first.class_counts


def test_the_command_lines_order_is_the_order_of_the_edits(tmp_path: Path) -> None:
    cfg = compose_config(["data=wine", "data_edit=[missing,imbalance]"], tmp_path / "a")
    assert [type(e) for e in row_edits(cfg)] == [MissingValues, Imbalance]
    backwards = compose_config(["data=wine", "data_edit=[imbalance,missing]"], tmp_path / "b")
    assert [type(e) for e in row_edits(backwards)] == [Imbalance, MissingValues]
    with pytest.raises(Exception) as info:
        build_data(backwards)
    message = user_error_message(info.value)  # what the command prints after "Error: "
    assert message is not None and "List missing before imbalance, e.g. data_edit=[missing,imbalance]." in message


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (
            lambda: [Imbalance(0.5), MissingValues(0.1)],
            r"data_edit: missing edits the dataset stage, which comes before imbalance's split stage "
            r"\(stages: dataset, split, fill, targets, order\)\. List missing before imbalance, "
            r"e\.g\. data_edit=\[missing,imbalance\]\.",
        ),
        (lambda: [FewLabels(3), KeepClasses([5, 6])], r"List classes before few_labels"),
        (lambda: [BalancedSampling(), Impute()], r"List impute before balanced_sampling"),
        (
            lambda: [BalancedSampling(), FixedOrder()],
            r"data_edit lists balanced_sampling and fixed_order: each sets the order of every epoch's rows\. "
            r"Keep one\.",
        ),
        (lambda: [Impute(), Impute("median")], r"data_edit lists impute and impute: each fills the inputs' gaps"),
    ],
)
def test_a_list_against_the_stages_is_refused_with_the_fix(wine, edits, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        DataModule(wine, edits=edits(), seed=0)


# --- statistics of the training rows only ------------------------------------------------------


@pytest.fixture(scope="module")
def leaky_table() -> tuple[ArrayDataset, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """100 rows, 3 features, gaps in train and val rows; every val and test value is extreme
    (~1000), so any statistic that saw them is far from the training rows' own."""
    rng = np.random.default_rng(0)
    y = np.arange(100) % 2
    split = train, val, test = default_split(y)
    x = rng.normal(size=(100, 3))
    x[np.r_[val, test]] += 1000.0
    x[train[:10], 0] = np.nan
    x[train[10:15], 2] = np.nan
    x[val[:2], 0] = np.nan
    x[test[:2], 1] = np.nan  # a feature with no gap among the training rows
    return ArrayDataset(x.astype(np.float32), y, "classification"), split


def test_impute_values_are_the_train_rows_means(leaky_table) -> None:
    ds, (train, val, _) = leaky_table
    data = DataModule(ds, edits=[Impute()], normalize="none", seed=0)
    expected = np.nanmean(ds.x[train].astype(np.float64), axis=0)
    assert data.imputer.values == pytest.approx(expected, rel=1e-6)
    assert np.all(np.abs(data.imputer.values) < 5)  # nowhere near the val/test rows' ~1000
    # A val row's gap gets the train mean; the rows keep their order within the split.
    assert data._arrays["val"][0][:2, 0] == pytest.approx([expected[0]] * 2, rel=1e-6)
    for split in SPLITS:
        assert np.isfinite(data._arrays[split][0]).all()


def test_minmax_and_standard_scaling_use_the_filled_train_rows(leaky_table) -> None:
    ds, (train, val, _) = leaky_table
    low, high = np.nanmin(ds.x[train], axis=0), np.nanmax(ds.x[train], axis=0)  # the mean fill lies in between
    minmax = DataModule(ds, normalize="minmax", seed=0)  # gaps and no impute edit: Impute()
    assert isinstance(minmax.imputer, Impute) and minmax.imputer.strategy == "mean"
    assert np.array_equal(minmax.x_scale[0], low)
    assert minmax.x_scale[1] == pytest.approx(high - low, rel=1e-6)
    assert minmax._arrays["train"][0].min() == 0.0 and minmax._arrays["train"][0].max() == pytest.approx(1.0)
    assert minmax._arrays["val"][0][~np.isnan(ds.x[val])].min() > 100  # the val rows were not part of the range
    standard = DataModule(ds, normalize="standard", seed=0)
    assert standard.x_scale[0] == pytest.approx(np.nanmean(ds.x[train].astype(np.float64), axis=0), rel=1e-5)


def test_a_csv_file_is_filled_with_its_train_rows_statistics(tmp_path: Path) -> None:
    """The loader keeps a missing number as NaN and a missing category as all zeros; the
    DataModule fills the NaN with the mean of the training rows only."""
    n = 40
    y = np.arange(n) % 2
    train, val, test = default_split(y)
    size = np.arange(n, dtype=float)
    size[np.r_[val, test]] = 500.0  # extreme outside train
    blank_size = {int(train[0]), int(train[1]), int(val[0])}
    blank_colour = int(train[2])
    lines = ["size,colour,label"]
    for i in range(n):
        value = "" if i in blank_size else f"{size[i]:g}"
        colour = "" if i == blank_colour else ("red" if i % 3 else "blue")
        lines.append(f"{value},{colour},{'ab'[y[i]]}")
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")

    ds = tabular.csv(str(path), target="label")
    assert ds.feature_names == ["size", "colour=blue", "colour=red"] and ds.y.tolist() == y.tolist()
    assert ds.x[blank_colour, 1:].tolist() == [0.0, 0.0]  # a missing category: no category
    assert np.isnan(ds.x[sorted(blank_size), 0]).all() and np.isnan(ds.x).sum() == len(blank_size)

    data = DataModule(ds, normalize="none", seed=0)
    kept = [i for i in train if i not in blank_size]
    assert data.imputer.values[0] == pytest.approx(size[kept].mean(), rel=1e-6)
    assert data.imputer.values[0] < 40  # the val/test rows' 500s took no part
    train_x = data._arrays["train"][0]
    assert train_x[list(train).index(blank_colour), 1:].tolist() == [0.0, 0.0]  # still no category
    assert train_x[list(train).index(train[0]), 0] == pytest.approx(size[kept].mean(), rel=1e-6)


# --- old keys ------------------------------------------------------------------------------------

OLD_KEYS = [
    # (the old command, the new spelling the message names, overrides that spell it)
    (["data.imbalance=0.1"], "data_edit=imbalance data_edit.imbalance.ratio=0.1", ["data_edit=imbalance"]),
    (["data.cv_folds=3"], "data_edit=kfold data_edit.kfold.folds=3", ["data_edit=kfold", "data_edit.kfold.folds=3"]),
    (
        ["data.standardize=false"],
        "data.normalize=standard for standardize=true, data.normalize=none for false",
        ["data.normalize=none"],
    ),
    (["data=csv", "data.dataset.scale=minmax"], "data.normalize=minmax", ["data=csv", "data.normalize=minmax"]),
]


@pytest.mark.parametrize(("old", "new", "fixed"), OLD_KEYS, ids=[" ".join(c[0]) for c in OLD_KEYS])
def test_an_old_key_on_the_command_line_names_its_new_spelling(old, new: str, fixed, tmp_path: Path) -> None:
    result = run_cli([*old, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    key = old[-1].split("=")[0]
    assert lines[0].startswith(f"Error: {key} is no longer a key: it is now spelled {new}"), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()
    compose_config([*TINY, *fixed], tmp_path / "fixed")  # the new spelling composes


@pytest.mark.parametrize("key", sorted(RENAMED))
def test_every_renamed_key_is_explained_in_one_paragraph(key: str) -> None:
    hydra_message = f"Could not override '{key}'.\nKey '{key.rsplit('.', 1)[1]}' is not in struct\n"
    message = explain(hydra_message, [f"{key}=7"])
    assert message is not None and "\n" not in message
    assert message.startswith(f"{key} is no longer a key: it is now spelled ")
    expected = RENAMED[key].format(value="7")
    assert expected in message
    edit = expected.split()[0]  # data_edit=<name> ... or data.normalize=...
    if edit.startswith("data_edit="):
        assert edit.split("=")[1] in options("data_edit")  # it names a real choice


def test_an_old_key_in_a_config_file_is_refused_with_its_new_spelling(tmp_path: Path) -> None:
    """A config from before the change (a saved run's, a user's YAML) fails validation the same way."""
    cfg = compose_config(["data=wine"], tmp_path)
    with open_dict(cfg):
        cfg.data.imbalance = 0.2
    with pytest.raises(ConfigValueError, match=r"data\.imbalance is no longer a key.*data_edit\.imbalance\.ratio=0\.2"):
        validate_config(cfg)


# --- the config group --------------------------------------------------------------------------

EDIT_FILES = sorted((CONFIG_DIR / "data_edit").rglob("*.yaml"))
# The method each stage's edits have (what the DataModule calls at that stage).
STAGE_METHOD = {
    "dataset": "edit_dataset",
    "split": "edit_split",
    "fill": "fit",
    "targets": "edit_targets",
    "order": "epoch_order",
}


def test_every_stage_has_its_method() -> None:
    assert set(STAGE_METHOD) == set(STAGES)


@pytest.mark.parametrize("path", EDIT_FILES, ids=[p.stem for p in EDIT_FILES])
def test_each_data_edit_file_names_its_edit(path: Path, tmp_path: Path) -> None:
    content = yaml.safe_load(path.read_text())
    assert list(content) == [path.stem], "one top-level key, the file's name"
    cls = get_object(content[path.stem]["_target_"])
    assert cls.name == path.stem and cls.stage in STAGES
    assert callable(getattr(cls, STAGE_METHOD[cls.stage], None)), f"{cls.__name__} lacks its stage's method"
    cfg = compose_config([f"data_edit={path.stem}"], tmp_path)  # composes, and builds with its defaults
    (edit,) = row_edits(cfg)
    assert type(edit) is cls


def test_the_edit_files_are_found() -> None:
    assert {p.stem for p in EDIT_FILES} >= {"missing", "imbalance", "impute", "balanced_sampling", "kfold"}
