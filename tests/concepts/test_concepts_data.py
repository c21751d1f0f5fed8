"""The DataModule options and row edits behind the concept lab's data experiments: input scaling
by name (`normalize`), gross errors in regression targets (the `outliers` edit), missing values
and their imputation (the `missing` and `impute` edits), and the `imbalance_remedy` config group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import CONFIG_DIR
from nnlab.data import sklearn
from nnlab.data.arrays import ArrayDataset
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.impute import Impute
from nnlab.data.edits.missing import MissingValues, mask_values
from nnlab.data.edits.outliers import TargetOutliers
from nnlab.data.split import split_indices
from nnlab.errors import ConfigValueError, OptionError
from nnlab.runs.build import row_edits


@pytest.fixture(scope="module")
def wine() -> ArrayDataset:
    return sklearn.wine()


@pytest.fixture(scope="module")
def diabetes() -> ArrayDataset:
    return sklearn.diabetes()


def train_rows(dataset: ArrayDataset, seed: int = 0) -> np.ndarray:
    """The row indices of the DataModule's default train split (val 0.1, test 0.2, stratified)."""
    return split_indices(dataset.y, 0.1, 0.2, True, seed)[0]


# --- normalize ---------------------------------------------------------------------------------


def test_minmax_maps_the_train_split_to_the_unit_interval_with_train_statistics(wine) -> None:
    raw = DataModule(wine, normalize="none", seed=0)._arrays
    data = DataModule(wine, normalize="minmax", seed=0)
    low, high = raw["train"][0].min(0), raw["train"][0].max(0)
    train = data._arrays["train"][0]
    assert train.min(0) == pytest.approx(np.zeros(13), abs=1e-6)
    assert train.max(0) == pytest.approx(np.ones(13), abs=1e-6)
    # val and test use the train split's min and max (so they may leave [0, 1]).
    expected = (raw["test"][0] - low) / (high - low)
    assert data._arrays["test"][0] == pytest.approx(expected, abs=1e-5)
    assert data.transform(raw["val"][0]) == pytest.approx(data._arrays["val"][0])


def test_normalize_standard_is_the_default_and_none_keeps_raw_values(wine) -> None:
    """`normalize` replaced `standardize`: standard (the default) z-scores, none keeps raw values."""
    z = DataModule(wine, seed=0)._arrays["train"][0]
    raw = DataModule(wine, normalize="none", seed=0)._arrays["train"][0]
    assert np.array_equal(DataModule(wine, normalize="standard", seed=0)._arrays["train"][0], z)
    assert np.array_equal(raw, wine.x[train_rows(wine)].astype(np.float32))
    assert raw.max() > 1000 and abs(z.mean()) < 1e-5  # proline's raw scale, and the z-score's centre


def test_a_bad_normalize_is_an_option_error_with_a_suggestion(wine) -> None:
    with pytest.raises(OptionError, match=r"data.normalize='min_max'.*Did you mean 'minmax'"):
        DataModule(wine, normalize="min_max")


def test_a_constant_feature_is_left_at_zero_by_minmax() -> None:
    x = np.c_[np.arange(20.0), np.full(20, 3.0)]
    data = DataModule(ArrayDataset(x, np.arange(20) % 2, "classification"), normalize="minmax", seed=0)
    assert np.all(data._arrays["train"][0][:, 1] == 0) and np.isfinite(data._arrays["test"][0]).all()


# --- outliers ------------------------------------------------------------------------------------


def test_outliers_move_a_share_of_train_targets_by_scale_stds_and_leave_val_test_clean(diabetes) -> None:
    clean = DataModule(diabetes, stratify=False, seed=0)
    dirty = DataModule(diabetes, stratify=False, edits=[TargetOutliers(fraction=0.1, scale=8.0)], seed=0)
    y0, y1 = clean._arrays["train"][1], dirty._arrays["train"][1]
    moved = np.flatnonzero(y0 != y1)
    assert len(moved) == round(0.1 * len(y0))
    # The target is z-scored before the errors go in: each moves by exactly 8 clean stds.
    assert np.abs(y1[moved] - y0[moved]) == pytest.approx(np.full(len(moved), 8.0), rel=1e-4)
    assert {np.sign(d) for d in y1[moved] - y0[moved]} == {-1.0, 1.0}  # both directions
    for split in ("val", "test"):
        assert np.array_equal(clean._arrays[split][1], dirty._arrays[split][1])
    assert np.array_equal(clean.y_scale[1], dirty.y_scale[1])  # metrics in the clean target's units
    again = DataModule(diabetes, stratify=False, edits=[TargetOutliers(fraction=0.1, scale=8.0)], seed=0)
    assert np.array_equal(again._arrays["train"][1], y1)  # seeded


