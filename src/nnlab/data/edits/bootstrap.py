"""The bootstrap: resample the training rows with replacement (bagging's members)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from nnlab.data.edits import Rows


class Bootstrap:
    """Draw as many training rows as there are, with replacement (about 63% of them appear, some
    more than once); val and test stay whole. `seed` draws the resample (None: data.seed), so
    ensemble members share one split (data.seed) and differ in their resample."""

    stage: ClassVar[str] = "split"
    name: ClassVar[str] = "bootstrap"

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed

    def edit_split(self, rows: Rows) -> Rows:
        rng = np.random.default_rng([rows.seed if self.seed is None else self.seed, 2])
        train = np.sort(rng.choice(rows.train, size=len(rows.train), replace=True))
        return dataclasses.replace(rows, train=train)
