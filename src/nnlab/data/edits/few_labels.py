"""Few labels: a handful of training rows per class (the setting transfer learning helps in)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nnlab.data.edits import Rows, needs_classes
from nnlab.errors import ConfigValueError, check_range


class FewLabels:
    """Keep `per_class` seeded training rows of every class; val and test stay whole."""

    stage: ClassVar[str] = "split"
    name: ClassVar[str] = "few_labels"

    def __init__(self, per_class: int = 10) -> None:
        check_range("data_edit.few_labels.per_class", per_class, 1)
        self.per_class = per_class

    def edit_split(self, rows: Rows) -> Rows:
        dataset = rows.dataset
        needs_classes(self.name, dataset)
        rng = np.random.default_rng([rows.seed, 1])
        kept = []
        for c, class_name in enumerate(dataset.class_names):
            train = rows.train[dataset.y[rows.train] == c]
            if len(train) < self.per_class:
                raise ConfigValueError(
                    f"data_edit.few_labels.per_class={self.per_class}, but class {class_name!r} has only "
                    f"{len(train)} training rows. Lower data_edit.few_labels.per_class to at most {len(train)}, "
                    "or lower data.val_fraction/test_fraction."
                )
            kept.append(rng.choice(train, size=self.per_class, replace=False))
        return dataclasses.replace(rows, train=np.sort(np.concatenate(kept)))