def test_outliers_need_a_regression_dataset(wine) -> None:
    with pytest.raises(
        ConfigValueError, match=r"data_edit.outliers corrupts regression .* classification.*data=diabetes"
    ) as info:
        DataModule(wine, edits=[TargetOutliers(0.1)])
    assert not isinstance(info.value, OptionError)  # depends on the data: not a preflight error


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction": 1.0}, r"data_edit.outliers.fraction=1.0 is out of range: it must be in \[0.0, 1.0\)"),
        ({"fraction": 0.1, "scale": 0.0}, r"data_edit.outliers.scale=0.0 is out of range: it must be > 0.0"),
    ],
)
def test_bad_outlier_options_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        TargetOutliers(**kwargs)


# --- missing values ------------------------------------------------------------------------------


def test_mcar_blanks_the_asked_share_seeded() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 10))
    masked = mask_values(x, 0.3, "mcar", seed=1)
    assert np.isnan(masked).mean() == pytest.approx(0.3, abs=0.01)
    assert np.array_equal(np.isnan(masked), np.isnan(mask_values(x, 0.3, "mcar", seed=1)))
    assert not np.array_equal(np.isnan(masked), np.isnan(mask_values(x, 0.3, "mcar", seed=2)))
    assert np.array_equal(masked[~np.isnan(masked)], x[~np.isnan(masked)].astype(np.float32))


def test_mnar_blanks_only_values_above_the_median() -> None:
    x = np.random.default_rng(0).normal(size=(2000, 10))
    gaps = np.isnan(mask_values(x, 0.2, "mnar", seed=0))
    assert gaps.mean() == pytest.approx(0.2, abs=0.01)
    assert np.all(x[gaps] > np.median(x, axis=0)[np.nonzero(gaps)[1]])


def test_imputer_fills_with_train_means_and_flags_gappy_features() -> None:
    train = np.array([[1.0, np.nan, 5.0], [3.0, 4.0, 5.0], [np.nan, 8.0, 5.0]], dtype=np.float32)
    imputer = Impute(indicator=True)
    x, y = imputer.fit(train, np.arange(3))
    assert np.array_equal(x, train, equal_nan=True) and y.tolist() == [0, 1, 2]  # mean keeps every row
    assert imputer.values.tolist() == [2.0, 6.0, 5.0]
    assert imputer.indicators.tolist() == [0, 1]  # feature 2 has no gap among the training rows
    out = imputer(np.array([[np.nan, 1.0, np.nan]], dtype=np.float32))
    assert out.tolist() == [[2.0, 1.0, 5.0, 1.0, 0.0]]  # a gap of feature 2 is still filled
    assert imputer.feature_names(["a", "b", "c"]) == ["a", "b", "c", "a missing", "b missing"]


@pytest.mark.parametrize(("strategy", "fill"), [("mean", 4.25), ("median", 3.0), ("most_frequent", 3.0)])
def test_each_strategy_fills_with_its_statistic_of_the_observed_values(strategy: str, fill: float) -> None:
    train = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [3.0, np.nan], [10.0, np.nan]], np.float32)
    imputer = Impute(strategy)
    imputer.fit(train, np.zeros(5))
    assert imputer.values.tolist() == [fill, 0.0]  # a feature with no observed value is filled with 0
    assert imputer(np.array([[np.nan, np.nan]], np.float32)).tolist() == [[fill, 0.0]]


def test_most_frequent_breaks_ties_towards_the_smallest_value() -> None:
    imputer = Impute("most_frequent")
    imputer.fit(np.array([[4.0], [2.0], [4.0], [2.0], [np.nan]], np.float32), np.zeros(5))
    assert imputer.values.tolist() == [2.0]


def test_mean_imputation_uses_train_rows_only(wine) -> None:
    """With gaps and no impute edit, the DataModule fills them with `Impute()`: train means."""
    data = DataModule(wine, edits=[MissingValues(0.3)], normalize="none", seed=0)
    masked = mask_values(wine.x, 0.3, "mcar", 0)
    train_idx = train_rows(wine)
    assert np.array_equal(
        wine.x[train_idx].astype(np.float32), DataModule(wine, seed=0, normalize="none")._arrays["train"][0]
    )
    expected = np.nanmean(masked[train_idx].astype(np.float64), axis=0)
    assert (data.imputer.strategy, data.imputer.indicators.tolist()) == ("mean", [])
    assert data.imputer.values == pytest.approx(expected, rel=1e-5)
    assert np.nanmean(masked.astype(np.float64), axis=0) != pytest.approx(expected, rel=1e-5)  # all rows differ
    for split in ("train", "val", "test"):
        assert not np.isnan(data._arrays[split][0]).any()
    listed = DataModule(wine, edits=[MissingValues(0.3), Impute()], normalize="none", seed=0)
    for split in ("train", "val", "test"):
        assert np.array_equal(listed._arrays[split][0], data._arrays[split][0])


