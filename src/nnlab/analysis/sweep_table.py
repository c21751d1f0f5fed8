"""The table of a sweep's trials, in the three forms `nnlab-report` gives it: printed in the
terminal (the best N), report.md (every trial, with the command that reruns the best) and
report.csv (every override and every metric, full precision).

The trials come ranked, best first (`nnlab.commands.report.ranked`); a row holds the rank, the trial's
folder, its swept values, the chosen metric columns, its wall time and how it ended. Under the
table, `baseline_line` sets the best trial beside the best classical baseline fitted on its own
split (`baselines/<name>/...` in its metrics.json, `nnlab.analysis.classical`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from rich.table import Table
from rich.text import Text

from nnlab.cli.console import console
from nnlab.runs.sweepfolder import Trial, rerun_command, split_override, swept_keys


def cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def outcome(trial: Trial, width: int = 80) -> str:
    """'completed', or 'failed: <error, truncated>'."""
    if not trial.error:
        return trial.status
    error = " ".join(trial.error.split())
    return f"{trial.status}: {error if len(error) <= width else error[: width - 3] + '...'}"


def rows(trials: list[Trial], swept: list[str], columns: list[str]) -> list[list[str]]:
    """One row of text cells per trial: rank, trial, swept values, metrics, wall time, status."""
    return [
        [
            str(rank),
            t.name,
            *(t.value(k) or "" for k in swept),
            *(cell(t.metrics.get(m)) for m in columns),
            "" if t.wall_s is None else f"{t.wall_s:.1f}",
            outcome(t),
        ]
        for rank, t in enumerate(trials, 1)
    ]


def header(column: str) -> str:
    """A metric column's name in the terminal: a baseline's (`baselines/random_forest/test/acc`)
    as `random_forest test/acc`, which a narrow terminal can wrap at the space."""
    if column.startswith("baselines/") and column.count("/") >= 3:
        name, _, metric = column.removeprefix("baselines/").partition("/")
        return f"{name} {metric}"
    return column


def print_table(trials: list[Trial], swept: list[str], columns: list[str], fixed: list[str], title: str, top: int):
    table = Table(title=title, caption=f"same in every trial: {' '.join(fixed)}" if fixed else None)
    for name in ["#", "trial", *swept]:
        table.add_column(name, style="bold cyan" if name in swept else None)
    for name in columns:
        table.add_column(header(name), justify="right", style="bold" if name == columns[0] else None)
    table.add_column("wall s", justify="right")
    table.add_column("status")
    for t, row in zip(trials[:top], rows(trials[:top], swept, columns)):
        best = row[0] == "1" and t.status == "completed"
        # Text cells: a value from a trial's files is shown as written, never read as rich markup.
        table.add_row(*map(Text, row), style="green" if best else "red" if t.status == "failed" else None)
    console().print(table)
    if len(trials) > top:
        console().print(f"... and {len(trials) - top} more trials in report.md")


def write_markdown(
    path: Path,
    trials: list[Trial],
    swept: list[str],
    columns: list[str],
    fixed: list[str],
    title: str,
    notes: Sequence[str] = (),
) -> None:
    """report.md: the title, what every trial shares, the best trial's command, the table, then
    `notes` (a paragraph each, e.g. the `baseline_line`)."""
    header = ["#", "trial", *swept, *columns, "wall s", "status"]
    lines = [f"# {title}", ""]
    if fixed:
        lines += [f"Same in every trial: `{' '.join(fixed)}`", ""]
    if trials and trials[0].status == "completed":
        lines += ["Best trial, to rerun:", "", f"    {rerun_command(trials[0])}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(trials, swept, columns):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    for note in notes:
        lines += ["", note]
    path.write_text("\n".join(lines) + "\n")


def best_baseline(trial: Trial, metric: str, mode: str) -> tuple[str, float] | None:
    """(name, value) of the classical baseline in `trial`'s metrics that is best by `metric` (a
    split-level metric such as val/loss, read as `baselines/<name>/val/loss`; `mode` min or max),
    or None when the trial has no baseline with a finite value of it."""
    prefix, suffix = "baselines/", f"/{metric}"
    values = {
        key[len(prefix) : -len(suffix)]: value
        for key, value in trial.metrics.items()
        if key.startswith(prefix) and key.endswith(suffix) and key.count("/") == metric.count("/") + 2
    }
    finite = {name: v for name, v in values.items() if math.isfinite(v)}
    if not finite:
        return None
    name = (min if mode == "min" else max)(finite, key=finite.get)
    return name, finite[name]


def baseline_line(trial: Trial, metric: str, mode: str) -> str | None:
    """'best trial 3: val/loss = 0.0812; best baseline on its split: logistic val/loss = 0.1012
    (the network is better)', or None when the trial holds no baseline of `metric`."""
    found = best_baseline(trial, metric, mode)
    value = trial.metrics.get(metric)
    if found is None or value is None or not math.isfinite(value):
        return None
    name, score = found
    better = value < score if mode == "min" else value > score
    verdict = "a tie" if value == score else "the network is better" if better else "the baseline is better"
    return (
        f"best trial {trial.name}: {metric} = {value:.4f}; best baseline on its split: {name} {metric} = {score:.4f} "
        f"({verdict})"
    )


def write_csv(path: Path, trials: list[Trial], metric: str) -> None:
    """Every override and every metric, full precision; one row per trial, best first."""
    keys = swept_keys(trials)
    keys += [k for k in dict.fromkeys(split_override(o)[0] for t in trials for o in t.overrides) if k not in keys]
    metrics = [metric, *sorted({m for t in trials for m in t.metrics} - {metric})]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "status", "wall_s", *keys, *metrics, "error", "run_dir"])
        for rank, t in enumerate(trials, 1):
            values = [repr(t.metrics[m]) if m in t.metrics else "" for m in metrics]
            wall_s = "" if t.wall_s is None else t.wall_s
            overrides = [t.value(k) or "" for k in keys]
            writer.writerow([rank, t.name, t.status, wall_s, *overrides, *values, t.error or "", t.dir])
