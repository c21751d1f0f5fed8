"""A run's TensorBoard event files, read back the way TensorBoard reads them.

The shared `digits_run`: 2 epochs of 20 steps (40 optimizer steps), step scalars every 3 steps.
"""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers import Run, epoch_curve

EPOCHS, STEPS_PER_EPOCH, LOG_EVERY = 2, 20, 3
STEP_TAGS = ("train/loss_step", "train/acc_step", "lr", "perf/samples_per_s")
EPOCH_TAGS = ("perf/epoch_s",)  # in the main run; train/* and val/* are curves of their own runs
TEST_TAGS = ("test/loss", "test/acc")


@pytest.fixture(scope="module")
def events(digits_run: Run) -> EventAccumulator:
    files = list(digits_run.dir.glob("events.out.tfevents*"))
    assert len(files) == 1, files
    accumulator = EventAccumulator(str(digits_run.dir))
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
        curve = epoch_curve(digits_run.dir, tag)
        assert [e.step for e in curve] == [1, 2], tag
        assert curve[-1].value == pytest.approx(digits_run.metrics[tag], rel=1e-6), tag
    assert all(e.value > 0 for e in events.Scalars("perf/epoch_s"))


def test_train_and_val_curves_share_their_tags_so_tensorboard_overlays_them(digits_run: Run) -> None:
    """One tag (`epoch/loss`) in two runs (`<run>/train`, `<run>/val`): one chart with
    two lines in Time Series, in the `epoch` group, which sorts before health, hist and perf."""
    tags = {}
    for split in ("train", "val"):
        reader = EventAccumulator(str(digits_run.dir / split))
        reader.Reload()
        tags[split] = set(reader.Tags()["scalars"])
    assert {"epoch/loss", "epoch/acc"} <= tags["train"] & tags["val"]
    assert "epoch/macro_f1" in tags["val"]
    assert all(t.startswith("epoch/") for t in tags["train"] | tags["val"])
    assert "epoch" < min(t.split("/")[0] for t in ("health/x", "hist/x", "lr", "perf/x", "test/x"))


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
    accumulator = EventAccumulator(str(run.dir))
    accumulator.Reload()
    step_losses = [e.value for e in accumulator.Scalars("train/loss_step")]
    sizes = [16] * 7 + [3]
    assert len(step_losses) == len(sizes)
    weighted = sum(n * loss for n, loss in zip(sizes, step_losses)) / sum(sizes)
    assert run.metrics["train/loss"] == pytest.approx(weighted, rel=1e-5)


def hparams_plugin(events: EventAccumulator) -> dict[str, HParamsPluginData]:
    try:
        contents = events.PluginTagToContent("hparams")
    except KeyError:  # no hparams data in these event files
        return {}
    return {tag: HParamsPluginData.FromString(c) for tag, c in contents.items()}


@pytest.fixture(scope="module")
def session(digits_run: Run) -> EventAccumulator:
    """The run's HParams row: its own folder beside the curves (`<run>/hparams`)."""
    accumulator = EventAccumulator(str(digits_run.dir / "hparams"))
    accumulator.Reload()
    return accumulator


def test_the_hparams_row_lists_the_seed_changed_choices_and_the_command_lines_values(
    session: EventAccumulator, digits_run: Run
) -> None:
    plugin = hparams_plugin(session)
    assert set(plugin) == {"_hparams_/session_start_info", "_hparams_/session_end_info"}
    hparams = plugin["_hparams_/session_start_info"].session_start_info.hparams
    assert "optimizer" not in hparams and "model" not in hparams  # train.yaml's own choices: left out
    assert hparams["trainer.max_epochs"].number_value == EPOCHS  # set on the command line
    assert hparams["trainer.log_every_n_steps"].number_value == LOG_EVERY
    assert hparams["seed"].number_value == digits_run.cfg.seed
    assert "optimizer.lr" not in hparams  # the group's own value: named by its choice, not listed
    assert not [k for k in hparams if k.startswith(("hydra", "paths", "callbacks", "logger"))]  # not what it learns


def test_no_run_writes_an_experiment_summary(events: EventAccumulator, session: EventAccumulator) -> None:
    """TensorBoard builds the table from all the sessions it finds (marking the keys that differ)
    only when no run brings its own experiment summary."""
    assert "_hparams_/experiment" not in hparams_plugin(events) | hparams_plugin(session)


def test_the_hparams_metrics_are_the_headline_ones(session: EventAccumulator, digits_run: Run) -> None:
    tags = set(session.Tags()["scalars"])
    assert tags == {k for k in digits_run.metrics if k.count("/") == 1 and k.startswith("val/")}
    assert {"val/acc", "val/loss", "val/macro_f1"} <= tags
    assert not [t for t in tags if t.startswith(("test/recall", "test/precision", "test/f1"))]
    for tag in tags:
        assert session.Scalars(tag)[-1].value == pytest.approx(digits_run.metrics[tag])


def test_the_text_tab_holds_the_command_and_the_resolved_config(events: EventAccumulator) -> None:
    def text(tag: str) -> str:
        (event,) = events.Tensors(f"{tag}/text_summary")
        return event.tensor_proto.string_val[0].decode()

    command = text("run/command")
    assert command.startswith("    nnlab-train ") and "trainer.max_epochs=2" in command
    assert "hydra." not in command  # a rerun gets a folder of its own
    config = text("run/config")
    assert "    optimizer:" in config and "${" not in config  # resolved, as a Markdown code block


