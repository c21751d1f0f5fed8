"""Keep some classes only: a smaller task carved from a bigger one (transfer learning's target)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.data.edits import needs_classes
from nnlab.errors import ConfigValueError, OptionError, did_you_mean


class KeepClasses:
    """Keep the rows of `classes` only (indices or names), relabelled 0..k-1 in the listed order;
    class names and the official test mask follow. It edits the whole dataset, before the split,
    so every later edit speaks of the kept classes."""

    stage: ClassVar[str] = "dataset"
    name: ClassVar[str] = "classes"

    def __init__(self, classes: list[int | str]) -> None:
        classes = list(classes)
        if len(set(map(str, classes))) != len(classes) or len(classes) < 2:
            raise OptionError(
                f"data_edit.classes.classes={classes} must list at least two different classes, each once, "
                "e.g. data_edit.classes.classes=[5,6,7,8,9]."
            )
        self.classes = classes

    def edit_dataset(self, dataset: ArrayDataset, seed: int) -> ArrayDataset:
        needs_classes(self.name, dataset)
        names = dataset.class_names
        picked = []
        for c in self.classes:
            if isinstance(c, str) and c in names:
                picked.append(names.index(c))
            elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
                picked.append(c)
            else:
                raise ConfigValueError(
                    f"data_edit.classes.classes: unknown class {c!r}. This dataset's classes are indices "
                    f"0-{len(names) - 1} or the names {names}.{did_you_mean(str(c), names)}"
                )
        if len(set(picked)) != len(picked):
            raise ConfigValueError(
                f"data_edit.classes.classes={self.classes} names one class twice (by index and by name). "
                "List each class once."
            )
        keep = np.isin(dataset.y, picked)
        relabel = np.full(len(names), -1, dtype=np.int64)
        relabel[picked] = np.arange(len(picked))
        return ArrayDataset(
            x=dataset.x[keep],
            y=relabel[dataset.y[keep]],
            kind="classification",
            class_names=[names[c] for c in picked],
            test_mask=None if dataset.test_mask is None else dataset.test_mask[keep],
            feature_names=dataset.feature_names,
            columns=None if dataset.columns is None else {k: v[keep] for k, v in dataset.columns.items()},
        )
