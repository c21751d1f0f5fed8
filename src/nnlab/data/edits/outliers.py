"""Gross errors in the training targets, as wrong labels would be (robust losses' test bed)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nnlab.errors import ConfigValueError, check_range


class TargetOutliers:
    """Move a seeded share `fraction` of the training targets by `scale` standard deviations of
    the target, up or down at random: far outside the clean spread. It acts on the scaled targets
    (after `standardize_target`), so the scaling and the metrics stay in the clean target's units;
    val and test stay clean."""

    stage: ClassVar[str] = "targets"
    name: ClassVar[str] = "outliers"

    def __init__(self, fraction: float = 0.1, scale: float = 10.0) -> None:
        check_range("data_edit.outliers.fraction", fraction, 0.0, 1.0, high_inclusive=False)
        check_range("data_edit.outliers.scale", scale, 0.0, low_inclusive=False)
        self.fraction = fraction
        self.scale = scale

    def edit_targets(self, y: np.ndarray, kind: str, seed: int) -> np.ndarray:
        if kind != "regression":
            raise ConfigValueError(
                f"data_edit.outliers corrupts regression targets, but this dataset is {kind} (for wrong class "
                "labels there is no gross error size). Remove it, or choose a regression dataset, e.g. data=diabetes."
            )
        rng = np.random.default_rng([seed, 4])
        rows = rng.choice(len(y), size=int(round(self.fraction * len(y))), replace=False)
        sign = rng.choice([-1.0, 1.0], size=(len(rows),) + y.shape[1:])
        out = y.copy()
        out[rows] = y[rows] + (sign * self.scale * y.std(axis=0)).astype(y.dtype)
        return out
