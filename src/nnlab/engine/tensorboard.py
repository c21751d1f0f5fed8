"""TensorBoard logging: scalars, and the run's hyperparameters with its final metrics."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from nnlab.engine.animation import Animation


class TensorBoardLogger:
    """Writes event files under `save_dir` with `torch.utils.tensorboard.SummaryWriter`.

    `log_hparams` fills TensorBoard's HParams tab: one row per run with its hyperparameters and
    headline metrics, so the trials of a sweep can be sorted and compared there. The row is a
    session of its own, in `hparams_dir`, apart from the curves: TensorBoard takes a session's
    metric columns from every scalar under its folder, so only the headline ones may be there.
    No run writes an experiment summary: TensorBoard then builds the table from all the sessions
    it finds, marks the hyperparameters whose values differ (a sweep's swept keys) and shows
    those first, and each run in a mixed logdir keeps its own metrics.
    """

    def __init__(self, save_dir: str, hparams_dir: str | None = None, flush_secs: int = 10) -> None:
        self.save_dir = Path(save_dir)
        self.hparams_dir = Path(hparams_dir) if hparams_dir else self.save_dir / "hparams"
        self.flush_secs = flush_secs
        self._writer = None
        self._split_writers: dict[str, Any] = {}  # "train", "val": the epoch curves (see log_epoch_metrics)

    @property
    def writer(self):
        """Created on first use, so a run rejected before training writes no event file."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            fast = use_fast_crc32c()
            _after_earlier_event_files(self.save_dir)
            self._writer = SummaryWriter(log_dir=str(self.save_dir), flush_secs=self.flush_secs)
            if fast:  # (with the checksum in Python, the writer thread keeps it off the training thread)
                write_in_this_thread(self._writer)
        return self._writer

    def log_epoch_metrics(self, metrics: dict[str, float], epoch: int) -> None:
        """An epoch's metrics. `train/<name>` and `val/<name>` go to the runs `<save_dir>/train` and
        `<save_dir>/val` as `epoch/<name>` (and a task's `baseline/<name>` to `<save_dir>/baseline`):
        one tag in several runs is how TensorBoard draws train, val and the baseline on one chart,
        and the `epoch` group sorts before `health`, `hist` and `perf`, so a run
        opens on its curves. Other keys (perf/epoch_s) stay in the main run."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        by_split: dict[str, list] = {}
        for key, value in metrics.items():
            split, _, name = key.partition("/")
            if split in ("train", "val", "baseline") and name:
                by_split.setdefault(split, []).append(Summary.Value(tag=f"epoch/{name}", simple_value=float(value)))
        self.log_metrics({k: v for k, v in metrics.items() if k.split("/")[0] not in by_split}, epoch)
        for split, values in by_split.items():
            self.split_writer(split).file_writer.add_summary(Summary(value=values), epoch)

    def split_writer(self, split: str):
        """The writer of the run `<save_dir>/<split>` (train, val, projector), created on first use."""
        if split not in self._split_writers:
            from torch.utils.tensorboard import SummaryWriter

            fast = use_fast_crc32c()
            folder = self.save_dir / split
            _after_earlier_event_files(folder)
            writer = self._split_writers[split] = SummaryWriter(log_dir=str(folder), flush_secs=self.flush_secs)
            if fast:  # as the main writer: each record written as it is logged
                write_in_this_thread(writer)
        return self._split_writers[split]

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at `step`: one event holding them all (what `add_scalar` writes one event
        per tag for; TensorBoard reads both alike), so a log costs one write, not one per tag."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()]
        if values:
            self.writer.file_writer.add_summary(Summary(value=values), step)

    def log_histogram(self, tag: str, values: Any, step: int, bins: int = 64) -> None:
        """The distribution of a tensor's finite values (TensorBoard's Histograms and Distributions
        tabs), in `bins` equal-width buckets between its min and max; nothing when none is
        finite. Binned with `torch.bincount` and written raw: several times faster than
        `add_histogram`'s NumPy binning (and 2x `torch.histc`), which matters for the health
        monitor's cost."""
        import torch

        v = torch.as_tensor(values).detach().float().flatten().cpu()
        if v.numel() == 0:
            return
        lo, hi, total, squares = torch.stack([*torch.aminmax(v), v.sum(), v.dot(v)]).tolist()  # one read-back
        if not (math.isfinite(lo) and math.isfinite(hi)):  # (NaN spreads to min and max): the finite values
            v = v[torch.isfinite(v)]
            if v.numel() == 0:
                return
            lo, hi, total, squares = torch.stack([*torch.aminmax(v), v.sum(), v.dot(v)]).tolist()
        if hi <= lo:  # a constant tensor: one bucket just above it
            hi = lo + max(abs(lo) * 1e-6, 1e-12)
        # Bucket i holds [lo + i w, lo + (i + 1) w); the maximum goes in the last one.
        x = v if hi - lo < 1e38 else v.double()  # (v - lo would overflow float32)
        index = ((x - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
        counts = torch.bincount(index, minlength=bins)
        self.writer.add_histogram_raw(
            tag,
            min=lo,
            max=hi,
            num=v.numel(),
            sum=total,
            sum_squares=squares,
            bucket_limits=torch.linspace(lo, hi, bins + 1)[1:].tolist(),
            bucket_counts=counts.tolist(),
            global_step=step,
        )

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure as an image (TensorBoard's Images tab): what `SummaryWriter.add_figure`
        logs (the figure drawn by the Agg backend, its RGB pixels), without importing pyplot,
        which `add_figure` does to close the figure (a slow import; `save_image` closes it)."""
        self.writer.add_image(tag, figure_pixels(figure), global_step=step, dataformats="HWC")

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """A (C, H, W) tensor with values in [0, 1] (TensorBoard's Images tab)."""
        self.writer.add_image(tag, image, global_step=step, dataformats="CHW")

    def log_gif(self, tag: str, gif: bytes, height: int, width: int, step: int) -> None:
        """An animated GIF (e.g. an agent's episode) in the Images tab, which plays it: an image
        summary holds encoded bytes, and TensorBoard shows them as the browser decodes them."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=gif)
        self.writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def log_embedding(self, tag: str, vectors: Any, labels: list[Any] | None, images: Any, step: int) -> None:
        """Points for the Projector tab: `vectors` (N, D), with a label and a thumbnail
        ((N, C, H, W) in [0, 1], or None) per point."""
        # A run of its own (`<save_dir>/projector`): the Projector writes its files into the run's
        # folder, which is the run folder itself for the main writer.
        self.split_writer("projector").add_embedding(
            vectors, metadata=labels, label_img=images, global_step=step, tag=tag
        )

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """Markdown for the Text tab (e.g. the run's command and its resolved config)."""
        self.writer.add_text(tag, text, global_step=step)

    def log_hparams(self, params: dict[str, Any], metrics: dict[str, float], step: int = 0) -> None:
        """Record `params` as this run's hyperparameters, and its headline metrics among `metrics`
        (see `headline_metrics`) as the values the HParams tab shows, in `hparams_dir`. `step`:
        the run's last epoch, so in Time Series each value sits on the end of its curve."""
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        clean = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in params.items()}
        # Trials are compared on the validation split, as a search picks them (the test split is the
        # final report: metrics.json, nnlab-report, the test/ scalars); its metrics sort first.
        headline = headline_metrics(metrics, splits=("val",))
        _, session_start, session_end = hparams(clean, headline)  # (no experiment summary: see above)
        with SummaryWriter(log_dir=str(self.hparams_dir), flush_secs=self.flush_secs) as session:
            session.file_writer.add_summary(session_start)
            for tag, value in headline.items():
                session.add_scalar(tag, value, step)
            session.file_writer.add_summary(session_end)

    def flush(self) -> None:
        for writer in [self._writer, *self._split_writers.values()]:
            if writer is not None:
                writer.flush()

    def close(self) -> None:
        for writer in [self._writer, *self._split_writers.values()]:
            if writer is not None:
                writer.close()


def headline_metrics(metrics: dict[str, float], splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, float]:
    """The metrics a run is compared by: `<split>/<name>` of `splits` (loss, acc, macro_f1, and the
    task's own: fd, qe, te, mse, ...), finite; per-class ones (`test/recall/3`) stay in
    metrics.json."""
    return {
        k: float(v) for k, v in metrics.items() if k.count("/") == 1 and k.split("/")[0] in splits and math.isfinite(v)
    }


def per_class_table(metrics: dict[str, float]) -> str:
    """The per-class metrics (`test/recall/3`, ...) as one Markdown table, a row per class and a
    column per metric, or "" when there are none."""
    cells: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.count("/") >= 2:
            _, metric, name = key.split("/", 2)
            cells.setdefault(name, {})[metric] = value
    if not cells:
        return ""
    columns = sorted({metric for row in cells.values() for metric in row})
    lines = ["| class | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in cells.items():
        shown = (f"{row[c]:.4f}" if c in row else "" for c in columns)
        lines.append(f"| {name} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def figure_pixels(figure: Any) -> Any:
    """A matplotlib figure drawn by the Agg backend: its (H, W, 3) uint8 RGB pixels, as
    `SummaryWriter.add_figure` draws them (`torch.utils.tensorboard._utils.figure_to_image`),
    less its pyplot import."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3]


def save_image(image: Any, path: Path, logger: TensorBoardLogger | None, tag: str, step: int, **savefig: Any) -> Path:
    """Save `image` as the PNG `path` and, with a logger, log it to TensorBoard's Images tab under
    `tag`: a (C, H, W) tensor with values in [0, 1] (grey when C = 1), or a matplotlib figure
    (saved with `savefig`'s options, then closed if pyplot made it), or an `Animation` (saved as
    a GIF beside it, `path` with the suffix .gif, which is returned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, Animation):
        gif, height, width = image.gif()
        path = path.with_suffix(".gif")
        path.write_bytes(gif)
        if logger is not None:
            logger.log_gif(tag, gif, height, width, step)
        return path
    if hasattr(image, "savefig"):
        image.savefig(path, **savefig)
        if logger is not None:
            logger.log_figure(tag, image, step)
        pyplot = sys.modules.get("matplotlib.pyplot")  # (a figure pyplot made means pyplot is imported)
        if pyplot is not None:
            pyplot.close(image)  # a no-op for a figure made without pyplot (`matplotlib.figure.Figure`)
        return path
    from matplotlib.image import imsave

    pixels = image.detach().float().clamp(0, 1).cpu()
    imsave(path, pixels[0].numpy() if len(pixels) == 1 else pixels.permute(1, 2, 0).numpy(), cmap="gray")
    if logger is not None:
        logger.log_image(tag, pixels, step)
    return path


def masked_crc32c(data: bytes) -> int:
    """The checksum of a TFRecord (the framing of an event file): CRC-32C, rotated and offset
    ("masked") as TensorFlow's record format specifies, computed in C by google-crc32c."""
    import google_crc32c

    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def use_fast_crc32c() -> bool:
    """Make TensorBoard checksum event records with `masked_crc32c` (C) instead of its own
    CRC-32C in pure Python, used when TensorFlow is not installed. The Python checksum holds
    Python's lock for every byte, and a health check's histograms are tens of KB of records, so
    it takes a measurable share of a small model's training time; in C it costs next to
    nothing. The records are the same bytes, and TensorBoard's reader, which checks every
    checksum, reads them; reading (nnlab-report's curves) gets the same speed-up.
    A no-op, returning False, where google-crc32c has no compiled build (it then falls back to
    Python itself) or TensorBoard's modules moved."""
    try:
        import google_crc32c
        from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return False
    if google_crc32c.implementation != "c" or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = masked_crc32c  # what RecordWriter.write calls
    pywrap_tensorflow.masked_crc32c = masked_crc32c  # what the reader (PyRecordReader) calls
    return True


class RecordAppender:
    """Appends TFRecords to an event file in the calling thread, each with one unbuffered write:
    what TensorBoard's `_AsyncWriter` does on a thread of its own, without the thread."""

    def __init__(self, path: str) -> None:
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - open until close()
        self._records = RecordWriter(self._file)

    def write(self, data: bytes) -> None:
        self._records.write(data)

    def flush(self) -> None:
        pass  # every record went to the operating system when it was written

    def close(self) -> None:
        self._file.close()


def write_in_this_thread(writer: Any) -> bool:
    """Make a `SummaryWriter` write its records in the calling thread, each as it is logged.

    TensorBoard's event writer hands every record to a thread of its own through a queue, which
    pays when the record's checksum is slow Python; after `use_fast_crc32c` writing a record is
    cheap, and the hand-over (a lock, waking the thread, passing Python's lock back and forth)
    costs more than the write itself. Each record is one write to the
    operating system, as TensorBoard's writer does it on a local disk, so a process killed
    outright loses nothing already logged and TensorBoard shows a running run up to its last
    value. Uses TensorBoard's private attributes (EventFileWriter._async_writer, its _worker and
    _file_name): where they are missing, the writer is left as it was and False is returned."""
    event_writer = getattr(writer.file_writer, "event_writer", None)
    queued = getattr(event_writer, "_async_writer", None)
    worker = getattr(queued, "_worker", None)
    path = getattr(event_writer, "_file_name", None)
    if worker is None or path is None or not hasattr(worker, "stop"):
        return False
    queued.flush()  # the file's first record (its version), written when it was made
    worker.stop()  # (a shutdown record for the queue: the thread ends)
    queued._closed = True
    event_writer._async_writer = RecordAppender(path)
    return True


def _after_earlier_event_files(folder: Path) -> None:
    """TensorBoard reads a folder's event files in name order, and a name starts with the second it
    was made in, then host, pid and a counter compared as text (".10" before ".9"). A resumed run
    whose file would be made in the same second as the run's earlier one waits for the next second
    (at most 1 s, only then), so its values are read after those it continues."""
    latest = max((int(p.name.split(".")[3]) for p in folder.glob("events.out.tfevents.*") if _stamped(p)), default=0)
    if latest >= int(time.time()):
        time.sleep(latest + 1 - time.time())


def _stamped(path: Path) -> bool:
    parts = path.name.split(".")
    return len(parts) > 3 and parts[3].isdigit()
