"""Averaging step metrics without synchronising the device every step."""

from __future__ import annotations

import torch


class RunningMean:
    """Sample-weighted means of scalar tensors, summed where they live (CPU or GPU).

    `update` only queues device ops; `pop` reads every mean back in one transfer and resets,
    so reading costs one host synchronisation per logging interval, not one per step.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def update(self, values: dict[str, torch.Tensor], n: int) -> None:
        for k, v in values.items():
            s = self._sums.get(k)
            self._sums[k] = v * n if s is None else s.add_(v, alpha=n)
        self.count += n

    def pop(self) -> tuple[dict[str, float], int]:
        """(means since the last pop, number of samples they cover); resets the sums."""
        if not self.count:
            return {}, 0
        keys = list(self._sums)
        means = (torch.stack([self._sums[k].float() for k in keys]) / self.count).tolist()
        count, self._sums, self.count = self.count, {}, 0
        return dict(zip(keys, means)), count

    def state_dict(self) -> dict[str, object]:
        """The open interval's sums (device tensors) and count, for a mid-epoch checkpoint."""
        return {"sums": dict(self._sums), "count": self.count}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._sums = {k: v.clone() for k, v in state["sums"].items()}
        self.count = int(state["count"])
