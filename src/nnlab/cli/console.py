"""Console output with rich: the shared console, the config tree and the final metrics table."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.logging import RichHandler
from rich.segment import Segment, Segments
from rich.style import Style
from rich.table import Table

# One console for the log handler, the progress bar and tables, so a log line printed while
# the bar is live appears above it instead of tearing it. Outside a terminal (CI, files) rich
# would wrap at 80 columns; epoch lines are longer, so allow 200 there.
CONSOLE = Console()
if not CONSOLE.is_terminal:
    CONSOLE.width = max(CONSOLE.width, 200)


def console() -> Console:
    return CONSOLE


class LogHandler(RichHandler):
    """The console log handler of every run (configs/hydra/job_logging/rich.yaml): rich's
    RichHandler, with a fast path for INFO and DEBUG lines.

    RichHandler lays each record out as a table (time, level, message) and scans the message
    for numbers, paths and strings to colour, a measurable share of a small model's training
    time when it logs a line per epoch. Lines below WARNING are printed here as ready-made
    segments in the same columns (time, shown once per second; level; message), unwrapped and
    without markup, at a fraction of the cost, the console's lock and the live progress bar's
    hook kept. Warnings and errors, paragraphs that read better wrapped in the message column
    and highlighted, keep RichHandler's layout.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_time = ""
        self._styles: dict[str, Style] = {}  # theme style names -> styles, resolved once

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.exc_info:
            super().emit(record)
            return
        try:
            shown = datetime.fromtimestamp(record.created).strftime("[%x %X]")
            if shown == self._last_time:
                shown = " " * len(shown)
            else:
                self._last_time = shown
            level = record.levelname
            message = self.format(record)
            if "\t" in message:  # tab stops counted from the line's start, as rich's Text does
                indent = len(shown) + 10
                message = (" " * indent + message).expandtabs(8)[indent:]
            line = [
                Segment(shown, self._style("log.time")),
                Segment(" "),
                Segment(level.ljust(8), self._style(f"logging.level.{level.lower()}")),
                Segment(" "),
                Segment(message),
                Segment.line(),
            ]
            self.console.print(Segments(line), soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging's contract: report, never raise
            self.handleError(record)

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.console.get_style(name, default="")
        return style


def print_config_tree(
    cfg: DictConfig, order: Sequence[str] = ("data", "model", "task", "optimizer", "scheduler", "trainer")
) -> None:
    """Print the resolved config as a tree, one branch per top-level group."""
    from rich.syntax import Syntax  # (pygments: off the start-up path of runs that print no tree)
    from rich.tree import Tree

    tree = Tree("config", guide_style="dim")
    keys = [k for k in order if k in cfg] + [k for k in cfg if k not in order and k != "hydra"]
    for key in keys:
        branch = tree.add(f"[bold]{key}")
        node = cfg[key]
        text = OmegaConf.to_yaml(node, resolve=True) if isinstance(node, DictConfig) else str(node)
        branch.add(Syntax(text, "yaml", theme="ansi_dark"))
    CONSOLE.print(tree)


def print_metrics_table(
    metrics: dict[str, float],
    title: str = "final metrics",
    stds: dict[str, float] | None = None,
    network_s: float | None = None,
) -> None:
    """A table of metric values, with a ± column when `stds` (e.g. over cross-validation folds) is
    given. The classical baselines' metrics (`baselines/<name>/...`) are left out of it and shown
    in a second table beside the network's (`print_baselines_table`)."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    if stds is not None:
        table.add_column("±", justify="right")
    for k, v in metrics.items():
        if k.startswith("baselines/"):
            continue
        table.add_row(k, f"{v:.4f}", *([f"{stds[k]:.4f}"] if stds is not None else []))
    CONSOLE.print(table)
    if any(k.startswith("baselines/") for k in metrics):
        print_baselines_table(metrics, network_s, stds)


def print_baselines_table(
    metrics: dict[str, float], network_s: float | None = None, stds: dict[str, float] | None = None
) -> None:
    """The network and each classical baseline as rows: val and test of the metric they share (acc
    for classes, r2 for values), with ± `stds` when given, and the time (the network's fit and
    test, `network_s`; each baseline's fit and scoring). The best test value is bold."""
    from nnlab.analysis.classical import cell, comparison

    metric, rows = comparison(metrics, network_s)
    spreads = comparison(stds)[1] if stds is not None else [None] * len(rows)

    def shown(value: float | None, spread: float | None) -> str:
        return cell(value) + (f" ± {cell(spread)}" if value is not None and spread is not None else "")

    table = Table(title="network vs classical baselines", caption="time: network fit + test; baseline fit + predict")
    table.add_column("model")
    table.add_column(f"val {metric}", justify="right")
    table.add_column(f"test {metric}", justify="right")
    table.add_column("time s", justify="right")
    best = max((r.test for r in rows if r.test is not None), default=None)
    for row, spread in zip(rows, spreads):
        val, test = (shown(row.val, spread and spread.val), shown(row.test, spread and spread.test))
        table.add_row(row.model, val, test, cell(row.seconds, 2), style="bold" if row.test == best else None)
    CONSOLE.print(table)
