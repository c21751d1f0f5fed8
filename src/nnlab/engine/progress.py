"""A rich progress bar over each epoch's steps, showing the latest logged loss."""

from __future__ import annotations

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
            if self._bar is not None:
                self._progress.remove_task(self._bar)
            self._bar = self._progress.add_task(
                "train", total=trainer.steps_per_epoch, epoch=f"{trainer.epoch + 1}/{trainer.max_epochs}", loss=""
            )
        loss = trainer.last_step_metrics.get("loss")
        self._progress.update(self._bar, completed=trainer.epoch_step, loss="" if loss is None else f"loss {loss:.4f}")

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._bar = None
