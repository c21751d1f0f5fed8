"""A rich progress bar over each epoch's steps, showing the latest logged loss."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

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
        self._start = 0.0  # time.monotonic() at the start of training

    def on_fit_start(self, trainer: Trainer) -> None:
        from nnlab.cli.console import console

        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[progress.elapsed]{task.fields[elapsed]}"),  # the run's time, set with each update
            TextColumn("{task.fields[loss]}"),
            console=console(),
            refresh_per_second=self.refresh_per_second,
            transient=True,
        )
        self._progress.start()
        self._start = time.monotonic()

    def on_train_batch_end(self, trainer: Trainer) -> None:
        # The bar redraws refresh_per_second times a second: updating it on every step (or every
        # epoch) of a fast model would cost more than the step's own bookkeeping, so it is
        # updated twice as often as it redraws, with the step (and epoch) training is at then.
        now = time.monotonic()
        if now < self._next_update:
            return
        self._next_update = now + 0.5 / self.refresh_per_second
        epoch = f"{trainer.epoch + 1}/{trainer.max_epochs}"
        loss = trainer.last_step_metrics.get("loss")
        shown = "" if loss is None else f"loss {loss:.4f}"
        elapsed = str(timedelta(seconds=int(now - self._start)))  # (h:mm:ss, as rich's TimeElapsedColumn)
        if self._bar is None:  # one bar for the whole run
            self._bar = self._progress.add_task("train", total=None, epoch="", loss="", elapsed="")
        # (`update`, not rich's `reset`, which redraws the bar at once: a cost at every epoch)
        self._progress.update(
            self._bar,
            total=trainer.steps_per_epoch,
            completed=trainer.epoch_step,
            epoch=epoch,
            loss=shown,
            elapsed=elapsed,
        )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._bar = None
