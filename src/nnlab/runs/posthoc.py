"""What every command on a trained run (nnlab-eval, -predict, -explain, -attack, -export, ...)
writes into its own run folder, the way nnlab-train does:

    <run>/metrics.json          the command's numbers
    <run>/figures/<name>.png    every figure; also an image in TensorBoard
    <run>/events.out.tfevents.* scalars and images (`tensorboard --logdir outputs`)
    <run>/<name>.md, <name>.csv every table, also printed in the terminal
    <run>/<name>.csv            data too wide to print (Report.csv)
    <run>/status.json           running / completed / failed, with times
    <run>/.hydra/               the command's config and overrides

Each command is a Hydra app with its own primary config (configs/<command>.yaml) that names
`ckpt_path`, and runs its body inside `nnlab.cli.app.guarded`.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nnlab.engine.tensorboard import TensorBoardLogger, save_image
from nnlab.runs.runinfo import run_info, write_json, write_status

log = logging.getLogger(__name__)


class Report:
    """The outputs of one command run in `output_dir` (see the module docstring)."""

    def __init__(self, output_dir: str | Path, cfg: DictConfig | None = None) -> None:
        self.dir = Path(output_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logger = TensorBoardLogger(str(self.dir))
        self.started = time.time()
        if cfg is not None:
            save_record(cfg, self.dir)
        write_status(self.dir, "running", self.started)

    def figure(self, name: str, figure: Any, step: int = 0) -> Path:
        """Save a matplotlib figure (closed after) or a (C, H, W) image tensor in [0, 1] as
        figures/<name>.png and log it to TensorBoard."""
        path = save_image(
            figure, self.dir / "figures" / f"{name}.png", self.logger, name, step, dpi=100, bbox_inches="tight"
        )
        log.info("Saved %s", path)
        return path

    def scalars(self, metrics: dict[str, float], step: int = 0) -> None:
        self.logger.log_metrics(metrics, step)

    def table(self, name: str, rows: Sequence[dict[str, Any]], title: str | None = None) -> Path:
        """Write rows (dicts with the same keys) as <name>.md and <name>.csv and print them."""
        from rich.table import Table

        from nnlab.cli.console import console

        columns = list(rows[0]) if rows else []
        self.csv(name, rows)
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
        path = self.dir / f"{name}.md"
        path.write_text((f"## {title}\n\n" if title else "") + "\n".join(lines) + "\n")
        shown = Table(title=title)
        for c in columns:
            shown.add_column(c, justify="right")
        for row in rows:
            shown.add_row(*(_cell(row[c]) for c in columns))
        console().print(shown)
        return path

    def csv(self, name: str, rows: Sequence[dict[str, Any]]) -> Path:
        """Write rows (dicts with the same keys) as <name>.csv only: data too wide to print, such as
        one attribution per feature and row (`name` may hold a subfolder, e.g. attributions/lime)."""
        path = self.dir / f"{name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
        return path

    def finish(self, metrics: dict[str, float], show: bool = True) -> dict[str, float]:
        """Write metrics.json (and the scalars to TensorBoard), mark the run completed, close."""
        from nnlab.cli.console import print_metrics_table

        metrics = dict(sorted(metrics.items()))
        self.scalars(metrics)
        self.logger.close()
        write_json(metrics, self.dir / "metrics.json")
        write_status(self.dir, "completed", self.started)
        if show and metrics:
            print_metrics_table(metrics)
        log.info("Results in %s", self.dir)
        return metrics


def save_record(cfg: DictConfig, output_dir: Path) -> None:
    """The command's config (resolved) and overrides in .hydra/, and run_info.json."""
    from hydra.core.hydra_config import HydraConfig

    hydra_dir = output_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, hydra_dir / "config.yaml", resolve=True)
    if HydraConfig.initialized():
        OmegaConf.save(HydraConfig.get().overrides.task, hydra_dir / "overrides.yaml")
    write_json(run_info(), output_dir / "run_info.json")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
