"""The progress bar: one bar reused across epochs, complete at each epoch's end, updated at most
twice per redraw however fast the steps are."""

from __future__ import annotations

from types import SimpleNamespace

from nnlab.engine.progress import RichProgress


def test_the_bar_is_complete_at_each_epoch_end_and_updated_sparingly(monkeypatch) -> None:
    bar = RichProgress(refresh_per_second=8)
    trainer = SimpleNamespace(epoch=0, max_epochs=2, epoch_step=0, steps_per_epoch=500, last_step_metrics={})
    bar.on_fit_start(trainer)
    updates = []
    original = bar._progress.update
    monkeypatch.setattr(bar._progress, "update", lambda *a, **k: (updates.append(k), original(*a, **k)))
    try:
        for epoch in range(2):
            trainer.epoch = epoch
            for step in range(1, 501):  # 500 steps in far less than 1/16 s each
                trainer.epoch_step = step
                trainer.last_step_metrics = {"loss": 1.0 / step}
                bar.on_train_batch_end(trainer)
            task = bar._progress.tasks[0]
            assert len(bar._progress.tasks) == 1  # the same bar, reset for the epoch
            assert task.completed == 500 and task.total == 500
            assert task.fields["epoch"] == f"{epoch + 1}/2" and task.fields["loss"] == "loss 0.0020"
        assert 2 <= len(updates) < 100  # the last step of each epoch, and a few timed ones
    finally:
        bar.on_fit_end(trainer)
