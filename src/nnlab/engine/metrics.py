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
    `Accuracy`. `update` only keeps a reference to the step's metrics; `pop` counts the
    accuracies in a few kernels, reads every batch mean and count back in one transfer and sums
    them on the host: one host synchronisation per logging interval, and no device work
    between intervals.
    """

    def __init__(self) -> None:
        self._steps: list[dict[str, torch.Tensor | Accuracy]] = []  # each step's metrics ...
        self._ns: list[int] = []  # ... and its number of samples
        self._base: dict[str, float] = {}  # sums restored from a checkpoint
        self.count = 0

    def update(self, values: dict[str, torch.Tensor | Accuracy], n: int) -> None:
        self._steps.append(values)
        self._ns.append(n)
        self.count += n

    def _windows(self) -> dict[str, tuple[list[torch.Tensor | Accuracy], list[int]]]:
        """Each metric's values over the window, with the sample counts of their steps."""
        windows: dict[str, tuple[list[torch.Tensor | Accuracy], list[int]]] = {}
        for step, n in zip(self._steps, self._ns):
            for key, value in step.items():
                values, sizes = windows.setdefault(key, ([], []))
                values.append(value)
                sizes.append(n)
        return windows

    def _sums(self) -> dict[str, float]:
        """Each metric's sample-weighted sum over the window (plus any restored sum)."""
        windows = self._windows()
        parts = [_window_values(values) for values, _ in windows.values()]
        read = torch.cat(parts).tolist() if parts else []
        sums, i = dict(self._base), 0
        for key, (values, sizes) in windows.items():
            if isinstance(values[0], Accuracy):  # (one value: the count of correct predictions)
                total, i = read[i], i + 1
            else:
                total = sum(v * n for v, n in zip(read[i : i + len(sizes)], sizes))
                i += len(sizes)
            sums[key] = sums.get(key, 0.0) + total
        return sums

    def pop(self) -> tuple[dict[str, float], int]:
        """(means since the last pop, number of samples they cover); resets the window."""
        if not self.count:
            return {}, 0
        sums, count = self._sums(), self.count
        self._steps, self._ns, self._base, self.count = [], [], {}, 0
        return {k: v / count for k, v in sums.items()}, count

    def state_dict(self) -> dict[str, object]:
        """The open window, for a mid-epoch checkpoint: the batch means themselves (so a resumed
        run sums them in the same order, to the same bits) and the accuracies' counts."""
        values, sizes, base = {}, {}, dict(self._base)
        for key, (window, ns) in self._windows().items():
            if isinstance(window[0], Accuracy):  # (an integer: exact however it is split)
                base[key] = base.get(key, 0.0) + float(_window_values(window)[0])
            else:
                values[key], sizes[key] = list(window), list(ns)
        return {"values": values, "sizes": sizes, "base": base, "count": self.count}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self._steps, self._ns = [], []
        if "sums" in state:  # (an older checkpoint: the window's sums)
            self._base = {k: float(v) for k, v in state["sums"].items()}
        else:
            self._base = dict(state["base"])
            for key, window in state["values"].items():  # back into steps, one metric at a time
                for value, n in zip(window, state["sizes"][key]):
                    self._steps.append({key: value})
                    self._ns.append(n)
        self.count = int(state["count"])


class EpochMeans:
    """The epoch's step metrics so far: the open `window`, and the sample-weighted sums
    (`totals`, over `seen` samples) of the windows already read back. The epoch's train/
    metrics are totals / seen; a mid-epoch checkpoint records all three, so that a resumed run
    reports the same epoch metrics."""

    def __init__(self) -> None:
        self.window = RunningMean()  # step metrics since the last read-back
        self.totals: dict[str, float] = {}
        self.seen = 0

    def pop_window(self) -> dict[str, float]:
        """The window's means (one host read-back), their sums added to the epoch's."""
        means, count = self.window.pop()
        for key, v in means.items():
            self.totals[key] = self.totals.get(key, 0.0) + v * count
        self.seen += count
        return means

    def state_dict(self) -> dict[str, object]:
        return {"totals": dict(self.totals), "seen": self.seen, "window": self.window.state_dict()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """`state` may be empty (a checkpoint taken before these were recorded): a fresh epoch."""
        self.totals = dict(state.get("totals", {}))
        self.seen = state.get("seen", 0)
        self.window = RunningMean()
        if state.get("window"):
            self.window.load_state_dict(state["window"])


def _window_values(values: list[torch.Tensor | Accuracy]) -> torch.Tensor:
    """One metric's window as a 1-d float64 tensor to read back: for `Accuracy` one value, the
    number of correct predictions in the window; for batch means, the means themselves (summed
    on the host, weighted by their batch sizes)."""
    if isinstance(values[0], Accuracy):
        scores = torch.cat([v.scores for v in values])
        labels = torch.cat([v.labels for v in values])
        return (scores.argmax(1) == labels).sum().double().view(1)
    return torch.stack(values).double().view(-1)
