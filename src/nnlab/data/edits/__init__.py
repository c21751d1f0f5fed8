"""Row edits: the concept experiments' changes to a dataset, one small class each.

A run lists its edits in the `data_edit` config group (`nnlab-train data_edit=[missing,imbalance]`),
and the DataModule applies them in that order. Each edit acts at one stage of the DataModule's
work, and the list must follow the stages, since a later stage cannot reach back to an earlier one
(the split cannot be undone to pick classes):

1. `dataset`: the whole dataset, before the split (`KeepClasses`, `MissingValues`).
2. `split`: which rows train, validate and test (`KFold`, `Imbalance`, `HoldOutClasses`,
   `FewLabels`, `Bootstrap`). Edits of the training rows leave val and test whole, so an edited run
   is scored on the same rows as a plain one.
3. `fill`: gaps in the inputs, filled with statistics of the training rows (`Impute`). Scaling
   (the DataModule's `normalize`) comes right after, fitted on the filled training rows.
4. `targets`: the scaled training targets (`TargetOutliers`).
5. `order`: the order each epoch visits the training rows, instead of a seeded shuffle
   (`BalancedSampling`, `FixedOrder`); at most one.

An edit is a plain object with flat typed arguments (checked when it is built) and the one method
of its stage; its `stage` says which, and its `name` is its key in the `data_edit` group
(configs/data_edit/<name>.yaml), by which messages name its options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.errors import ConfigValueError

Stage = Literal["dataset", "split", "fill", "targets", "order"]
STAGES: tuple[Stage, ...] = ("dataset", "split", "fill", "targets", "order")


@dataclass(frozen=True)
class Rows:
    """What a `split` edit sees and returns: the dataset and the row indices of each split."""

    dataset: ArrayDataset
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    stratify: bool  # the split keeps class shares (classification with data.stratify=true)
    seed: int  # data.seed
    held_out: tuple[int, ...] = ()  # classes left out of training (anomaly detection's "anomalies")


def edit_name(edit: Any) -> str:
    """How messages name an edit: its key in the data_edit group (each class's `name`)."""
    return edit.name


def check_order(edits: Sequence[Any]) -> None:
    """Refuse a list whose stages go backwards, or with more than one `fill` or `order` edit,
    naming the fix."""
    for edit in edits:
        if getattr(edit, "stage", None) not in STAGES:
            raise ConfigValueError(
                f"data_edit: {type(edit).__name__} is not a row edit: its `stage` must be one of {', '.join(STAGES)} "
                "(see nnlab.data.edits)."
            )
    for earlier, later in zip(edits, edits[1:]):
        if STAGES.index(later.stage) < STAGES.index(earlier.stage):
            raise ConfigValueError(
                f"data_edit: {edit_name(later)} edits the {later.stage} stage, which comes before "
                f"{edit_name(earlier)}'s {earlier.stage} stage (stages: {', '.join(STAGES)}). List "
                f"{edit_name(later)} before {edit_name(earlier)}, e.g. "
                f"data_edit=[{edit_name(later)},{edit_name(earlier)}]."
            )
    for stage, what in (("fill", "fills the inputs' gaps"), ("order", "sets the order of every epoch's rows")):
        names = [edit_name(e) for e in edits if e.stage == stage]
        if len(names) > 1:
            raise ConfigValueError(f"data_edit lists {' and '.join(names)}: each {what}. Keep one.")


def at_stage(edits: Sequence[Any], stage: Stage) -> list[Any]:
    return [e for e in edits if e.stage == stage]


def needs_classes(edit: str, dataset: ArrayDataset) -> None:
    """Refuse a class-based edit on a regression dataset."""
    if dataset.kind != "classification":
        raise ConfigValueError(
            f"data_edit.{edit} works on class labels, but this dataset is {dataset.kind}. Remove it, or "
            "choose a classification dataset."
        )
