"""A long-tailed class imbalance, made from a balanced dataset."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nnlab.data.edits import Rows, needs_classes
from nnlab.errors import check_range


class Imbalance:
    """Keep a fraction ratio^(c / (K - 1)) of each class c's training rows: class 0 keeps all,
    the last class keeps `ratio`, and the shares fall exponentially in between (a long tail).
    Val and test stay whole, so the imbalanced run is scored on the balanced rows."""

    stage: ClassVar[str] = "split"
    name: ClassVar[str] = "imbalance"

    def __init__(self, ratio: float = 0.1) -> None:
        check_range("data_edit.imbalance.ratio", ratio, 0.0, 1.0, low_inclusive=False)
        self.ratio = ratio

    def edit_split(self, rows: Rows) -> Rows:
        needs_classes(self.name, rows.dataset)
        y = rows.dataset.y
        rng = np.random.default_rng(rows.seed + 1)
        classes = np.unique(y)
        kept = []
        for rank, c in enumerate(classes):
            train = rows.train[y[rows.train] == c]
            share = self.ratio ** (rank / max(len(classes) - 1, 1))
            kept.append(rng.permutation(train)[: max(1, int(round(share * len(train))))])
        return dataclasses.replace(rows, train=np.sort(np.concatenate(kept)))
