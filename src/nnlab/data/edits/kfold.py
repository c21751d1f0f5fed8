"""k-fold cross-validation: which fold of the train + val rows validates this run."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nnlab.data.edits import Rows
from nnlab.data.split import fold_indices
from nnlab.errors import check_range


class KFold:
    """Deal the train and val rows into `folds` seeded folds and validate on fold `fold`; the
    test rows stay held out. `nnlab-train data_edit=kfold` trains one run per fold (the k-fold
    loop in `nnlab.runs.pipeline.cross_validate` sets `fold`) and reports the folds' mean and spread.
    It replaces the split's train/val rows, so list it before edits of the training rows."""

    stage: ClassVar[str] = "split"
    name: ClassVar[str] = "kfold"

    def __init__(self, folds: int = 5, fold: int = 0) -> None:
        check_range("data_edit.kfold.folds", folds, 2)
        check_range("data_edit.kfold.fold", fold, 0, folds - 1)
        self.folds = folds
        self.fold = fold

    def edit_split(self, rows: Rows) -> Rows:
        pool = np.concatenate([rows.train, rows.val])
        train, val = fold_indices(rows.dataset.y, pool, self.folds, self.fold, rows.stratify, rows.seed)
        return dataclasses.replace(rows, train=train, val=val)