def test_per_class_test_metrics_are_one_table_not_a_chart_each(events: EventAccumulator, digits_run: Run) -> None:
    assert not [t for t in events.Tags()["scalars"] if t.count("/") > 1]
    (event,) = events.Tensors("test/per_class/text_summary")
    table = event.tensor_proto.string_val[0].decode().splitlines()
    assert table[0] == "| class | f1 | precision | recall |"
    assert len(table) == 2 + 10  # header, rule, a row per digit
    row = dict(zip(("class", "f1", "precision", "recall"), (c.strip() for c in table[2 + 3].strip("|").split("|"))))
    assert float(row["recall"]) == pytest.approx(digits_run.metrics["test/recall/3"], abs=5e-5)


# --- record checksums: TensorBoard's CRC-32C, computed in C ------------------------------------


def python_masked_crc32c(data: bytes) -> int:
    """TensorBoard's own masked CRC-32C, from its pure-Python CRC (`crc32c`, which nnlab does not
    replace), so the check below does not compare the fast function with itself."""
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_the_fast_checksum_equals_tensorboards() -> None:
    import random

    from nnlab.engine.tensorboard import masked_crc32c

    rng = random.Random(0)
    for n in (0, 1, 3, 8, 100, 1500, 10_000):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert masked_crc32c(data) == python_masked_crc32c(data), n


def test_the_writer_uses_the_fast_checksum(digits_run: Run) -> None:
    from tensorboard.summary.writer import record_writer

    from nnlab.engine.tensorboard import masked_crc32c

    assert record_writer.masked_crc32c is masked_crc32c  # set when a run's writer was made


def test_every_record_of_a_run_has_tensorboards_checksums(digits_run: Run) -> None:
    """Parse the event file's TFRecord framing by hand: length, its checksum, data, its checksum,
    each checked with TensorBoard's Python CRC."""
    import struct

    (path,) = digits_run.dir.glob("events.out.tfevents*")
    raw, offset, records = path.read_bytes(), 0, 0
    while offset < len(raw):
        header = raw[offset : offset + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", raw[offset + 8 : offset + 12])
        data = raw[offset + 12 : offset + 12 + length]
        (data_crc,) = struct.unpack("<I", raw[offset + 12 + length : offset + 16 + length])
        assert header_crc == python_masked_crc32c(header)
        assert data_crc == python_masked_crc32c(data)
        offset += 16 + length
        records += 1
    assert offset == len(raw)
    assert records > EPOCHS * STEPS_PER_EPOCH // LOG_EVERY  # every scalar event, and more


def test_records_are_written_in_the_logging_thread_and_on_disk_at_once(tmp_path) -> None:
    """No writer thread, and a logged value can be read back before any flush or close."""
    import threading

    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    from nnlab.engine.tensorboard import TensorBoardLogger

    before = {t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread)}
    logger = TensorBoardLogger(str(tmp_path))
    logger.log_metrics({"a": 1.5, "b": 2.5}, step=3)
    logger.log_histogram("h", [0.0, 1.0, 1.0, 2.0], step=3)
    assert {t for t in threading.enumerate() if isinstance(t, _AsyncWriterThread)} == before
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("a")] == [(3, 1.5)]
    assert events.Histograms("h")[0].histogram_value.num == 4
    logger.close()


def test_a_histogram_bins_the_finite_values_only(tmp_path) -> None:
    from nnlab.engine.tensorboard import TensorBoardLogger

    nan, inf = float("nan"), float("inf")
    logger = TensorBoardLogger(str(tmp_path))
    logger.log_histogram("mixed", [nan, 1.0, inf, 3.0, 2.0, -inf], step=1)
    logger.log_histogram("plain", [0.5, 0.5, 1.5], step=1)
    logger.log_histogram("none_finite", [nan, inf], step=1)
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert set(events.Tags()["histograms"]) == {"mixed", "plain"}
    mixed = events.Histograms("mixed")[0].histogram_value
    assert (mixed.min, mixed.max, mixed.num, mixed.sum, mixed.sum_squares) == (1.0, 3.0, 3, 6.0, 14.0)
    assert sum(mixed.bucket) == 3
    plain = events.Histograms("plain")[0].histogram_value
    assert (plain.min, plain.max, plain.num, plain.sum, plain.sum_squares) == (0.5, 1.5, 3, 2.5, 2.75)
    assert sum(plain.bucket) == 3 and plain.bucket[0] == 2 and plain.bucket[-1] == 1


def test_a_figure_is_logged_as_the_pixels_tensorboards_add_figure_draws(tmp_path) -> None:
    """`figure_pixels` (what `log_figure` logs) against `torch.utils.tensorboard`'s own drawing of
    the same figure, which imports pyplot; a figure pyplot made is closed by `save_image`."""
    import matplotlib.pyplot as plt
    import numpy as np
    from torch.utils.tensorboard._utils import figure_to_image  # (what SummaryWriter.add_figure calls)

    from nnlab.engine.tensorboard import TensorBoardLogger, figure_pixels, save_image
    from nnlab.tasks.metrics import confusion_figure

    figure = confusion_figure(np.array([[5, 1, 0], [2, 7, 1], [0, 0, 9]]), ["a", "b", "c"])
    ours = figure_pixels(figure)
    theirs = figure_to_image(figure, close=False)  # (3, H, W)
    assert ours.shape == (theirs.shape[1], theirs.shape[2], 3)
    assert np.array_equal(ours, np.moveaxis(theirs, 0, 2))
    assert ours.min() < 100 < 200 < ours.max()  # (dark text and light background: not a blank image)

    pyplot_figure, axes = plt.subplots()
    axes.plot([0, 1], [1, 0])
    logger = TensorBoardLogger(str(tmp_path))
    save_image(pyplot_figure, tmp_path / "p.png", logger, "p", 0)
    logger.close()
    assert plt.get_fignums() == []
