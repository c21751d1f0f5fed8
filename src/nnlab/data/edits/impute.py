"""Fill gaps in the inputs with statistics of the training rows only."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import numpy as np

from nnlab.errors import ConfigValueError, OptionError, check_choice

log = logging.getLogger(__name__)

STRATEGIES = ("mean", "median", "most_frequent", "drop")


class Impute:
    """Fill each feature's gaps (NaN: a CSV's empty fields, or `data_edit=missing`) with a value
    fitted on the training rows only, so no statistic of the validation or test rows leaks into
    training, and the same values fill new inputs (nnlab-predict).

    strategy: mean, median or most_frequent of the feature's observed training values (0 for a
        feature with none), or drop: discard the training rows with any gap (complete-case
        analysis); a model must still answer every row, so val and test rows are mean-filled.
    indicator: also append one 0/1 "was missing" column per feature with gaps among the training
        rows, so the model can learn what a gap means (the model is sized from the data).

    The DataModule fills gaps with `Impute()` (train means) when no impute edit is listed.
    """

    stage: ClassVar[str] = "fill"
    name: ClassVar[str] = "impute"

    def __init__(
        self, strategy: Literal["mean", "median", "most_frequent", "drop"] = "mean", indicator: bool = False
    ) -> None:
        check_choice("data_edit.impute.strategy", strategy, STRATEGIES)
        if strategy == "drop" and indicator:
            raise OptionError(
                "data_edit.impute.strategy=drop with indicator=true: no training row left has a gap, so there "
                "is nothing to indicate. Set indicator=false, or strategy=mean to keep the rows and flag their gaps."
            )
        self.strategy = strategy
        self.indicator = indicator
        self.values: np.ndarray | None = None  # (F,) fill value per feature, once fitted
        self.indicators = np.array([], dtype=np.int64)  # features that get a "was missing" column

    def fit(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Learn the fill values from the training rows (x, y); return the rows to train on."""
        if x.ndim != 2:
            raise ConfigValueError(
                f"data_edit.impute fills gaps in a table (N, features), but this dataset's inputs have shape "
                f"{x.shape[1:]}. Remove it, or choose a tabular dataset, e.g. data=wine."
            )
        gaps = np.isnan(x)
        if self.strategy == "drop":  # complete-case analysis of the train rows
            complete = ~gaps.any(axis=1)
            if not complete.any():
                raise ConfigValueError(
                    f"data_edit.impute.strategy=drop leaves no training row: each of the {len(complete)} has a gap "
                    f"in one of its {x.shape[1]} features. Lower data_edit.missing.fraction, or set "
                    "data_edit.impute.strategy=mean."
                )
            log.info("Impute: kept %d of %d training rows (no missing value)", complete.sum(), len(complete))
            x, y, gaps = x[complete], y[complete], gaps[complete]
        self.values = _fill_values(x, gaps, "mean" if self.strategy == "drop" else self.strategy)
        if self.indicator:
            self.indicators = np.flatnonzero(gaps.any(0))
        return x, y

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, F) -> (N, F + number of indicator columns), gaps filled."""
        gaps = np.isnan(x)
        filled = np.where(gaps, self.values, x).astype(np.float32)
        if len(self.indicators) == 0:
            return filled
        return np.concatenate([filled, gaps[:, self.indicators].astype(np.float32)], axis=1)

    def feature_names(self, names: list[str] | None) -> list[str] | None:
        """The names of the columns this edit outputs: the features, then '<name> missing'."""
        if names is None:
            return None
        return [*names, *(f"{names[i]} missing" for i in self.indicators)]


def _fill_values(x: np.ndarray, gaps: np.ndarray, strategy: str) -> np.ndarray:
    """Per-feature statistic of the observed values of `x`; 0 for a feature with none observed."""
    observed = (~gaps).sum(0)
    if strategy == "mean":
        sums = np.where(gaps, 0.0, x).sum(0, dtype=np.float64)
        return np.divide(sums, observed, out=np.zeros(x.shape[1]), where=observed > 0).astype(np.float32)
    values = np.zeros(x.shape[1], dtype=np.float32)
    for j in np.flatnonzero(observed):
        column = x[~gaps[:, j], j]
        if strategy == "median":
            values[j] = np.median(column)
        else:  # most_frequent; ties go to the smallest value
            uniques, counts = np.unique(column, return_counts=True)
            values[j] = uniques[np.argmax(counts)]
    return values
