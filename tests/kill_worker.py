"""Started by tests/engine/test_crash_safety.py: `python -m nnlab.commands.train OVERRIDE...`, run in this process
after installing ONE patch that SIGKILLs the process at a chosen moment. A real SIGKILL: no
`finally`, no signal handler, no atexit hook runs, so the run's folder is left exactly as a crash,
an OOM kill or a pulled plug would leave it.

    python tests/kill_worker.py MOMENT OVERRIDE...

MOMENT is `name[:arg[:arg]]`, counted from 1 over the whole process (a sweep's trials included):

    before_step:N         before the N-th training step (task.training_step) runs
    after_step:N          after the N-th training step's update, before the loop counts it
    validation:N:B        inside the N-th validation (task.evaluate), after B of its batches
    in_test:B             inside the test evaluation (evaluate(detailed=True)), after B batches
    before_checkpoint:E   after epoch E's validation, as ModelCheckpoint.on_epoch_end starts
    save_half:N           in the background writer, the N-th checkpoint write: half its bytes
                          on disk in its .tmp file (fsync'ed), not yet renamed
    before_link:N         the N-th extra path of a write (best.ckpt after last.ckpt, last.ckpt
                          after a step snapshot): the file is renamed, the link not started
    in_link:N             the N-th extra path: hard-linked to its .tmp name, not yet renamed
    log_metrics:N         right after the N-th TensorBoardLogger.log_metrics call
    metrics_json          half of metrics.json written
"""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import torch

import nnlab.commands.train
import nnlab.runs.pipeline
from nnlab.engine import checkpoint
from nnlab.engine.callbacks import ModelCheckpoint
from nnlab.engine.tensorboard import TensorBoardLogger
from nnlab.tasks.supervised import Supervised


def die(settle: bool = True) -> NoReturn:
    """SIGKILL this process. With `settle` (a kill in the training thread), first let a
    checkpoint write in flight on the background thread finish: the writer runs a few steps
    behind training, so without it which files a kill leaves would depend on the machine's
    speed. (A kill inside a write is what save_half, before_link and in_link are for.)"""
    if settle:
        for thread in threading.enumerate():
            if thread.name == "ckpt" and thread is not threading.current_thread():
                thread.join()
    sys.stdout.flush()  # (only so the test can show what the run printed; nothing else is tidied)
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable: SIGKILL cannot be caught")


class Count:
    """`tick()` is True on the n-th call."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def tick(self) -> bool:
        self.calls += 1
        return self.calls == self.n


def dying_after(batches: Iterable[Any], b: int) -> Iterator[Any]:
    """The batches, the process killed when the (b+1)-th is asked for."""
    for i, batch in enumerate(batches):
        if i == b:
            die()
        yield batch


def before_step(n: str) -> None:
    count, step = Count(int(n)), Supervised.training_step

    def patched(self: Supervised, batch: Any, update: bool = True) -> Any:
        if count.tick():
            die()
        return step(self, batch, update)

    Supervised.training_step = patched


def after_step(n: str) -> None:
    count, step = Count(int(n)), Supervised.training_step

    def patched(self: Supervised, batch: Any, update: bool = True) -> Any:
        out = step(self, batch, update)
        if count.tick():
            die()
        return out

    Supervised.training_step = patched


def validation(n: str, b: str) -> None:
    count, evaluate = Count(int(n)), Supervised.evaluate

    def patched(self: Supervised, batches: Iterable[Any], detailed: bool = False) -> dict[str, float]:
        if not detailed and count.tick():
            batches = dying_after(batches, int(b))
        return evaluate(self, batches, detailed=detailed)

    Supervised.evaluate = patched


def in_test(b: str) -> None:
    evaluate = Supervised.evaluate

    def patched(self: Supervised, batches: Iterable[Any], detailed: bool = False) -> dict[str, float]:
        return evaluate(self, dying_after(batches, int(b)) if detailed else batches, detailed=detailed)

    Supervised.evaluate = patched


def before_checkpoint(epoch: str) -> None:
    on_epoch_end = ModelCheckpoint.on_epoch_end

    def patched(self: ModelCheckpoint, trainer: Any, metrics: dict[str, float]) -> None:
        if trainer.epoch == int(epoch):
            die()
        on_epoch_end(self, trainer, metrics)

    ModelCheckpoint.on_epoch_end = patched


def save_half(n: str) -> None:
    count, save = Count(int(n)), checkpoint.save_checkpoint

    def patched(state: dict[str, Any], path: str | Path) -> Path:
        if not count.tick():
            return save(state, path)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        path = Path(path)
        with open(path.with_name(f"{path.name}.{os.getpid()}.tmp"), "wb") as f:  # save_checkpoint's temporary file
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())  # the half-written file really is on disk
        die(settle=False)

    checkpoint.save_checkpoint = patched  # what CheckpointWriter calls: the module attribute, looked up per call


def before_link(n: str) -> None:
    count, link = Count(int(n)), checkpoint._link_or_copy

    def patched(source: Path, path: Path) -> None:
        if count.tick():
            die(settle=False)
        link(source, path)

    checkpoint._link_or_copy = patched


def in_link(n: str) -> None:
    count, link = Count(int(n)), os.link

    def patched(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        link(src, dst, *args, **kwargs)
        if count.tick():
            die(settle=False)

    os.link = patched  # checkpoint._link_or_copy calls os.link, then os.replace


def log_metrics(n: str) -> None:
    count, log = Count(int(n)), TensorBoardLogger.log_metrics

    def patched(self: TensorBoardLogger, metrics: dict[str, float], step: int) -> None:
        log(self, metrics, step)
        if count.tick():
            die()

    TensorBoardLogger.log_metrics = patched


def metrics_json() -> None:
    write_json = nnlab.runs.pipeline.write_json

    def patched(data: dict[str, Any], path: str | Path) -> Path:
        path = Path(path)
        if path.name != "metrics.json":
            return write_json(data, path)
        text = write_json(data, path).read_text()
        path.write_text(text[: len(text) // 2])
        die()

    nnlab.runs.pipeline.write_json = patched


MOMENTS: dict[str, Callable[..., None]] = {
    f.__name__: f
    for f in (
        before_step,
        after_step,
        validation,
        in_test,
        before_checkpoint,
        save_half,
        before_link,
        in_link,
        log_metrics,
        metrics_json,
    )
}


def main(moment: str, overrides: list[str]) -> None:
    name, *args = moment.split(":")
    MOMENTS[name](*args)
    sys.argv = ["nnlab.commands.train", *overrides]
    nnlab.commands.train.cli()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
