"""Callbacks: small objects the engine notifies at fixed points of the loop.

A callback defines only the hooks it needs; the engine calls a hook when the callback has it:

    on_fit_start(trainer)                      before the first epoch (after a resume's restore)
    on_train_batch_start(trainer, batch)       before every training step, with its batch (keep it cheap)
    on_train_batch_end(trainer)                after every training step (keep it cheap)
    on_validation_end(trainer, metrics)        after validation: decide (e.g. trainer.should_stop)
    on_epoch_end(trainer, metrics)             then act (checkpoints); metrics = {"train/..", "val/.."}
    on_interrupt(trainer)                      on Ctrl-C, before the run stops
    on_fit_end(trainer)                        always, last

A callback with state that a resumed run needs (best score so far, patience used) defines
`state_dict()` and `load_state_dict(state)`; the trainer saves it in every checkpoint.
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nnlab.engine.checkpoint import CheckpointWriter, snapshot
from nnlab.errors import ConfigValueError, check_choice, check_range, did_you_mean

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer

log = logging.getLogger(__name__)


class ModelCheckpoint:
    """Checkpoint files: `last.ckpt`, `best.ckpt` and the top-k by `monitor`, and periodic ones.

    - last.ckpt: at the end of an epoch, at most every `save_interval_s` seconds, and always
      after the last epoch, on Ctrl-C or SIGTERM (and every `every_n_train_steps` steps):
      where `trainer.resume=auto` continues from.
    - best.ckpt: the best epoch so far by `monitor`; `trainer.test_ckpt=best` tests it. A new
      best between two writes is kept in memory (a copy of the state) and written with the
      next one, so best.ckpt is never older than the best that last.ckpt records.
    - save_top_k = k > 1 also keeps the k best epochs as `epoch-E-<monitor>-V.ckpt`
      (-1 keeps every epoch), deleting those that drop out of the top k.
    - every_n_epochs / every_n_train_steps: keep `epoch-E.ckpt` / `step-S.ckpt` snapshots as well
      (no `=` in the names, so a path is a plain `ckpt_path=...` override for Hydra).
      A step snapshot is taken mid-epoch and resumes mid-epoch, exactly. One due at an epoch's
      last step is taken at the epoch's end, after validation, with that epoch's other files:
      its state is "epoch done" (as epoch-E.ckpt's), so a resume from it starts the next epoch
      and does not validate the finished one twice.

    Every file is written atomically, on a background thread (`nnlab.engine.checkpoint.
    CheckpointWriter`: the state is snapshot at the moment it is taken; the files of one moment
    are one write plus hard links); all are on disk when training ends or is interrupted.

    Why a time interval: an epoch of a small model takes milliseconds, and writing a file after
    each one would cost more than the epoch's own bookkeeping (a third of the default MLP's
    training time on a 2-core CPU). An epoch longer than the interval is written every epoch.
    The cost of the interval: a run killed without warning (SIGKILL, out of memory, power)
    resumes from a point up to `save_interval_s` older, and repeats those epochs exactly. A
    scheduler's SIGTERM (SLURM at the time limit or on preemption) is not such a kill: the
    trainer stops at the next step and writes last.ckpt first.

    Args:
        dirpath: folder for the files; default `<run dir>/checkpoints`.
        monitor: an epoch metric, e.g. val/loss or val/acc.
        mode: "min" if lower is better (losses), "max" if higher is (accuracy).
        save_last: write last.ckpt, from which a run can be continued.
        save_top_k: how many of the best epochs to keep: 0 none, 1 best.ckpt only, k > 1 the
            k best as well, -1 all.
        every_n_epochs: also keep a snapshot every n epochs (None: off).
        every_n_train_steps: also keep a snapshot (and refresh last.ckpt) every n training
            steps (None: off), the steps that end an epoch included. With gradient accumulation a
            snapshot waits for the end of the accumulation window.
        save_interval_s: the shortest time between two epoch-end writes of last.ckpt and
            best.ckpt, in seconds; 0 writes them after every epoch.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        monitor: str = "val/loss",
        mode: str = "min",
        save_last: bool = True,
        save_top_k: int = 1,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        save_interval_s: float = 10.0,
    ) -> None:
        check_choice("callbacks.model_checkpoint.mode", mode, ["min", "max"])
        check_range("callbacks.model_checkpoint.save_top_k", save_top_k, -1)
        for key, n in (("every_n_epochs", every_n_epochs), ("every_n_train_steps", every_n_train_steps)):
            if n is not None:
                check_range(f"callbacks.model_checkpoint.{key}", n, 1)
        check_range("callbacks.model_checkpoint.save_interval_s", save_interval_s, 0.0)
        self.dirpath = dirpath
        self.monitor = monitor
        self.mode = mode
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.save_interval_s = save_interval_s
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_path: Path | None = None
        self.last_path: Path | None = None
        self.top_k: list[tuple[float, str]] = []  # (score, file) of the kept best epochs, best first
        self._step_snapshot_due = False
        self._last_write = -math.inf  # time.monotonic() of the last epoch-end write
        self._pending_best: dict | None = None  # a snapshot of a best epoch not yet on disk
        self.writer = CheckpointWriter()

    def checkpoint_dir(self, trainer: Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.output_dir) / "checkpoints"

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def on_fit_start(self, trainer: Trainer) -> None:
        # A write killed mid-way (SIGKILL, power cut) leaves its temporary file; the checkpoint it
        # was replacing is intact. One process writes a run's folder, so any left now are stale.
        folder = self.checkpoint_dir(trainer)
        if folder.is_dir():
            for stale in folder.glob("*.ckpt.*.tmp"):
                stale.unlink(missing_ok=True)
        self._last_write = time.monotonic()  # the first write comes an interval (or the last epoch) later
        # A resumed run's best.ckpt can be gone: renamed aside as damaged (trainer.resume=auto), or
        # never written (killed while that best was kept in memory). Then the best weights are
        # lost; count the best afresh, so best.ckpt is written again and the test has a file to score.
        if self.best_path is not None and not self.best_path.is_file():
            log.warning(
                "%s, the best checkpoint of the restored state (%s %.4f), is missing: the next epoch's weights "
                "become best.ckpt and later ones replace them when %s improves on them.",
                self.best_path,
                self.monitor,
                self.best_score,
                self.monitor,
            )
            self.best_score = math.inf if self.mode == "min" else -math.inf
            self.best_path = None

    def on_train_batch_end(self, trainer: Trainer) -> None:
        n = self.every_n_train_steps
        if n is None:
            return
        if trainer.global_step % n == 0:
            self._step_snapshot_due = True
        # Never with gradients of an open accumulation window, which a checkpoint does not hold.
        # At the epoch's last step, it stays due: on_epoch_end writes it after validation.
        if not self._step_snapshot_due or trainer.pending_grads or trainer.epoch_step == trainer.steps_per_epoch:
            return
        self._step_snapshot_due = False
        folder = self.checkpoint_dir(trainer)
        paths = [folder / f"step-{trainer.global_step:06d}.ckpt"]
        if self.save_last:
            self.last_path = folder / "last.ckpt"
            paths.append(self.last_path)
        self.writer.write(trainer.checkpoint_state(), paths)

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise ConfigValueError(
                f"callbacks.model_checkpoint.monitor='{self.monitor}' is not a metric of this run (by default "
                f"it is the run's optimized_metric).{did_you_mean(self.monitor, metrics)} Set optimized_metric "
                f"(or callbacks.model_checkpoint.monitor) to one of: {', '.join(sorted(metrics))}."
            )
        score = metrics[self.monitor]
        folder = self.checkpoint_dir(trainer)
        improved = self._better(score, self.best_score)
        if improved:
            self.best_score = score
        ranked = self.save_top_k != 0 and not math.isnan(score) and self._ranks(score)
        best = self.save_top_k != 0 and improved
        kept: list[Path] = []  # files asked for at this epoch: written now, whatever the interval
        dropped: list[str] = []
        if ranked and self.save_top_k != 1:
            name = f"epoch-{trainer.epoch:03d}-{_slug(self.monitor)}-{score:.4f}.ckpt"
            kept.append(folder / name)
            self.top_k = sorted([*self.top_k, (score, name)], key=lambda t: t[0], reverse=self.mode == "max")
            if self.save_top_k > 0:
                dropped = [old for _, old in self.top_k[self.save_top_k :]]
                self.top_k = self.top_k[: self.save_top_k]
        if self.every_n_epochs and trainer.epoch % self.every_n_epochs == 0:
            kept.append(folder / f"epoch-{trainer.epoch:03d}.ckpt")
        if self._step_snapshot_due:  # due at the epoch's last step (or put off to it by accumulation)
            kept.append(folder / f"step-{trainer.global_step:06d}.ckpt")
            self._step_snapshot_due = False
        now = time.monotonic()
        final = trainer.epoch >= trainer.max_epochs or trainer.should_stop
        if best:
            self.best_path = folder / "best.ckpt"
        if not (kept or final or now - self._last_write >= self.save_interval_s):
            if best:  # on disk with the next write (after the state below has changed)
                self._pending_best = snapshot(trainer.checkpoint_state())
            return
        if best:
            self._pending_best = None  # this epoch's write below holds it
        else:
            self._flush_best()  # an earlier best first: best.ckpt is never behind last.ckpt
        paths = [self.best_path] if best else []  # the files of this moment: one write, then hard links
        paths += kept
        if self.save_last:
            # Last of the files of this moment: last.ckpt (where a resume starts) says this epoch
            # is done only once best.ckpt and the others hold it. Killed before, a resumed run
            # redoes the epoch (deterministically) and writes them all again.
            self.last_path = folder / "last.ckpt"
            paths.append(self.last_path)
        # After the update above, so a resume knows the best.
        self.writer.write(trainer.checkpoint_state(), paths)
        self._last_write = now
        for name in dropped:  # (never one just written: a dropped epoch ranks below the kept k)
            (folder / name).unlink(missing_ok=True)

    def _flush_best(self) -> None:
        """Write the best epoch kept in memory, if there is one."""
        if self._pending_best is not None:
            self.writer.write_frozen(self._pending_best, [self.best_path])
            self._pending_best = None

    @property
    def saved(self) -> bool:
        """Whether this run has checkpoint files (or a best one about to be written)."""
        return self.last_path is not None or self.best_path is not None

    def _ranks(self, score: float) -> bool:
        """Whether `score` enters the kept top k."""
        if self.save_top_k < 0 or len(self.top_k) < self.save_top_k:
            return True
        return self._better(score, self.top_k[-1][0])

    def on_interrupt(self, trainer: Trainer) -> None:
        self._flush_best()
        if self.save_last:
            self.last_path = self.checkpoint_dir(trainer) / "last.ckpt"
            self.writer.write(trainer.checkpoint_state(), [self.last_path])
            self.writer.wait()
            log.warning("Saved the interrupted run's state to %s", self.last_path)

    def on_fit_end(self, trainer: Trainer) -> None:
        # Training ended, well or not: the best epoch is on disk, and every file is written
        # before the test (or anything else) reads one.
        self._flush_best()
        self.writer.wait()

    def state_dict(self) -> dict[str, object]:
        return {
            "best_score": self.best_score,
            "best_path": str(self.best_path) if self.best_path else None,
            "top_k": [[score, name] for score, name in self.top_k],
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.best_score = float(state["best_score"])
        self.best_path = Path(state["best_path"]) if state.get("best_path") else None
        self.top_k = [(float(score), str(name)) for score, name in state.get("top_k", [])]


class EarlyStopping:
    """Stop training when `monitor` has not improved by more than `min_delta` for `patience`
    epochs in a row, and say so.

    Counted in epochs (each epoch ends with one validation), so `patience=5` means five epochs
    without improvement. The decision is taken before the epoch's checkpoints are written, so
    last.ckpt records it and a resumed run does not train past the stop.

    Args:
        monitor: an epoch metric, e.g. val/loss or val/acc.
        mode: "min" if lower is better, "max" if higher is.
        patience: epochs without improvement before stopping (>= 1).
        min_delta: the smallest change that counts as an improvement (>= 0).
        stopping_threshold: stop as soon as `monitor` reaches this value (at or below it for
            "min", at or above for "max"): a goal, e.g. a solved environment's return. None: no goal.
    """

    all_ranks = True  # a data-parallel run's ranks must all stop at the same epoch

    def __init__(
        self,
        monitor: str = "val/loss",
        mode: str = "min",
        patience: int = 5,
        min_delta: float = 0.0,
        stopping_threshold: float | None = None,
    ) -> None:
        check_choice("callbacks.early_stopping.mode", mode, ["min", "max"])
        check_range("callbacks.early_stopping.patience", patience, 1)
        check_range("callbacks.early_stopping.min_delta", min_delta, 0.0)
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.min_delta = min_delta
        self.stopping_threshold = stopping_threshold
        self.best_score = math.inf if mode == "min" else -math.inf
        self.best_epoch = 0
        self.wait = 0

    def on_validation_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:
            raise ConfigValueError(
                f"callbacks.early_stopping.monitor='{self.monitor}' is not a metric of this run."
                f"{did_you_mean(self.monitor, metrics)} Choose one of: {', '.join(sorted(metrics))}."
            )
        score = metrics[self.monitor]
        goal = self.stopping_threshold
        if goal is not None and (score <= goal if self.mode == "min" else score >= goal):
            trainer.should_stop = True
            trainer.stop_reason = (
                f"{self.monitor} = {score:.4f} reached callbacks.early_stopping.stopping_threshold={goal:g}"
            )
        if self.mode == "min":
            improved = score < self.best_score - self.min_delta
        else:
            improved = score > self.best_score + self.min_delta
        if improved:
            self.best_score, self.best_epoch, self.wait = score, trainer.epoch, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.should_stop = True
            trainer.stop_reason = (
                f"early stopping: {self.monitor} has not improved by more than {self.min_delta:g} for "
                f"{self.wait} epochs (best {self.best_score:.4f} at epoch {self.best_epoch}; patience {self.patience})"
            )

    def state_dict(self) -> dict[str, object]:
        return {"best_score": self.best_score, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.wait = int(state["wait"])


class EpisodeLog:
    """Draw a reinforcement-learning run's recent episodes against environment steps: every
    `trainer.log_every_n_steps` batches, rollout/return_mean, return_min, return_max and
    episode_length at step = environment steps taken. Tasks without episodes (no
    `episode_scalars`) are left alone."""

    def __init__(self) -> None:
        self._scalars = None  # the task's `episode_scalars`, when it has one and the run logs

    def on_fit_start(self, trainer: Trainer) -> None:
        has_logger = trainer.logger is not None
        self._scalars = getattr(trainer.task, "episode_scalars", None) if has_logger else None

    def on_train_batch_end(self, trainer: Trainer) -> None:
        if self._scalars is None or trainer.global_step % trainer.log_every_n_steps:
            return
        values, env_steps = self._scalars()
        if values:
            trainer.logger.log_metrics({f"rollout/{k}": v for k, v in values.items()}, env_steps)


# The files ModelCheckpoint writes in its folder, as glob patterns (the names are made above).
CHECKPOINT_FILES = ("last.ckpt", "best.ckpt", "epoch-*.ckpt", "step-*.ckpt")


def checkpoint_files(folder: Path) -> list[Path]:
    """The checkpoints ModelCheckpoint wrote in `folder` (not its temporary files, nor any other
    file someone put there): what a run can be continued from."""
    return sorted({path for pattern in CHECKPOINT_FILES for path in Path(folder).glob(pattern) if path.is_file()})


def _slug(metric: str) -> str:
    """val/loss -> val_loss, for file names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", metric)
