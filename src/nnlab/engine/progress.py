"""A rich progress bar over each epoch's steps, showing the latest logged loss."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer


class RichProgress:
    """Live progress bar. The loss shown is the mean over the last logging interval, read when
    the engine logs (`trainer.log_every_n_steps`), so the bar adds no device synchronisation.
    """

    def __init__(self, refresh_per_second: int = 8) -> None:
        self.refresh_per_second = refresh_per_second
        self._progress: Progress | None = None
        self._bar = None
        self._next_update = 0.0  # time.monotonic() of the next update of the bar

    def on_fit_start(self, trainer: Trainer) -> None:
        from nnlab.console import console

        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[loss]}"),
            console=console(),
            refresh_per_second=self.refresh_per_second,
            transient=True,
        )
        self._progress.start()

    def on_train_batch_end(self, trainer: Trainer) -> None:
        if self._bar is None or trainer.epoch_step == 1:
            epoch = f"{trainer.epoch + 1}/{trainer.max_epochs}"
            if self._bar is None:
                self._bar = self._progress.add_task("train", total=trainer.steps_per_epoch, epoch=epoch, loss="")
            else:  # the same bar, from zero (its clock too)
                self._progress.reset(self._bar, total=trainer.steps_per_epoch, epoch=epoch, loss="")
            self._next_update = 0.0
        # The bar redraws refresh_per_second times a second: updating it on every step of a fast
        # model would cost more than the step's own bookkeeping, so it is updated twice as often
        # as it redraws, and at the epoch's last step.
        now = time.monotonic()
        if now < self._next_update and trainer.epoch_step != trainer.steps_per_epoch:
            return
        self._next_update = now + 0.5 / self.refresh_per_second
        loss = trainer.last_step_metrics.get("loss")
        self._progress.update(self._bar, completed=trainer.epoch_step, loss="" if loss is None else f"loss {loss:.4f}")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._bar = None
