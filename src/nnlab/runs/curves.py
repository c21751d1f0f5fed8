"""Training curves read back from runs' TensorBoard event files, and the figure `nnlab-report`
draws of them: the trials of a comparison overlaid, one panel per scalar.

    nnlab-report outputs/multiruns/<date>_<time> --curves train/loss,val/loss

A tag names one scalar (`val/loss`): one panel, one line per trial. A tag with `*`
(`health/grad_norm/*`) matches several: one panel per trial, one line per matching scalar, so
per-layer quantities (gradient norms from the first layer to the last) read side by side.

Values are read with TensorBoard's own reader (`EventAccumulator`), the x axis is the step each
value was logged at: the epoch for epoch metrics (`val/loss`), the optimizer step for step
metrics (`train/loss_step`, `health/...`).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from pathlib import Path

Series = tuple[list[int], list[float]]  # (steps, values)


def read_scalars(run_dir: Path, patterns: Sequence[str]) -> dict[str, Series]:
    """Every scalar of the run whose tag matches one of `patterns`, as (steps, values) in step
    order; {} when the run has no TensorBoard folder (a trial that failed before logging).

    The event files are in the run folder (in `tensorboard/` for runs written before they moved),
    the epoch curves in its runs `train`, `val` (and `baseline`) as `epoch/<name>` (so TensorBoard
    overlays them, see `TensorBoardLogger.log_epoch_metrics`); they are named here as in
    metrics.json: `train/<name>`, `val/<name>`, `baseline/<name>`."""
    folder = run_dir / "tensorboard" if (run_dir / "tensorboard").is_dir() else run_dir
    if not any(folder.glob("events.out.tfevents*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from nnlab.engine.tensorboard import use_fast_crc32c

    use_fast_crc32c()  # the reader checks every record's checksum: in C, not Python

    out: dict[str, Series] = {}
    subs = [("", lambda tag: tag)] + [(split, _from_epoch(split)) for split in ("train", "val", "baseline")]
    for sub, rename in subs:
        if not (folder / sub).is_dir():
            continue
        reader = EventAccumulator(str(folder / sub), size_guidance={"scalars": 0})  # 0: keep every value
        reader.Reload()
        for tag in reader.Tags().get("scalars", []):
            name = rename(tag)
            if name and any(fnmatch.fnmatchcase(name, p) for p in patterns):
                events = {e.step: e.value for e in reader.Scalars(tag)}  # a resumed run rewrites steps: last wins
                steps = sorted(events)
                out[name] = (steps, [events[s] for s in steps])
    return out


def _from_epoch(split: str):
    """`epoch/<name>` of the run `split` -> `<split>/<name>`; other tags are not its curves."""
    return lambda tag: f"{split}/{tag.removeprefix('epoch/')}" if tag.startswith("epoch/") else None


def x_label(tag: str) -> str:
    if tag.startswith("rollout/"):  # reinforcement learning's episodes (nnlab.engine.callbacks.EpisodeLog)
        return "environment steps"
    return "step" if tag.endswith("_step") or tag.startswith(("health/", "gradcheck/")) else "epoch"


def plot_curves(path: Path, runs: Sequence[tuple[str, Path]], patterns: Sequence[str], title: str = "") -> bool:
    """Draw `patterns` for the runs, given as (label, run folder), into `path`. Returns False
    (and writes nothing) when no run logged any of them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    read = [(label, read_scalars(folder, patterns)) for label, folder in runs]
    # Panels: a plain tag is one panel across the runs; a wildcard is one panel per run.
    panels: list[tuple[str, list[tuple[str, Series]]]] = []
    for pattern in patterns:
        if "*" in pattern or "?" in pattern:
            for label, scalars in read:
                lines = [(tag, s) for tag, s in scalars.items() if fnmatch.fnmatchcase(tag, pattern)]
                if lines:
                    prefix = pattern.split("*")[0]
                    panels.append((f"{pattern}: {label}", [(tag.removeprefix(prefix), s) for tag, s in lines]))
        else:
            lines = [(label, scalars[pattern]) for label, scalars in read if pattern in scalars]
            if lines:
                panels.append((pattern, lines))
    if not panels:
        return False
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.5 * rows), squeeze=False)
    for ax, (name, lines) in zip(axes.flat, panels):
        # Up to 10 lines: the default colours; more (a width sweep, every layer of a deep net): a
        # colormap in order, so the first and last trials (or layers) never share a colour.
        colours = plt.cm.viridis([i / max(len(lines) - 1, 1) for i in range(len(lines))]) if len(lines) > 10 else None
        for i, (label, (steps, values)) in enumerate(lines):
            colour = None if colours is None else colours[i]
            ax.plot(steps, values, label=label, color=colour, marker="o" if len(steps) <= 12 else None, markersize=3)
        finite = [v for _, (_, values) in lines for v in values if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) >= 100:
            ax.set_yscale("log")  # losses of different optimizers, gradient norms of different layers
        tag = name.split(":")[0]
        ax.set(title=name, xlabel=x_label(tag), ylabel=tag.split("/")[-1] if "*" not in tag else tag)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
