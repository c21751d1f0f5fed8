"""EarlyStopping: when a run stops, what it says, and that a resumed run does not train past it."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import Run, epoch_curve, train_tiny
from nnlab.engine.callbacks import EarlyStopping
from nnlab.errors import ConfigValueError

# Nothing after the first epoch can improve val/loss by more than 10, so the run must stop after
# 1 + patience epochs of the 10 it was given.
NEVER_IMPROVES = (
    "trainer.device=cpu",
    "callbacks=early_stopping",
    "callbacks.progress=null",
    "callbacks.health=null",
    "callbacks.early_stopping.patience=2",
    "callbacks.early_stopping.min_delta=10",
    "trainer.max_epochs=10",
)


def scalars(run_dir: Path, tag: str = "val/loss") -> list[tuple[int, float]]:
    """(step, value) of an epoch scalar of the run, logged at step = epoch."""
    return [(e.step, e.value) for e in epoch_curve(run_dir, tag)]


def val_steps(run_dir: Path, tag: str = "val/loss") -> list[int]:
    return [step for step, _ in scalars(run_dir, tag)]


def feed(stopper: EarlyStopping, scores: list[float], monitor: str = "val/loss") -> SimpleNamespace:
    """Validate `scores` epoch by epoch (epoch = completed epochs, as the trainer counts), stopping
    as the trainer would; returns the fake trainer, with the epoch it stopped after."""
    trainer = SimpleNamespace(epoch=0, should_stop=False, stop_reason="")
    for score in scores:
        trainer.epoch += 1
        stopper.on_validation_end(trainer, {monitor: score, "train/loss": 0.0})
        if trainer.should_stop:
            break
    return trainer


def test_a_run_that_stops_improving_stops_after_patience_epochs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="nnlab"):
        run = train_tiny(NEVER_IMPROVES, tmp_path)
    last = run.checkpoint("last")
    assert last["epoch"] == 3 and last["global_step"] == 3 * 2
    assert last["should_stop"] is True
    reason = last["stop_reason"]
    assert reason.startswith("early stopping: val/loss has not improved by more than 10 for 2 epochs")
    assert "at epoch 1;" in reason and "patience 2" in reason
    logged = scalars(run.dir)
    assert [step for step, _ in logged] == [1, 2, 3]
    assert last["callbacks"]["EarlyStopping"] == {"best_score": pytest.approx(logged[0][1]), "best_epoch": 1, "wait": 2}
    stopped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Stopped after")]
    assert stopped == [f"Stopped after epoch 3 of 10: {reason}"]
    assert "test/loss" in run.metrics  # the run still tests and writes its metrics
    assert (run.dir / "metrics.json").is_file()


def test_mode_max_on_accuracy_stops_too(tmp_path: Path) -> None:
    """Accuracy cannot rise by more than 1, so with mode=max and min_delta=1 only the first epoch
    counts as an improvement: 1 + patience epochs."""
    overrides = [
        *NEVER_IMPROVES,
        "callbacks.early_stopping.monitor=val/acc",
        "callbacks.early_stopping.mode=max",
        "callbacks.early_stopping.min_delta=1",
        "callbacks.early_stopping.patience=1",
    ]
    run = train_tiny(overrides, tmp_path)
    last = run.checkpoint("last")
    assert last["epoch"] == 2 and last["should_stop"] is True
    assert "val/acc" in last["stop_reason"]
    assert last["callbacks"]["EarlyStopping"]["best_score"] > 0.0  # mode max starts from -inf
    assert val_steps(run.dir, "val/acc") == [1, 2]


def test_an_improvement_smaller_than_min_delta_does_not_reset_patience() -> None:
    stopper = EarlyStopping(monitor="val/loss", mode="min", patience=2, min_delta=0.1)
    # 1.0 improves on inf; 0.95 and 0.92 are better but by less than 0.1 of the best: 2 waits.
    trainer = feed(stopper, [1.0, 0.95, 0.92, 0.5, 0.4])
    assert trainer.epoch == 3 and trainer.should_stop
    assert (stopper.best_score, stopper.best_epoch, stopper.wait) == (1.0, 1, 2)
    assert trainer.stop_reason == (
        "early stopping: val/loss has not improved by more than 0.1 for 2 epochs (best 1.0000 at epoch 1; patience 2)"
    )


def test_an_improvement_larger_than_min_delta_resets_patience() -> None:
    stopper = EarlyStopping(monitor="val/loss", mode="min", patience=2, min_delta=0.1)
    trainer = feed(stopper, [1.0, 0.95, 0.85, 0.8, 0.79, 0.1])  # 0.85 < 1.0 - 0.1: a new best
    assert trainer.epoch == 5 and trainer.should_stop
    assert (stopper.best_score, stopper.best_epoch) == (0.85, 3)
    assert "best 0.8500 at epoch 3" in trainer.stop_reason


def test_min_delta_zero_counts_any_strict_improvement() -> None:
    stopper = EarlyStopping(monitor="val/loss", patience=1)
    trainer = feed(stopper, [1.0, 0.999, 0.998, 0.998, 0.1])  # equal is not better
    assert trainer.epoch == 4 and (stopper.best_score, stopper.best_epoch) == (0.998, 3)


def test_mode_max_and_min_delta() -> None:
    stopper = EarlyStopping(monitor="val/acc", mode="max", patience=2, min_delta=0.01)
    trainer = feed(stopper, [0.5, 0.6, 0.605, 0.62, 0.621, 0.6], monitor="val/acc")
    # 0.5 (best), 0.6 (best), 0.605 (+0.005: wait 1), 0.62 (+0.02: best), 0.621 (wait 1), 0.6 (wait 2)
    assert trainer.epoch == 6 and trainer.should_stop
    assert (stopper.best_score, stopper.best_epoch) == (0.62, 4)
    assert "val/acc has not improved by more than 0.01 for 2 epochs" in trainer.stop_reason


def test_state_round_trip_continues_the_count() -> None:
    first = EarlyStopping(patience=3)
    feed(first, [1.0, 1.5, 1.2])
    second = EarlyStopping(patience=3)
    second.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(epoch=3, should_stop=False, stop_reason="")
    trainer.epoch += 1
    second.on_validation_end(trainer, {"val/loss": 1.1})  # the third epoch without improvement
    assert trainer.should_stop and second.wait == 3


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"patience": 0}, "callbacks.early_stopping.patience"),
        ({"min_delta": -0.1}, "callbacks.early_stopping.min_delta"),
        ({"mode": "maximum"}, "callbacks.early_stopping.mode"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=key):
        EarlyStopping(**kwargs)


def test_a_misspelled_monitor_suggests_the_metric(tmp_path: Path) -> None:
    with pytest.raises(ConfigValueError) as info:
        train_tiny([*NEVER_IMPROVES, "callbacks.early_stopping.monitor=val/los"], tmp_path)
    message = str(info.value)
    assert message.startswith("callbacks.early_stopping.monitor='val/los' is not a metric of this run.")
    assert "Did you mean 'val/loss'?" in message
    assert "val/acc, val/loss" in message  # the choices


def test_resume_after_an_early_stop_trains_no_further(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = train_tiny(NEVER_IMPROVES, tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with caplog.at_level(logging.INFO, logger="nnlab"):
        resumed: Run = train_tiny([*NEVER_IMPROVES, "trainer.resume=auto"], tmp_path)
    assert last.read_bytes() == before  # no epoch ran, so no checkpoint was rewritten
    state = torch.load(last, weights_only=True)
    assert state["epoch"] == 3 and state["global_step"] == 6
    assert val_steps(tmp_path) == [1, 2, 3]
    assert any(r.getMessage().startswith("Stopped after epoch 3 of 10: early stopping") for r in caplog.records)
    assert not any(r.getMessage().startswith("epoch ") for r in caplog.records)  # no epoch line
    for key in ("val/loss", "val/acc", "test/loss"):
        assert resumed.metrics[key] == pytest.approx(first.metrics[key])


@pytest.mark.parametrize(
    ("mode", "goal", "scores", "stopped_after"),
    [
        ("max", 500.0, [100.0, 300.0, 499.9, 500.0, 500.0], 4),  # at the goal (>=), not a hair before
        ("max", 500.0, [100.0, 520.0], 2),  # past it
        ("min", 0.1, [0.5, 0.2, 0.1000001, 0.1, 0.05], 4),  # min: at or below
        ("min", 0.1, [0.5, 0.02], 2),
    ],
)
def test_a_stopping_threshold_stops_once_the_goal_is_reached(
    mode: str, goal: float, scores: list[float], stopped_after: int
) -> None:
    stopper = EarlyStopping(monitor="val/score", mode=mode, patience=100, stopping_threshold=goal)
    trainer = feed(stopper, scores, monitor="val/score")
    assert trainer.should_stop and trainer.epoch == stopped_after
    reached = scores[stopped_after - 1]
    assert trainer.stop_reason == (
        f"val/score = {reached:.4f} reached callbacks.early_stopping.stopping_threshold={goal:g}"
    )


@pytest.mark.parametrize("mode", ["max", "min"])
def test_without_a_goal_or_short_of_it_only_patience_stops(mode: str) -> None:
    improving = [float(k) for k in range(1, 8)] if mode == "max" else [float(-k) for k in range(1, 8)]
    for goal in (None, 1e9 if mode == "max" else -1e9):
        stopper = EarlyStopping(monitor="val/score", mode=mode, patience=2, stopping_threshold=goal)
        assert not feed(stopper, improving, monitor="val/score").should_stop
