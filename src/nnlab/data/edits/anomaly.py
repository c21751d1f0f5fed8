"""Hold classes out of training: anomaly detection learns what "normal" looks like."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nnlab.data.edits import Rows, needs_classes
from nnlab.errors import ConfigValueError, OptionError


class HoldOutClasses:
    """Drop the training rows of `classes`, so a model sees only the others ("normal"); val and
    test keep them, and a task that scores anomalies (the autoencoder's) reads them from
    `DataModule.anomaly_classes` to score normal against anomalous test rows."""

    stage: ClassVar[str] = "split"
    name: ClassVar[str] = "anomaly"

    def __init__(self, classes: list[int]) -> None:
        classes = [int(c) for c in classes]
        if not classes or len(set(classes)) != len(classes):
            raise OptionError(
                f"data_edit.anomaly.classes={classes} must list one or more class indices, each once, "
                "e.g. data_edit.anomaly.classes=[9]."
            )
        self.classes = classes

    def edit_split(self, rows: Rows) -> Rows:
        dataset = rows.dataset
        needs_classes(self.name, dataset)
        bad = [c for c in self.classes if not 0 <= c < dataset.num_classes]
        if bad or len(self.classes) >= dataset.num_classes:
            raise ConfigValueError(
                f"data_edit.anomaly.classes={self.classes} must list some, but not all, of the dataset's "
                f"class indices 0-{dataset.num_classes - 1}, e.g. data_edit.anomaly.classes=[9]."
            )
        train = rows.train[~np.isin(dataset.y[rows.train], self.classes)]
        return dataclasses.replace(rows, train=train, held_out=rows.held_out + tuple(self.classes))