def test_no_gaps_no_imputer(wine) -> None:
    assert DataModule(wine, seed=0).imputer is None


def test_mean_indicator_widens_the_input_and_the_model_is_sized_from_it(wine) -> None:
    data = DataModule(wine, edits=[MissingValues(0.3), Impute(indicator=True)], seed=0)
    assert data.input_shape == (26,)
    assert all(a[0].shape[1] == 26 for a in data._arrays.values())
    assert data.feature_names[13:] == [f"{n} missing" for n in wine.feature_names]
    # a new row in raw units with a gap (what nnlab-predict hands to transform) gets the same columns
    row = wine.x[:1].copy()
    row[0, 4] = np.nan
    out = data.transform(row)
    assert out.shape == (1, 26) and np.isfinite(out).all()


def test_drop_keeps_complete_training_rows_and_every_val_test_row(wine) -> None:
    kept = DataModule(wine, edits=[MissingValues(0.05), Impute("drop")], seed=0)
    whole = DataModule(wine, edits=[MissingValues(0.05), Impute("mean")], seed=0)
    masked = mask_values(wine.x, 0.05, "mcar", 0)
    complete = ~np.isnan(masked).any(1)
    assert 0 < kept.size("train") < whole.size("train")
    assert kept.size("train") == int(complete[train_rows(wine)].sum())
    assert (kept.size("val"), kept.size("test")) == (whole.size("val"), whole.size("test"))
    for split in ("val", "test"):  # a model must answer every row: the gaps there are mean-filled
        assert not np.isnan(kept._arrays[split][0]).any()


def test_drop_with_no_complete_row_says_what_to_change(wine) -> None:
    with pytest.raises(
        ConfigValueError, match=r"data_edit.impute.strategy=drop leaves no training row.*data_edit.impute.strategy=mean"
    ):
        DataModule(wine, edits=[MissingValues(0.9), Impute("drop")], seed=0)


def test_missing_needs_a_table_and_mnar_at_most_half() -> None:
    images = ArrayDataset(np.zeros((40, 1, 4, 4)), np.arange(40) % 2, "classification")
    with pytest.raises(ConfigValueError, match=r"data_edit.missing blanks values of a table.*data=wine"):
        DataModule(images, edits=[MissingValues(0.1)])
    with pytest.raises(OptionError, match=r"mechanism=mnar.*Lower data_edit.missing.fraction to 0.5"):
        MissingValues(0.6, mechanism="mnar")
    with pytest.raises(OptionError, match=r"data_edit.missing.mechanism='mar' is not a valid choice"):
        MissingValues(0.1, mechanism="mar")


def test_bad_impute_options_name_the_key() -> None:
    with pytest.raises(OptionError, match=r"data_edit.impute.strategy='medain'.*Did you mean 'median'"):
        Impute("medain")
    with pytest.raises(OptionError, match=r"strategy=drop with indicator=true.*Set indicator=false"):
        Impute("drop", indicator=True)


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remedy", "edits", "class_weight", "augment"),
    [
        ("none", ["Imbalance"], "none", False),
        ("class_weights", ["Imbalance"], "balanced", False),
        ("resampling", ["Imbalance", "BalancedSampling"], "none", False),
        ("augmentation", ["Imbalance", "BalancedSampling"], "none", True),
    ],
)
def test_each_imbalance_remedy_sets_its_keys(compose_cfg, tmp_path: Path, remedy, edits, class_weight, augment):
    cfg = compose_cfg(["experiment=imbalanced", f"imbalance_remedy={remedy}"], tmp_path)
    built = row_edits(cfg)
    assert ([type(e).__name__ for e in built], cfg.task.class_weight) == (edits, class_weight)
    assert bool(cfg.get("augmentation")) == augment
    assert built[0].ratio == 0.03  # the experiment's own values still apply


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("loss_regression", "task.loss"),
        ("loss_classification", "task.loss"),
        ("input_normalization", "data.normalize"),
        ("imbalanced", "imbalance_remedy"),
        ("missing_data", "data_edit.impute"),
    ],
)
def test_each_concept_sweeps_one_key(name: str, key: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml")
    assert list(cfg.hydra.sweeper.params) == [key]
