"""A run's TensorBoard event files, read back the way TensorBoard reads them.

The shared `digits_run`: 2 epochs of 20 steps (40 optimizer steps), step scalars every 3 steps.
"""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers import Run

EPOCHS, STEPS_PER_EPOCH, LOG_EVERY = 2, 20, 3
STEP_TAGS = ("train/loss_step", "train/acc_step", "lr", "perf/samples_per_s")
EPOCH_TAGS = ("train/loss", "train/acc", "val/loss", "val/acc", "perf/epoch_s")
TEST_TAGS = ("test/loss", "test/acc")


@pytest.fixture(scope="module")
def events(digits_run: Run) -> EventAccumulator:
    files = list((digits_run.dir / "tensorboard").glob("events.out.tfevents*"))
    assert len(files) == 1, files
    accumulator = EventAccumulator(str(digits_run.dir / "tensorboard"))
    accumulator.Reload()
    return accumulator


def steps(events: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in events.Scalars(tag)]


def test_the_expected_tags_are_there(events: EventAccumulator) -> None:
    assert set(STEP_TAGS + EPOCH_TAGS + TEST_TAGS) <= set(events.Tags()["scalars"])


def test_step_scalars_every_log_interval(events: EventAccumulator) -> None:
    expected = list(range(LOG_EVERY, EPOCHS * STEPS_PER_EPOCH + 1, LOG_EVERY))  # 3, 6, ..., 39
    assert len(expected) == EPOCHS * STEPS_PER_EPOCH // LOG_EVERY
    for tag in ("train/loss_step", "train/acc_step", "perf/samples_per_s"):
        assert steps(events, tag) == expected, tag
    assert all(0.0 <= e.value <= 1.0 for e in events.Scalars("train/acc_step"))
    assert all(e.value > 0 for e in events.Scalars("perf/samples_per_s"))


def test_lr_is_a_step_scalar(events: EventAccumulator) -> None:
    assert steps(events, "lr") == list(range(LOG_EVERY, EPOCHS * STEPS_PER_EPOCH + 1, LOG_EVERY))


def test_lr_values(events: EventAccumulator, digits_run: Run) -> None:
    values = [e.value for e in events.Scalars("lr")]
    assert values == pytest.approx([digits_run.cfg.optimizer.lr] * len(values))


def test_epoch_scalars_at_the_epoch_number(events: EventAccumulator, digits_run: Run) -> None:
    for tag in EPOCH_TAGS:
        assert steps(events, tag) == [1, 2], tag
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):  # the last epoch is the run's result
        assert events.Scalars(tag)[-1].value == pytest.approx(digits_run.metrics[tag], rel=1e-6), tag
    assert all(e.value > 0 for e in events.Scalars("perf/epoch_s"))


def test_test_scalars_match_metrics_json(events: EventAccumulator, digits_run: Run) -> None:
    metrics = json.loads((digits_run.dir / "metrics.json").read_text())
    for tag in TEST_TAGS:
        (point,) = events.Scalars(tag)
        assert point.step == EPOCHS
        # TensorBoard stores float32; metrics.json keeps the float64 the value was read back as.
        assert point.value == pytest.approx(metrics[tag], rel=1e-6, abs=1e-7), tag


def test_epoch_loss_is_the_sample_weighted_mean_of_step_losses(train_run, tmp_path) -> None:
    """wine's 115 training rows in batches of 16 make 7 full batches and one of 3: the epoch's
    train/loss weighs each step's loss by its batch size."""
    run = train_run(["data=wine", "trainer.limit_train_batches=null", "trainer.log_every_n_steps=1"], tmp_path)
    accumulator = EventAccumulator(str(run.dir / "tensorboard"))
    accumulator.Reload()
    step_losses = [e.value for e in accumulator.Scalars("train/loss_step")]
    sizes = [16] * 7 + [3]
    assert len(step_losses) == len(sizes)
    weighted = sum(n * loss for n, loss in zip(sizes, step_losses)) / sum(sizes)
    assert run.metrics["train/loss"] == pytest.approx(weighted, rel=1e-5)


def hparams_plugin(events: EventAccumulator) -> dict[str, HParamsPluginData]:
    return {tag: HParamsPluginData.FromString(c) for tag, c in events.PluginTagToContent("hparams").items()}


def test_hparams_session_records_the_hyperparameters(events: EventAccumulator, digits_run: Run) -> None:
    plugin = hparams_plugin(events)
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(plugin)
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert hparams["data"].string_value == "digits"  # the chosen option of each group
    assert hparams["optimizer"].string_value == "adam"
    assert hparams["optimizer.lr"].number_value == pytest.approx(digits_run.cfg.optimizer.lr)
    assert hparams["trainer.max_epochs"].number_value == EPOCHS
    assert hparams["seed"].number_value == digits_run.cfg.seed
    assert hparams["model.hidden_sizes"].string_value == "[256, 128]"
    assert "trainer.output_dir" not in hparams  # differs between every run: not a hyperparameter


def test_hparams_experiment_lists_the_final_metrics(events: EventAccumulator, digits_run: Run) -> None:
    experiment = hparams_plugin(events)["_hparams_/experiment"].experiment
    assert {m.name.tag for m in experiment.metric_infos} == set(digits_run.metrics)
    assert "optimizer.lr" in {h.name for h in experiment.hparam_infos}
