"""The one shape every dataset is handed over in: arrays plus what a model needs to size itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["classification", "regression"]


@dataclass
class ArrayDataset:
    """A whole dataset in memory.

    x: float32 features, shape (N, *input_shape), e.g. (1797, 1, 8, 8) for digits.
    y: int64 class indices (classification) or float32 targets of shape (N,) or (N, T) (regression).
    kind: "classification" or "regression"; it picks the loss and metrics of the supervised task.
    class_names: one name per class (classification only).
    test_mask: True for the rows of a dataset's official test split (e.g. MNIST's 10,000); when
        given, the DataModule tests on exactly those rows and draws val from the others.
    feature_names: one name per feature of a tabular dataset (x of shape (N, F)), e.g. the CSV's
        columns; they label attributions (nnlab-explain) and predictions.
    source: where the rows were read from (a CSV file's path), named by messages about them.
    """

    x: np.ndarray
    y: np.ndarray
    kind: Kind
    class_names: list[str] | None = None
    test_mask: np.ndarray | None = None
    feature_names: list[str] | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        dtype = np.int64 if self.kind == "classification" else np.float32
        self.y = np.ascontiguousarray(self.y, dtype=dtype)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        if self.test_mask is not None:
            self.test_mask = np.asarray(self.test_mask, dtype=bool)
            if self.test_mask.shape != (len(self.x),):
                raise ValueError(f"test_mask has shape {self.test_mask.shape}, expected ({len(self.x)},)")
        if self.feature_names is not None and (self.x.ndim != 2 or len(self.feature_names) != self.x.shape[1]):
            raise ValueError(f"{len(self.feature_names)} feature names for inputs of shape {self.x.shape[1:]}")
        if self.kind == "classification" and self.class_names is None:
            self.class_names = [str(c) for c in range(int(self.y.max()) + 1)]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.kind == "classification" else None
