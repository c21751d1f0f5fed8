"""Averaging step metrics without synchronising the device, or running a kernel, every step."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Accuracy(NamedTuple):
    """A training batch's accuracy, counted when the window is read rather than in the step.

    A step that returns `Accuracy(scores.detach(), labels)` pays for no kernel; `RunningMean.pop`
    takes the argmax of the whole window's scores at once. On a small model each kernel of the
    step's bookkeeping is a visible share of the step. The cost is memory: the scores of up to
    `trainer.log_every_n_steps` batches are kept until the next log.
    """

    scores: torch.Tensor  # (B, K), detached
    labels: torch.Tensor  # (B,) class indices


class RunningMean:
    """Sample-weighted means of step metrics, over the steps since the last `pop`.

    A step's metric is a 0-d tensor (the batch's mean, weighted by its number of samples) or an
    `Accuracy`. `update` only keeps references; `pop` sums each metric's window in a few kernels
    and reads every mean back in one transfer: one host synchronisation per logging interval,
    and no device work between intervals.
    """

    def __init__(self) -> None:
        self._values: dict[str, list[torch.Tensor | Accuracy]] = {}
        self._sizes: dict[str, list[int]] = {}
        self._base: dict[str, float] = {}  # sums restored from a checkpoint
        self.count = 0

    def update(self, values: dict[str, torch.Tensor | Accuracy], n: int) -> None:
        for k, v in values.items():
            if k not in self._values:
                self._values[k], self._sizes[k] = [], []
            self._values[k].append(v)
            self._sizes[k].append(n)
        self.count += n

    def _sums(self) -> dict[str, float]:
        """Each metric's sample-weighted sum over the window (plus any restored sum)."""
        keys = list(self._values)
        parts = [_window_sum(self._values[k], self._sizes[k]) for k in keys]
        read = torch.stack([total for total, _ in parts]).tolist() if parts else []
        sums = dict(self._base)
        for key, value, (_, scale) in zip(keys, read, parts):
            sums[key] = sums.get(key, 0.0) + value * scale
        return sums

    def pop(self) -> tuple[dict[str, float], int]:
        """(means since the last pop, number of samples they cover); resets the window."""
        if not self.count:
            return {}, 0
        sums, count = self._sums(), self.count
        self._values, self._sizes, self._base, self.count = {}, {}, {}, 0
        return {k: v / count for k, v in sums.items()}, count

    def state_dict(self) -> dict[str, object]:
        """The open window, for a mid-epoch checkpoint: the batch means themselves (so a resumed
        run sums them in the same order, to the same bits) and the accuracies' counts."""
        values, sizes, base = {}, {}, dict(self._base)
        for key, window in self._values.items():
            if isinstance(window[0], Accuracy):  # (an integer: exact however it is split)
                base[key] = base.get(key, 0.0) + float(_window_sum(window, self._sizes[key])[0])
            else:
                values[key], sizes[key] = list(window), list(self._sizes[key])
        return {"values": values, "sizes": sizes, "base": base, "count": self.count}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if "sums" in state:  # (an older checkpoint: the window's sums)
            self._values, self._sizes = {}, {}
            self._base = {k: float(v) for k, v in state["sums"].items()}
        else:
            self._values = {k: list(v) for k, v in state["values"].items()}
            self._sizes = {k: list(v) for k, v in state["sizes"].items()}
            self._base = dict(state["base"])
        self.count = int(state["count"])


def _window_sum(values: list[torch.Tensor | Accuracy], sizes: list[int]) -> tuple[torch.Tensor, int]:
    """One metric's window: (a 0-d tensor, a factor applied on the host) whose product is
    its sample-weighted sum. For `Accuracy` the number of correct predictions; for batch means
    their sum times the batch size when all batches are the same size (the common case: one
    kernel fewer), else their dot product with the sizes."""
    if isinstance(values[0], Accuracy):
        scores = torch.cat([v.scores for v in values])
        labels = torch.cat([v.labels for v in values])
        return (scores.argmax(1) == labels).sum(), 1  # (an integer: `stack` in `_sums` promotes it)
    stacked = torch.stack(values)
    if stacked.dtype != torch.float32 and stacked.dtype != torch.float64:
        stacked = stacked.float()  # (sums of bfloat16 values would lose digits)
    if len(set(sizes)) == 1:
        return stacked.sum(), sizes[0]
    return stacked @ torch.tensor(sizes, dtype=stacked.dtype, device=stacked.device), 1
