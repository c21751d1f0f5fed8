"""k-fold cross-validation: folds that partition the train+val rows, one run per fold, means ± std."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import epoch_curve, train_tiny
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.kfold import KFold
from nnlab.data.sklearn import digits
from nnlab.data.split import fold_indices
from nnlab.errors import OptionError
from nnlab.runs.pipeline import optimized_value


def test_folds_partition_the_rows_and_keep_class_shares() -> None:
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    rows = np.arange(0, 100)
    vals = []
    for fold in range(5):
        train, val = fold_indices(y, rows, 5, fold, stratify=True, seed=0)
        assert not set(train) & set(val) and set(train) | set(val) == set(rows)
        assert np.bincount(y[val], minlength=4).tolist() == [8, 6, 4, 2]  # a fifth of each class
        vals.append(val)
    assert sorted(np.concatenate(vals).tolist()) == rows.tolist()  # each row validated exactly once


def test_cv_keeps_the_test_split_and_deals_the_rest_into_folds() -> None:
    dataset = digits()
    plain = DataModule(dataset, seed=0)
    folds = [DataModule(dataset, edits=[KFold(folds=4, fold=i)], seed=0) for i in range(4)]
    test = plain._arrays["test"][1]
    pool = len(plain._arrays["train"][0]) + len(plain._arrays["val"][0])
    for dm in folds:
        assert np.array_equal(dm._arrays["test"][1], test)  # same held-out rows
        assert len(dm._arrays["train"][0]) + len(dm._arrays["val"][0]) == pool
        assert abs(len(dm._arrays["val"][0]) - pool / 4) <= 10
    # Different folds validate on different rows.
    assert not np.array_equal(folds[0]._arrays["val"][0], folds[1]._arrays["val"][0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, r"data_edit.kfold.folds=1 is out of range: it must be >= 2"),
        ({"folds": 3, "fold": 3}, r"data_edit.kfold.fold=3 is out of range: it must be in \[0, 2\]"),
    ],
)
def test_bad_fold_settings_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        KFold(**kwargs)


def test_cross_validation_runs_every_fold_and_reports_mean_and_std(tmp_path: Path) -> None:
    run = train_tiny(["data_edit=kfold", "data_edit.kfold.folds=3"], tmp_path / "cv")
    folds = [json.loads((run.dir / f"fold_{i}" / "metrics.json").read_text()) for i in range(3)]
    summary = json.loads((run.dir / "metrics.json").read_text())
    for name in ("val/loss", "val/acc", "test/acc", "train/loss"):
        values = [f[name] for f in folds]
        assert summary[name] == pytest.approx(np.mean(values))
        assert summary[f"{name}_std"] == pytest.approx(np.std(values, ddof=1))
        assert [summary[f"fold_{i}/{name}"] for i in range(3)] == values
    assert len({f["val/loss"] for f in folds}) == 3  # three different validation folds
    # What a sweeper optimizes: the cross-validated mean.
    assert optimized_value(run.metrics, "val/loss") == summary["val/loss"]
    for i in range(3):  # each fold is a full run of its own
        fold_dir = run.dir / f"fold_{i}"
        assert (fold_dir / "checkpoints" / "best.ckpt").is_file()
        assert len(epoch_curve(fold_dir, "val/loss")) > 0
    assert json.loads((run.dir / "status.json").read_text())["status"] == "completed"
