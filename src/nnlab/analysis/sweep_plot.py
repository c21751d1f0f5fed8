"""report.png of `nnlab-report`: a sweep's metric against each hyperparameter it swept, one
panel per hyperparameter, the best trial starred. (The trials' training curves overlaid,
curves.png, are `nnlab.runs.curves`.)
"""

from __future__ import annotations

import math
from pathlib import Path

from nnlab.runs.sweepfolder import Trial


def plot(path: Path, trials: list[Trial], swept: list[str], metric: str) -> None:
    """The metric against each swept hyperparameter, one panel each (the trial number when none):
    numbers on a log axis when they span two decades or more, other values one column per choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if math.isfinite(t.metrics.get(metric, math.nan))]  # best first
    keys = swept or ["trial"]
    cols = min(3, len(keys))
    rows_ = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        labels = [t.name if key == "trial" else (t.value(key) or "(default)") for t in done]
        y = [t.metrics[metric] for t in done]
        numbers = [as_number(v) for v in labels]
        if key != "trial" and all(n is not None for n in numbers):
            ax.scatter(numbers, y, alpha=0.7)
            positive = [n for n in numbers if n > 0]
            if len(positive) == len(numbers) and max(positive) / min(positive) >= 100:
                ax.set_xscale("log")
            best_x = numbers[0]
        else:
            choices = sorted(set(labels), key=lambda v: (as_number(v) is None, as_number(v) or 0, v))
            xs = strip(labels, choices)
            ax.scatter(xs, y, alpha=0.7)
            ax.set_xticks(range(len(choices)), choices, rotation=30 if len(choices) > 4 else 0)
            ax.set_xlim(-0.5, len(choices) - 0.5)
            best_x = xs[0]
        ax.scatter([best_x], [y[0]], marker="*", s=180, color="tab:red", label="best", zorder=3)
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    axes.flat[0].legend()
    left_out = len(trials) - len(done)
    fig.suptitle(
        f"{metric} of {len(done)} trials" + (f" ({left_out} failed or unfinished, not shown)" if left_out else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strip(labels: list[str], choices: list[str]) -> list[float]:
    """x of each point of a strip plot: its choice's column, the points of a column spread across
    the middle 40% of its width so that equal values stay visible."""
    counts = {c: labels.count(c) for c in choices}
    seen = dict.fromkeys(choices, 0)
    xs = []
    for label in labels:
        n, j = counts[label], seen[label]
        seen[label] += 1
        xs.append(choices.index(label) + (0.4 * (j / (n - 1) - 0.5) if n > 1 else 0.0))
    return xs


def as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
