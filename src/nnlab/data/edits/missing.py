"""Missing values: knock a seeded share of a table's values out (filled back by `Impute`)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import ConfigValueError, OptionError, check_choice, check_range

MECHANISMS = ("mcar", "mnar")


class MissingValues:
    """Set about `fraction` of a table's feature values to NaN, in every split (a deployed model
    meets gaps in its inputs too), by one of two mechanisms:

    - mcar, missing completely at random: every value is lost with the same probability, so a
      gap says nothing about the value behind it.
    - mnar, missing not at random (self-masking): only values above their feature's median can be
      lost, with twice the probability, so the same share goes missing but a gap now means "this
      value was high". Mean imputation erases that hint; a missing-indicator column
      (`data_edit.impute.indicator=true`) keeps it.

    The gaps are filled by the `impute` edit (train-split means unless it says otherwise).
    """

    stage: ClassVar[str] = "dataset"
    name: ClassVar[str] = "missing"

    def __init__(self, fraction: float = 0.3, mechanism: Literal["mcar", "mnar"] = "mcar") -> None:
        check_range("data_edit.missing.fraction", fraction, 0.0, 1.0, high_inclusive=False)
        check_choice("data_edit.missing.mechanism", mechanism, MECHANISMS)
        if mechanism == "mnar" and fraction > 0.5:
            raise OptionError(
                f"data_edit.missing.fraction={fraction} with mechanism=mnar: only values above their feature's "
                "median can go missing, so at most half of them. Lower data_edit.missing.fraction to 0.5 or less."
            )
        self.fraction = fraction
        self.mechanism = mechanism

    def edit_dataset(self, dataset: ArrayDataset, seed: int) -> ArrayDataset:
        if dataset.x.ndim != 2:
            raise ConfigValueError(
                f"data_edit.missing blanks values of a table (N, features), but this dataset's inputs have "
                f"shape {dataset.input_shape}. Remove it, or choose a tabular dataset, e.g. data=wine."
            )
        return dataclasses.replace(dataset, x=mask_values(dataset.x, self.fraction, self.mechanism, seed))


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
