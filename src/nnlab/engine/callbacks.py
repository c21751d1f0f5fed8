"""Callbacks: small objects the engine notifies at fixed points of the loop.

A callback defines only the hooks it needs; the engine calls a hook when the callback has it:

    on_fit_start(trainer)                      before the first epoch
    on_train_batch_end(trainer)                after every optimizer step (keep it cheap)
    on_epoch_end(trainer, metrics)             after validation; metrics = {"train/..", "val/.."}
    on_interrupt(trainer)                      on Ctrl-C, before the run stops
    on_fit_end(trainer)                        always, last
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

from nnlab.engine.checkpoint import save_checkpoint
from nnlab.errors import ConfigValueError, check_choice, did_you_mean

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer

log = logging.getLogger(__name__)


class ModelCheckpoint:
    """Keep `last.ckpt` (every epoch, and on Ctrl-C) and `best.ckpt` (best `monitor` so far).

    Args:
        dirpath: folder for the files; default `<run dir>/checkpoints`.
        monitor: an epoch metric, e.g. val/loss or val/acc.
        mode: "min" if lower is better (losses), "max" if higher is (accuracy).
        save_last: write last.ckpt, from which a run can be continued.
        save_best: write best.ckpt, which `trainer.test_ckpt=best` evaluates on the test split.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        save_last: bool = True,
        save_best: bool = True,
    ) -> None:
        check_choice("callbacks.model_checkpoint.mode", mode, ["min", "max"])
        self.dirpath = dirpath
        self.monitor = monitor
        self.mode = mode
        self.save_last = save_last
        self.save_best = save_best
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_path: Path | None = None
        self.last_path: Path | None = None

    def _dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.output_dir) / "checkpoints"

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise ConfigValueError(
                f"callbacks.model_checkpoint.monitor='{self.monitor}' is not a metric of this run (by default "
                f"it is the run's optimized_metric).{did_you_mean(self.monitor, metrics)} Set optimized_metric "
                f"(or callbacks.model_checkpoint.monitor) to one of: {', '.join(sorted(metrics))}."
            )
        state = trainer.checkpoint_state()
        if self.save_last:
            self.last_path = save_checkpoint(state, self._dir(trainer) / "last.ckpt")
        score = metrics[self.monitor]
        better = score < self.best_score if self.mode == "min" else score > self.best_score
        if self.save_best and better:
            self.best_score = score
            self.best_path = save_checkpoint(state, self._dir(trainer) / "best.ckpt")

    def on_interrupt(self, trainer: Trainer) -> None:
        if self.save_last:
            self.last_path = save_checkpoint(trainer.checkpoint_state(), self._dir(trainer) / "last.ckpt")
            log.warning("Saved the interrupted run's state to %s", self.last_path)
