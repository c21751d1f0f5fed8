"""The progress bar: one bar reused across epochs, updated at most twice per redraw however
fast the steps (and epochs) are, with the step and epoch training is at."""

from __future__ import annotations

from types import SimpleNamespace

from nnlab.engine import progress
from nnlab.engine.progress import RichProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_bar_follows_training_and_is_updated_sparingly(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress, "time", clock)
    bar = RichProgress(refresh_per_second=8)  # updated at most every 1/16 s
    trainer = SimpleNamespace(epoch=0, max_epochs=3, epoch_step=0, steps_per_epoch=500, last_step_metrics={})
    bar.on_fit_start(trainer)
    updates = []
    original = bar._progress.update
    monkeypatch.setattr(bar._progress, "update", lambda *a, **k: (updates.append(k), original(*a, **k)))
    try:
        for epoch in range(2):
            trainer.epoch = epoch
            for step in range(1, 501):  # 500 steps of 1 ms each: 0.5 s an epoch
                trainer.epoch_step = step
                trainer.last_step_metrics = {"loss": 1.0 / step}
                bar.on_train_batch_end(trainer)
                clock.now += 0.001
            assert len(bar._progress.tasks) == 1  # the same bar for every epoch
            task = bar._progress.tasks[0]
            assert task.total == 500 and task.fields["epoch"] == f"{epoch + 1}/3"
            assert 500 - 63 <= task.completed < 500  # the step of the last update, at most 1/16 s ago
        assert len(updates) == 16  # 1 s of training: 16 updates, not 1000
        # Epochs faster than an update: the bar shows the epoch and step training is at.
        for epoch in range(2, 3):
            trainer.epoch, trainer.epoch_step = epoch, 7
            clock.now += 1
            bar.on_train_batch_end(trainer)
        task = bar._progress.tasks[0]
        assert task.fields["epoch"] == "3/3" and task.completed == 7 and task.fields["loss"] == "loss 0.0020"
        assert task.fields["elapsed"] == "0:00:02"  # the run's clock: 1 s of epochs, then 1 s more
    finally:
        bar.on_fit_end(trainer)
