"""Missing feature values for the lab: knock values out of a table, then fill them back in.

Two steps, used by the DataModule (`data.missing`, `data.missing_mechanism`, `data.impute`):

1. `mask_values` sets a seeded share of a table's values to NaN, in every split (a deployed
   model meets gaps in its inputs too), by one of two mechanisms:
   - mcar, missing completely at random: every value is lost with the same probability, so a
     gap says nothing about the value behind it.
   - mnar, missing not at random (self-masking): only values above their feature's median can be
     lost, with twice the probability, so the same share goes missing but a gap now means "this
     value was high". Mean imputation erases that hint; a missing-indicator column keeps it.
2. `Imputer` fills the gaps with means fitted on the training rows only (no statistic of the
   validation or test rows leaks into training) and, if asked, appends one 0/1 column per
   feature that had gaps in the training rows, so the model can learn what a gap means.

`impute=drop` (complete-case analysis) is the DataModule's: it discards the training rows with
any gap. A model must still answer every validation and test row, so theirs are mean-filled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MECHANISMS = ("mcar", "mnar")
IMPUTE = ("drop", "mean", "mean_indicator")


def mask_values(x: np.ndarray, fraction: float, mechanism: str, seed: int) -> np.ndarray:
    """A copy of the table `x` (N, F) with about `fraction` of its values set to NaN.

    mcar: each value independently with probability `fraction`. mnar: each value above its
    feature's median with probability 2 x `fraction` (so `fraction` <= 0.5), the others never.
    """
    rng = np.random.default_rng([seed, 3])
    u = rng.random(x.shape)
    if mechanism == "mcar":
        lost = u < fraction
    else:  # self-masking: the median is the data-generating rule here, not a fitted statistic
        lost = (x > np.median(x, axis=0)) & (u < 2 * fraction)
    out = x.astype(np.float32, copy=True)
    out[lost] = np.nan
    return out


@dataclass
class Imputer:
    """Fills NaNs with per-feature `means`; with `indicators`, appends a 0/1 "was missing" column
    for each feature listed there (indices into the F features). (N, F) -> (N, F + len(indicators))."""

    means: np.ndarray
    indicators: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        gaps = np.isnan(x)
        filled = np.where(gaps, self.means, x).astype(np.float32)
        if len(self.indicators) == 0:
            return filled
        return np.concatenate([filled, gaps[:, self.indicators].astype(np.float32)], axis=1)

    def feature_names(self, names: list[str] | None) -> list[str] | None:
        """The names of the columns this imputer outputs: the features, then '<name> missing'."""
        if names is None:
            return None
        return [*names, *(f"{names[i]} missing" for i in self.indicators)]


def fit_imputer(x_train: np.ndarray, indicators: bool) -> Imputer:
    """Means of the training rows' observed values (0 for a feature with none observed), and the
    features with a gap among the training rows (if `indicators`)."""
    gaps = np.isnan(x_train)
    observed = (~gaps).sum(0)
    sums = np.where(gaps, 0.0, x_train).sum(0, dtype=np.float64)
    means = np.divide(sums, observed, out=np.zeros(x_train.shape[1]), where=observed > 0).astype(np.float32)
    columns = np.flatnonzero(gaps.any(0)) if indicators else np.array([], dtype=np.int64)
    return Imputer(means, columns)
