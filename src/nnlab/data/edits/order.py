"""The order each epoch visits the training rows, when a seeded shuffle is not wanted."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from nnlab.errors import ConfigValueError


class BalancedSampling:
    """Draw each epoch's rows with replacement, each with probability proportional to
    1 / (rows of its class): every class is equally likely per draw, so batches are balanced on
    average and a rare class's few rows come back many times (oversampling). One remedy for
    class imbalance (`imbalance_remedy=resampling`); see also `task.class_weight`."""

    stage: ClassVar[str] = "order"
    name: ClassVar[str] = "balanced_sampling"

    def epoch_order(self, y: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        if not np.issubdtype(y.dtype, np.integer):
            raise ConfigValueError(
                "data_edit.balanced_sampling draws rows by class, but this dataset is a regression. Remove it, "
                "or choose a classification dataset."
            )
        labels = torch.from_numpy(y)
        weights = 1.0 / torch.bincount(labels).double()[labels]
        return torch.multinomial(weights, len(labels), replacement=True, generator=generator)


class FixedOrder:
    """Visit the training rows in the same order every epoch (no shuffle): e.g. to overfit one
    batch (`debug=overfit`), or to watch what shuffling buys."""

    stage: ClassVar[str] = "order"
    name: ClassVar[str] = "fixed_order"

    def epoch_order(self, y: np.ndarray, generator: torch.Generator) -> torch.Tensor:
        return torch.arange(len(y))
