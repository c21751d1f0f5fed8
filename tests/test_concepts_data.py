"""The DataModule options behind the concept lab's data experiments: input scaling by name
(`normalize`), gross errors in regression targets (`outliers`), missing values and their
imputation (`missing`, `missing_mechanism`, `impute`), and the `imbalance_remedy` config group."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from helpers import CONFIG_DIR
from nnlab.data import sklearn
from nnlab.data.arrays import ArrayDataset
from nnlab.data.datamodule import DataModule
from nnlab.data.missing import fit_imputer, mask_values
from nnlab.data.split import split_indices
from nnlab.errors import ConfigValueError, OptionError


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


def test_normalize_names_the_standardize_choices_and_replaces_it(wine) -> None:
    z = DataModule(wine, seed=0)._arrays["train"][0]
    raw = DataModule(wine, standardize=False, seed=0)._arrays["train"][0]
    assert np.array_equal(DataModule(wine, normalize="standard", standardize=False, seed=0)._arrays["train"][0], z)
    assert np.array_equal(DataModule(wine, normalize="none", seed=0)._arrays["train"][0], raw)  # standardize=True
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
    dirty = DataModule(diabetes, stratify=False, outliers=0.1, outlier_scale=8.0, seed=0)
    y0, y1 = clean._arrays["train"][1], dirty._arrays["train"][1]
    moved = np.flatnonzero(y0 != y1)
    assert len(moved) == round(0.1 * len(y0))
    # The target is z-scored before the errors go in: each moves by exactly 8 clean stds.
    assert np.abs(y1[moved] - y0[moved]) == pytest.approx(np.full(len(moved), 8.0), rel=1e-4)
    assert {np.sign(d) for d in y1[moved] - y0[moved]} == {-1.0, 1.0}  # both directions
    for split in ("val", "test"):
        assert np.array_equal(clean._arrays[split][1], dirty._arrays[split][1])
    assert np.array_equal(clean.y_scale[1], dirty.y_scale[1])  # metrics in the clean target's units
    again = DataModule(diabetes, stratify=False, outliers=0.1, outlier_scale=8.0, seed=0)
    assert np.array_equal(again._arrays["train"][1], y1)  # seeded


def test_outliers_need_a_regression_dataset(wine) -> None:
    with pytest.raises(ConfigValueError, match=r"data.outliers=0.1 .* classification.*data=diabetes") as info:
        DataModule(wine, outliers=0.1)
    assert not isinstance(info.value, OptionError)  # depends on the data: not a preflight error


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"outliers": 1.0}, "data.outliers"), ({"outliers": 0.1, "outlier_scale": 0.0}, "data.outlier_scale")],
)
def test_bad_outlier_options_name_the_key(diabetes, kwargs: dict, key: str) -> None:
    with pytest.raises(OptionError, match=key):
        DataModule(diabetes, stratify=False, **kwargs)


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
    imputer = fit_imputer(train, indicators=True)
    assert imputer.means.tolist() == [2.0, 6.0, 5.0]
    assert imputer.indicators.tolist() == [0, 1]  # feature 2 has no gap among the training rows
    out = imputer(np.array([[np.nan, 1.0, np.nan]], dtype=np.float32))
    assert out.tolist() == [[2.0, 1.0, 5.0, 1.0, 0.0]]  # a gap of feature 2 is still filled
    assert imputer.feature_names(["a", "b", "c"]) == ["a", "b", "c", "a missing", "b missing"]


def test_mean_imputation_uses_train_rows_only(wine) -> None:
    data = DataModule(wine, missing=0.3, normalize="none", seed=0)
    masked = mask_values(wine.x, 0.3, "mcar", 0)
    train_idx = train_rows(wine)
    assert np.array_equal(
        wine.x[train_idx].astype(np.float32), DataModule(wine, seed=0, normalize="none")._arrays["train"][0]
    )
    expected = np.nanmean(masked[train_idx].astype(np.float64), axis=0)
    assert data.imputer.means == pytest.approx(expected, rel=1e-5)
    assert np.nanmean(masked.astype(np.float64), axis=0) != pytest.approx(expected, rel=1e-5)  # all rows differ
    for split in ("train", "val", "test"):
        assert not np.isnan(data._arrays[split][0]).any()


def test_mean_indicator_widens_the_input_and_the_model_is_sized_from_it(wine) -> None:
    data = DataModule(wine, missing=0.3, impute="mean_indicator", seed=0)
    assert data.input_shape == (26,)
    assert all(a[0].shape[1] == 26 for a in data._arrays.values())
    assert data.feature_names[13:] == [f"{n} missing" for n in wine.feature_names]
    # a new row in raw units with a gap (what nnlab-predict hands to transform) gets the same columns
    row = wine.x[:1].copy()
    row[0, 4] = np.nan
    out = data.transform(row)
    assert out.shape == (1, 26) and np.isfinite(out).all()


def test_drop_keeps_complete_training_rows_and_every_val_test_row(wine) -> None:
    kept = DataModule(wine, missing=0.05, impute="drop", seed=0)
    whole = DataModule(wine, missing=0.05, impute="mean", seed=0)
    masked = mask_values(wine.x, 0.05, "mcar", 0)
    complete = ~np.isnan(masked).any(1)
    assert 0 < kept.size("train") < whole.size("train")
    assert kept.size("train") == int(complete[train_rows(wine)].sum())
    assert (kept.size("val"), kept.size("test")) == (whole.size("val"), whole.size("test"))


def test_drop_with_no_complete_row_says_what_to_change(wine) -> None:
    with pytest.raises(ConfigValueError, match=r"data.impute=drop leaves no training row.*data.impute=mean"):
        DataModule(wine, missing=0.9, impute="drop", seed=0)


def test_missing_needs_a_table_and_mnar_at_most_half() -> None:
    images = ArrayDataset(np.zeros((40, 1, 4, 4)), np.arange(40) % 2, "classification")
    with pytest.raises(ConfigValueError, match=r"data.missing=0.1 blanks values of a table.*data=wine"):
        DataModule(images, missing=0.1)
    with pytest.raises(OptionError, match=r"mnar.*Lower data.missing to 0.5"):
        DataModule(sklearn.wine(), missing=0.6, missing_mechanism="mnar")
    with pytest.raises(OptionError, match=r"data.impute='median'"):
        DataModule(sklearn.wine(), missing=0.1, impute="median")


# --- configs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remedy", "sampler", "class_weight", "augment"),
    [
        ("none", "shuffle", "none", False),
        ("class_weights", "shuffle", "balanced", False),
        ("resampling", "weighted", "none", False),
        ("augmentation", "weighted", "none", True),
    ],
)
def test_each_imbalance_remedy_sets_its_keys(compose_cfg, tmp_path: Path, remedy, sampler, class_weight, augment):
    cfg = compose_cfg(["experiment=imbalanced", f"imbalance_remedy={remedy}"], tmp_path)
    assert (cfg.data.sampler, cfg.task.class_weight) == (sampler, class_weight)
    assert bool(cfg.get("augmentation")) == augment
    assert cfg.data.imbalance == 0.03  # the experiment's own values still apply


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("loss_regression", "task.loss"),
        ("loss_classification", "task.loss"),
        ("input_normalization", "data.normalize"),
        ("imbalanced", "imbalance_remedy"),
        ("missing_data", "data.impute"),
    ],
)
def test_each_concept_sweeps_one_key(name: str, key: str) -> None:
    cfg = OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml")
    assert list(cfg.hydra.sweeper.params) == [key]
