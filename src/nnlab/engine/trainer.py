"""The training loop, written out: epochs of steps, validation, logging, checkpoints."""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nnlab.engine import distributed
from nnlab.engine.acceleration import channels_last_batches, compile_mode, prepare_model
from nnlab.engine.callbacks import checkpoint_files
from nnlab.engine.checkpoint import RefusedCheckpoint, UnreadableCheckpoint, first_line, load_checkpoint, mismatch
from nnlab.engine.metrics import RunningMean
from nnlab.engine.nonfinite import TrainingDiverged, locate_nonfinite
from nnlab.engine.optim import NonFiniteStep, UpdateRules
from nnlab.engine.precision import Precision
from nnlab.engine.regularization import Regularization
from nnlab.engine.rng import rng_state, set_rng_state
from nnlab.engine.task import Task
from nnlab.engine.tensorboard import save_image
from nnlab.errors import ConfigValueError, Stopped, UserError, check_choice, check_range

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cpu'; 'cuda'; 'cuda:N'."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ConfigValueError(
            f"trainer.device={device!r} is not a valid choice. Choose one of: auto, cpu, cuda, cuda:N."
        )
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigValueError(
                f"trainer.device={device} but no CUDA device is available here "
                "(torch.cuda.is_available() is False). Use trainer.device=cpu or trainer.device=auto."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigValueError(
                f"trainer.device={device} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    return dev


class Trainer:
    """Runs a task over a data module: the engine every nnlab run goes through.

    Each epoch: `task.training_step` on every training batch, `task.evaluate` on the validation
    split, then `task.epoch_end` (schedulers), logging and the callbacks (checkpoints, early
    stopping). Step metrics stay on the device and are averaged every `log_every_n_steps`
    steps; besides that, each update reads back one flag (the non-finite check).

    Args:
        max_epochs: passes over the training split.
        device: auto, cpu, cuda or cuda:N.
        precision: 32, bf16 or 16-mixed (see `nnlab.engine.precision`).
        log_every_n_steps: interval of step-level scalars (train/*_step, lr, throughput).
        limit_train_batches, limit_eval_batches: cap batches per epoch/evaluation (debugging).
        deterministic: use only deterministic kernels (`torch.use_deterministic_algorithms`).
        detect_anomaly: autograd anomaly detection, to find the op that made a NaN (slow).
        test_ckpt: weights the test split is scored with: "best" (best.ckpt from the
            checkpoint callback, when there is one) or "last" (the weights at the end).
        gradient_clip_val: clip gradients before each update (None: off), by ...
        gradient_clip_algorithm: ... "norm" (global L2 norm) or "value" (each entry).
        accumulate_grad_batches: update once every k batches with their summed gradients.
        nonfinite: what a NaN/inf loss or gradient does: "stop" the run (checkpoints kept) or
            "skip" the update, counting skips and stopping after `max_consecutive_skips`.
        max_consecutive_skips: skipped updates in a row that end a `nonfinite=skip` run.
        resume: "auto" continues from `last.ckpt` in this run's checkpoint folder when there is
            one (set `hydra.run.dir` to the run's folder); None starts afresh. A last.ckpt that
            cannot be read is renamed aside and the run continues from its newest checkpoint
            that loads (by the steps it records), with a warning.
        summary: log a table of the model's layers, shapes and parameter counts at the start.
        strategy: "auto" (one process) or "ddp": DistributedDataParallel over the processes
            torchrun started (see `nnlab.engine.distributed`); each rank trains on its shard.
        ddp_timeout_s: longest wait in a collective before a rank gives up (a dead peer).
        channels_last: NHWC memory format for 2-D conv weights and image batches (faster CNNs
            under AMP on tensor cores; a logged no-op for other models). See
            `nnlab.engine.acceleration`.
        compile: `torch.compile` the training forward: false, true, or a mode (default,
            reduce-overhead, max-autotune). Checkpoints, EMA and test use the original module.
        output_dir: the run directory (checkpoints go under it).
        callbacks, logger, regularization: given at build time by `nnlab.pipeline.build`.
    """

    def __init__(
        self,
        max_epochs: int = 30,
        device: str = "auto",
        precision: str | int = "32",
        log_every_n_steps: int = 50,
        limit_train_batches: int | None = None,
        limit_eval_batches: int | None = None,
        deterministic: bool = False,
        detect_anomaly: bool = False,
        test_ckpt: str = "best",
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        accumulate_grad_batches: int = 1,
        nonfinite: str = "stop",
        max_consecutive_skips: int = 10,
        resume: str | None = None,
        summary: bool = True,
        strategy: str = "auto",
        ddp_timeout_s: float = 300.0,
        channels_last: bool = False,
        compile: bool | str = False,
        output_dir: str = ".",
        callbacks: list[Any] | None = None,
        logger: Any | None = None,
        regularization: Regularization | None = None,
    ) -> None:
        check_range("trainer.max_epochs", max_epochs, 1)
        check_range("trainer.log_every_n_steps", log_every_n_steps, 1)
        for key, limit in (("limit_train_batches", limit_train_batches), ("limit_eval_batches", limit_eval_batches)):
            if limit is not None:
                check_range(f"trainer.{key}", limit, 1)
        check_choice("trainer.test_ckpt", test_ckpt, ["best", "last"])
        if gradient_clip_val is not None:
            check_range("trainer.gradient_clip_val", gradient_clip_val, 0.0, low_inclusive=False)
        check_choice("trainer.gradient_clip_algorithm", gradient_clip_algorithm, ["norm", "value"])
        check_range("trainer.accumulate_grad_batches", accumulate_grad_batches, 1)
        check_choice("trainer.nonfinite", nonfinite, ["stop", "skip"])
        check_range("trainer.max_consecutive_skips", max_consecutive_skips, 1)
        if resume is not None:
            check_choice("trainer.resume", resume, ["auto"])
        check_choice("trainer.strategy", strategy, ["auto", "ddp"])
        check_range("trainer.ddp_timeout_s", ddp_timeout_s, 0.0, low_inclusive=False)
        self.max_epochs = max_epochs
        self.device = resolve_device(device)
        self.precision = Precision(precision, self.device)
        self.log_every_n_steps = log_every_n_steps
        self.limit_train_batches = limit_train_batches
        self.limit_eval_batches = limit_eval_batches
        self.deterministic = deterministic
        self.detect_anomaly = detect_anomaly
        self.test_ckpt = test_ckpt
        self.nonfinite = nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.resume = resume
        self.summary = summary
        self.strategy = strategy
        self.ddp_timeout_s = ddp_timeout_s
        self.channels_last = channels_last
        compile_mode(compile)  # a bad mode fails here, before any work
        self.compile = compile
        self.output_dir = output_dir
        self.callbacks = list(callbacks or [])  # a plain list: Hydra hands over a ListConfig, slower to iterate
        self.logger = logger
        self.regularization = regularization
        self.rules = UpdateRules(
            accumulate_grad_batches=accumulate_grad_batches,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm=gradient_clip_algorithm,
            regularization=regularization,
        )
        # Loop state: what a checkpoint records.
        self.epoch = 0  # completed epochs
        self.global_step = 0  # training steps (batches) taken
        self.epoch_step = 0  # steps taken in the current epoch
        self.steps_per_epoch = 0
        self.skipped_steps = 0  # updates skipped for a non-finite loss or gradient (nonfinite=skip)
        self.consecutive_skips = 0
        self.should_stop = False  # set by a callback (early stopping) to end training
        self.stop_reason = ""
        self.last_step_metrics: dict[str, float] = {}
        self.metrics: dict[str, float] = {}  # latest epoch metrics
        self.extra_state: dict[str, Any] = {}  # e.g. the resolved config, saved with checkpoints
        self.task: Task | None = None
        self.module: torch.nn.Module | None = None  # task.model, unwrapped from DDP when data-parallel
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        self.resumed_from: Path | None = None
        self._window = RunningMean()  # step metrics since the last log
        self._totals: dict[str, float] = {}  # sample-weighted sums over the epoch so far
        self._seen = 0
        self._stop_requested = 0  # a signal (Ctrl-C, SIGTERM) asked to stop at the next step boundary
        self._hooks: dict[str, list[Callable[..., None]]] = {}  # hook name -> the callbacks' methods

    @property
    def pending_grads(self) -> bool:
        """True while an accumulation window is open: the last batch was backward-only."""
        return not self.rules.update_now

    # ----------------------------------------------------------------------------------------
    def fit(
        self,
        task: Task,
        data: Any,
        ckpt_path: str | Path | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """Train for `max_epochs` (continuing from `ckpt_path`, or from `last.ckpt` with
        `resume=auto`); returns the last epoch's train/ and val/ metrics. `on_start` is called
        once everything is set up and the checkpoint restored, right before training starts."""
        if self.deterministic:
            # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        self.task = task
        self.module = task.model
        self._hooks = {}  # (the callbacks may have changed since the last fit)
        dist_info = distributed.current()
        if self.strategy == "ddp":
            check_ddp_task(task)
            data.shard(dist_info.rank, dist_info.world_size)
        data.setup(self.device)
        self.steps_per_epoch = min(data.steps_per_epoch, self.limit_train_batches or data.steps_per_epoch)
        updates_per_epoch = math.ceil(self.steps_per_epoch / self.rules.accumulate_grad_batches)
        task.configure(self.device, self.precision, total_steps=self.max_epochs * updates_per_epoch, rules=self.rules)
        # Optional: initialisation that needs the data (a SOM's PCA init, a GAN's judge classifier).
        prepare = getattr(task, "prepare", None)
        if prepare is not None:
            prepare(data)
        if self.regularization is not None and self.regularization.ema_decay is not None:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            decay = self.regularization.ema_decay
            self.ema = AveragedModel(task.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        if self.summary:
            self._log_summary(task, data)
        n_params = sum(p.numel() for p in task.model.parameters())
        log.info(
            "Training %s (%s parameters) on %s, precision %s, %d epochs of %d steps",
            type(task.model).__name__,
            f"{n_params:,}",
            self.device,
            self.precision.name,
            self.max_epochs,
            self.steps_per_epoch,
        )
        if ckpt_path:
            self.restore(self._load_given(Path(ckpt_path)), Path(ckpt_path))
        elif self.resume == "auto":
            self._resume_auto()
        # NHWC before DDP (its gradient buckets must see the final strides); compile after it.
        prepare_model(self.module, self.device, channels_last=self.channels_last)
        if self.strategy == "ddp" and dist_info.active:
            from torch.nn.parallel import DistributedDataParallel

            # Averages gradients across ranks during backward; rank 0's weights and buffers are
            # broadcast at construction (and buffers at every forward), so all ranks stay identical.
            ids = [self.device.index or 0] if self.device.type == "cuda" else None
            task.model = DistributedDataParallel(self.module, device_ids=ids)
            log.info("DistributedDataParallel: rank %d of %d", dist_info.rank, dist_info.world_size)
        if compile_mode(self.compile) is not None:
            task.model = prepare_model(task.model, self.device, compile=self.compile)  # a wrapper; self.module stays
        if on_start is not None:
            on_start()
        self._call("on_fit_start")
        previous_handlers = _install_stop_signals(self)
        try:
            with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                while self.epoch < self.max_epochs and not self.should_stop:
                    self._run_epoch(task, data)
            if self.should_stop:
                log.info("Stopped after epoch %d of %d: %s", self.epoch, self.max_epochs, self.stop_reason)
        except KeyboardInterrupt:
            log.warning("Interrupted during epoch %d (step %d).", self.epoch + 1, self.global_step)
            self._call("on_interrupt")
            raise
        finally:
            task.model = self.module  # unwrapped: testing and saving need no peers
            _restore_signals(previous_handlers)
            self._call("on_fit_end")
            if self.logger is not None:
                self.logger.flush()
        return self.metrics

    def _run_epoch(self, task: Task, data: Any) -> None:
        task.model.train()
        if self.epoch_step == 0:  # a fresh epoch (not one resumed mid-way)
            self._window, self._totals, self._seen = RunningMean(), {}, 0
        t_start = t_log = time.perf_counter()
        samples_since_log = 0
        k = self.rules.accumulate_grad_batches
        # The epoch's order depends only on (seed, epoch), so a resumed epoch skips what was done.
        batches = itertools.islice(data.train_batches(self.epoch), self.epoch_step, self.steps_per_epoch)
        if self.channels_last:
            batches = channels_last_batches(batches)  # after augmentation, which works on NCHW
        for batch in batches:
            # Update on the batch that completes a window of k (or ends the epoch); else backward only.
            self.rules.update_now = (self.epoch_step + 1) % k == 0 or self.epoch_step + 1 == self.steps_per_epoch
            self._call("on_train_batch_start", batch)
            try:
                out = task.training_step(batch)
                self.consecutive_skips = 0
            except NonFiniteStep as e:
                out = self._on_nonfinite(e, task, batch)
            n = batch[0].shape[0]
            if out is not None:
                self._window.update(out, n)
                if self.ema is not None and self.rules.update_now:
                    self.ema.update_parameters(self.module)
            samples_since_log += n
            self.global_step += 1
            self.epoch_step += 1
            last = self.epoch_step == self.steps_per_epoch
            if self.global_step % self.log_every_n_steps == 0 or last:
                means, count = self._window.pop()  # the only metric read-back of the step loop
                for key, v in means.items():
                    self._totals[key] = self._totals.get(key, 0.0) + v * count
                self._seen += count
                self.last_step_metrics = means or self.last_step_metrics
                now = time.perf_counter()
                if self.logger is not None and self.global_step % self.log_every_n_steps == 0:
                    scalars = {f"train/{key}_step": v for key, v in means.items()}
                    scalars.update(task.learning_rates())
                    scalars["perf/samples_per_s"] = samples_since_log / max(now - t_log, 1e-9)
                    self.logger.log_metrics(scalars, self.global_step)
                t_log, samples_since_log = now, 0
            self._call("on_train_batch_end")
            if self._stop_requested and not self.pending_grads:
                raise Stopped(self._stop_requested)  # at a step boundary, so last.ckpt resumes exactly
        train_time = time.perf_counter() - t_start

        totals, seen = self._totals, self._seen
        if distributed.current().active:  # training metrics over every rank's shard
            totals, seen = distributed.all_reduce_sums(totals, seen)
            distributed.broadcast_buffers(self.module)  # every rank validates the same model
        with self.eval_weights(task):
            val = task.evaluate(self._limit(data.eval_batches("val")))
        metrics = {f"train/{key}": v / max(seen, 1) for key, v in totals.items()}
        # Optional: counts over the whole epoch, e.g. the perceptron's mistakes.
        metrics.update({f"train/{key}": v for key, v in getattr(task, "epoch_metrics", dict)().items()})
        if self.skipped_steps:
            metrics["train/skipped_steps"] = float(self.skipped_steps)
        metrics.update({f"val/{key}": v for key, v in val.items()})
        task.epoch_end(metrics)
        self.epoch += 1
        self.epoch_step = 0  # (epoch, epoch_step) = where a checkpoint taken now resumes
        self.metrics = metrics
        if self.logger is not None:
            epoch_scalars = dict(metrics)  # (lr is logged on the step axis only)
            epoch_scalars["perf/epoch_s"] = train_time
            epoch_scalars["perf/samples_per_s_epoch"] = self._seen / max(train_time, 1e-9)
            self.logger.log_metrics(epoch_scalars, self.epoch)
        # Optional: pictures of the model now (reconstructions, GAN samples), one per epoch.
        with self.eval_weights(task):
            for name, image in getattr(task, "epoch_images", dict)().items():
                self._show(name, image, self.epoch)
        shown = "  ".join(f"{key} {v:.4f}" for key, v in metrics.items())
        log.info(
            "epoch %d/%d  %s  (%.2fs, %.0f samples/s)",
            self.epoch,
            self.max_epochs,
            shown,
            train_time,
            self._seen / max(train_time, 1e-9),
        )
        self._call("on_validation_end", metrics)  # decisions first (early stopping) ...
        self._call("on_epoch_end", metrics)  # ... so the checkpoints taken here record them
        if self._stop_requested:
            raise Stopped(self._stop_requested)

    def _on_nonfinite(self, error: NonFiniteStep, task: Task, batch: Any) -> None:
        """A step's loss or gradient was NaN/inf and its update was not applied: say where it
        came from, then stop the run (`nonfinite=stop`) or skip the step (`nonfinite=skip`)."""
        what = "loss" if not error.loss_finite else "gradient norm" if error.largest_grad is not None else "gradient"
        where = locate_nonfinite(self.module, batch, error, self.precision)
        at = f"step {self.global_step + 1} of epoch {self.epoch + 1}"
        if self.nonfinite == "skip":
            self.skipped_steps += 1
            self.consecutive_skips += 1
            log.warning("Skipped the update of %s: the %s is not finite; %s", at, what, where)
            if self.consecutive_skips < self.max_consecutive_skips:
                return None
            cause = f"{self.consecutive_skips} updates in a row had a non-finite {what} (the last at {at}); {where}"
        else:
            cause = f"at {at} the {what} became non-finite; {where}"
        folder = next((cb.checkpoint_dir(self) for cb in self.callbacks if getattr(cb, "saved", False)), None)
        kept = f"The checkpoints written before it are kept ({folder})" if folder else "No checkpoint was written"
        raise TrainingDiverged(
            f"Training stopped: {cause}. {kept}, and no update with NaN/inf was applied. Try a lower "
            "optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0), a smaller initialization "
            "(init=xavier_uniform or init=kaiming_normal) or normalization (model.batch_norm=true)"
            + ("." if self.nonfinite == "skip" else ", or trainer.nonfinite=skip to skip such steps.")
        )

    def test(self, task: Task, data: Any) -> dict[str, float]:
        """Score the test split with the weights `test_ckpt` names; returns test/ metrics."""
        best = next((cb.best_path for cb in self.callbacks if getattr(cb, "best_path", None)), None)
        if self.test_ckpt == "best" and best is not None:
            state = load_checkpoint(best, map_location=self.device)
            self.module.load_state_dict(state["model"])
            if self.ema is not None and state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            log.info("Testing the best checkpoint (epoch %d): %s", state["epoch"], best)
        with self.eval_weights(task):
            results = task.evaluate(self._limit(data.eval_batches("test")), detailed=True)
            metrics = {f"test/{k}": v for k, v in results.items()}
            if self.logger is not None:
                self.logger.log_metrics(metrics, self.epoch)
            for name, figure in getattr(task, "figures", dict)().items():
                log.info("Saved %s", self._show(f"test/{name}", figure, self.epoch))
            # Optional: vectors for TensorBoard's Projector tab (e.g. an autoencoder's latent codes).
            if self.logger is not None:
                for name, (vectors, labels, images) in getattr(task, "embeddings", dict)().items():
                    self.logger.log_embedding(name, vectors, labels, images, self.epoch)
        return metrics

    @contextmanager
    def eval_weights(self, task: Task) -> Iterator[None]:
        """Evaluate with the EMA of the weights when `regularization.ema_decay` is set; the
        training weights are back afterwards. Buffers the evaluation itself sets (an anomaly
        threshold) are kept in both."""
        if self.ema is None:
            yield
            return
        model = self.module
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        averaged = self.ema.module.state_dict()
        model.load_state_dict(averaged)
        try:
            yield
        finally:
            for name, buf in model.named_buffers():
                if name in averaged and not torch.equal(buf, averaged[name]):  # (non-persistent ones are not saved)
                    backup[name] = buf.detach().clone()
                    averaged[name].copy_(buf)
            model.load_state_dict(backup)

    def _show(self, tag: str, image: Any, step: int) -> Path:
        """Log an image (a (C, H, W) tensor in [0, 1], or a matplotlib figure) to TensorBoard
        under `tag`, and save it as figures/<name>.png (the latest one, for image series)."""
        path = Path(self.output_dir) / "figures" / f"{tag.rsplit('/', 1)[-1]}.png"
        return save_image(image, path, self.logger, tag, step)

    def _log_summary(self, task: Task, data: Any) -> None:
        from nnlab.engine.summary import model_summary

        example = next(iter(data.eval_batches("val")), None)
        log.info("Model:\n%s", model_summary(task.model, None if example is None else example[0][:2]))

    # ----------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to rebuild or continue the run from a file: tensors and plain
        values only, so it loads with `torch.load(weights_only=True)`."""
        return {
            "model": self.module.state_dict(),
            "task": self.task.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "epoch_step": self.epoch_step,
            "metrics": dict(self.metrics),
            # Averages of the epoch so far, so a run resumed mid-epoch reports the same epoch metrics.
            "loop": {"totals": dict(self._totals), "seen": self._seen, "window": self._window.state_dict()},
            "skipped_steps": self.skipped_steps,
            "consecutive_skips": self.consecutive_skips,
            "should_stop": self.should_stop,
            "stop_reason": self.stop_reason,
            "callbacks": {name: cb.state_dict() for name, cb in self._stateful_callbacks()},
            "rng": rng_state(),
            **self.extra_state,
        }

    def restore(self, state: dict[str, Any], path: Path) -> None:
        """Continue from a checkpoint: weights, optimizer/scheduler/scaler, EMA, counters,
        callback state, and last the random generators, so the run goes on exactly as it would
        have. (The data order needs no state: it is a function of (seed, epoch).)"""
        try:
            self.module.load_state_dict(state["model"])
        except RuntimeError as e:
            detail = mismatch(self.module, state["model"]) or first_line(e)
            raise UserError(
                f"Checkpoint {path} does not fit this model: {detail}. "
                "It was written by a run with another model or data config: resume with the config of "
                "the run that wrote it (see .hydra/config.yaml in that run's folder)."
            ) from e
        self.task.load_state_dict(state["task"])
        if self.ema is not None:
            if state.get("ema") is not None:
                self.ema.load_state_dict(state["ema"])
            else:
                log.warning("%s has no EMA weights; the EMA starts from the restored weights.", path)
                self.ema.module.load_state_dict(self.module.state_dict())
        self.epoch = state["epoch"]
        self.global_step = state["global_step"]
        self.epoch_step = state["epoch_step"]
        self.metrics = dict(state.get("metrics", {}))
        loop = state.get("loop") or {}
        self._totals = dict(loop.get("totals", {}))
        self._seen = loop.get("seen", 0)
        self._window = RunningMean()
        if loop.get("window"):
            self._window.load_state_dict(loop["window"])
        self.skipped_steps = state.get("skipped_steps", 0)
        self.consecutive_skips = state.get("consecutive_skips", 0)
        self.should_stop = state.get("should_stop", False)
        self.stop_reason = state.get("stop_reason", "")
        saved = state.get("callbacks", {})
        for name, cb in self._stateful_callbacks():
            if name in saved:
                cb.load_state_dict(saved[name])
        set_rng_state(state["rng"])
        self.resumed_from = path
        log.info("Resumed from %s: %s", path, _position(state))

    def checkpoint_folders(self) -> list[Path]:
        """Where this run's checkpoints are written (the checkpoint callbacks' folders)."""
        folders = [cb.checkpoint_dir(self) for cb in self.callbacks if hasattr(cb, "checkpoint_dir")]
        return folders or [Path(self.output_dir) / "checkpoints"]

    def last_checkpoint(self) -> Path | None:
        """last.ckpt in this run's checkpoint folder, if there is one."""
        for folder in self.checkpoint_folders():
            if (folder / "last.ckpt").is_file():
                return folder / "last.ckpt"
        return None

    def _load_given(self, path: Path) -> dict[str, Any]:
        """The state in `ckpt_path`. A file that cannot be read fails with its own message, whose
        advice is replaced by a checkpoint beside it that does load (never the same file)."""
        try:
            return load_checkpoint(path, map_location=self.device)
        except UnreadableCheckpoint as e:
            others = [p for p in checkpoint_files(path.parent) if p.resolve() != path.resolve()]
            try:
                found = newest_resumable(others, "cpu")
            except RefusedCheckpoint:  # (that one is refused when it is named; here it is only not suggested)
                found = None
            if found is not None:
                other, state, _ = found
                hint = (
                    f"Continue from the newest checkpoint beside it that loads: ckpt_path={other} ({_position(state)})"
                )
            else:
                hint = "No other checkpoint beside it loads: start the run afresh (without ckpt_path)"
            raise UnreadableCheckpoint(e.what, f"{hint}.") from e

    def _resume_auto(self) -> None:
        """trainer.resume=auto: continue from last.ckpt if a previous attempt of this run left
        one; from the run's newest checkpoint that loads if last.ckpt does not."""
        last = self.last_checkpoint()
        if last is None:
            log.info("trainer.resume=auto: no last.ckpt in %s yet, so the run starts from scratch.", self.output_dir)
            return
        try:
            state = load_checkpoint(last, map_location=self.device)
        except UnreadableCheckpoint as e:  # (a RefusedCheckpoint, code in the pickle, stops the run)
            self._resume_from_another(last, e)
            return
        self.restore(state, last)

    def _resume_from_another(self, last: Path, error: UnreadableCheckpoint) -> None:
        """last.ckpt cannot be read (a disk fault, a copy cut short): continue from the newest of
        the run's other checkpoints (step/epoch snapshots, best.ckpt, top-k) that loads, by the
        training progress it records, and redo the steps after it. The damaged files are renamed
        aside (`<name>.damaged`), never deleted, so that the files the run writes next do not
        overwrite them. When none loads, stop with a fix."""
        damaged = error.what
        others = [p for folder in self.checkpoint_folders() for p in checkpoint_files(folder) if p != last]
        try:
            found = newest_resumable(others, self.device)
        except RefusedCheckpoint as e:  # never skipped: a run's own folder should not hold such a file
            raise RefusedCheckpoint(
                f"trainer.resume=auto looked for another checkpoint of the run because {last} cannot be read, "
                f"and found one it refuses. {e}"
            ) from e
        if found is None:
            folders = [f for f in self.checkpoint_folders() if f.is_dir()]
            moves = " && ".join(
                f"mv {shlex.quote(str(f))} {shlex.quote(str(_free_name(f, '.damaged')))}" for f in folders
            )
            tried = (
                f"the {len(others)} other checkpoint(s) beside it do not load either"
                if others
                else "it is the run's only checkpoint"
            )
            raise UserError(
                f"trainer.resume=auto cannot continue the run in {self.output_dir}: {damaged} And {tried}, so "
                "there is no state to resume from; nothing was deleted. To train this run again from the start, move "
                f"its damaged checkpoints aside and rerun the same command: {moves}. Or start a new run in another "
                "folder (hydra.run.dir=<new folder>)."
            ) from error
        path, state, unreadable = found
        self.restore(state, path)
        moved = [last, *unreadable]
        distributed.barrier()  # every rank has read the files before one of them renames any
        if distributed.current().is_zero:
            moved = [p.rename(_free_name(p, ".damaged")) for p in moved]
        log.warning(
            "%s trainer.resume=auto continues from %s instead (%s), the newest checkpoint of the run that loads, "
            "and redoes the steps after it. Renamed aside, not deleted: %s.",
            damaged,
            path,
            _position(state),
            ", ".join(str(p) for p in moved),
        )

    def _stateful_callbacks(self) -> Iterator[tuple[str, Any]]:
        seen: dict[str, int] = {}
        for cb in self.callbacks:
            if hasattr(cb, "state_dict"):
                name = type(cb).__name__
                seen[name] = seen.get(name, 0) + 1
                yield (name if seen[name] == 1 else f"{name}_{seen[name]}"), cb

    def _limit(self, batches):
        """Evaluation batches: at most limit_eval_batches of them, in channels_last when set."""
        batches = itertools.islice(batches, self.limit_eval_batches) if self.limit_eval_batches else batches
        return channels_last_batches(batches) if self.channels_last else batches

    def _call(self, hook: str, *args: Any) -> None:
        fns = self._hooks.get(hook)
        if fns is None:  # looked up once per fit: two hooks run every step
            fns = self._hooks[hook] = [getattr(cb, hook) for cb in self.callbacks if hasattr(cb, hook)]
        for fn in fns:
            fn(self, *args)


# What `Trainer.restore` reads: a file without these holds no training state to continue.
RESUMABLE_KEYS = ("model", "task", "epoch", "global_step", "epoch_step", "rng")


def newest_resumable(
    paths: list[Path], map_location: str | torch.device
) -> tuple[Path, dict[str, Any], list[Path]] | None:
    """Of the checkpoints `paths`, the one furthest into training that loads: (its path, its
    state, the paths that could not be read); None when none loads.

    "Furthest" is by the progress each file records, (global_step, epoch), then by the time it
    was written: the modification time alone ranks a copied or touched file wrongly. At one
    step, a state after the epoch's validation (epoch done) is newer than one before it. A file
    whose pickle refers to code raises its `RefusedCheckpoint`: it is never skipped quietly.
    Only the furthest state so far is kept in memory."""
    best: tuple[tuple[int, int, float], Path, dict[str, Any]] | None = None
    unreadable: list[Path] = []
    for path in paths:
        try:
            state = load_checkpoint(path, map_location=map_location)
        except UnreadableCheckpoint:
            unreadable.append(path)
            continue
        if not isinstance(state, dict) or any(key not in state for key in RESUMABLE_KEYS):
            continue  # loads, but holds weights only (not a file ModelCheckpoint wrote)
        progress = (int(state["global_step"]), int(state["epoch"]), path.stat().st_mtime)
        if best is None or progress > best[0]:
            best = (progress, path, state)
    return None if best is None else (best[1], best[2], unreadable)


def _position(state: dict[str, Any]) -> str:
    """Where a checkpoint's state is in training, as the log shows it: "epoch 3, step 56" (the
    epoch in progress when mid-epoch, else the last one done)."""
    return f"epoch {state['epoch'] + (state['epoch_step'] > 0)}, step {state['global_step']}"


def _free_name(path: Path, suffix: str) -> Path:
    """`path` + `suffix`, or + `suffix`-2, -3, ... when that is taken: renaming there loses nothing."""
    candidate, n = path.with_name(path.name + suffix), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_stop_signals(trainer: Trainer) -> dict[int, Any]:
    """The first Ctrl-C (SIGINT) or SIGTERM (what a cluster scheduler sends at the time limit or
    on preemption, before it kills): finish the current step, save last.ckpt, exit with
    128 + the signal's number. A second one stops at once. Returns the handlers replaced."""

    def handler(signum: int, frame: Any) -> None:
        if trainer._stop_requested:
            raise Stopped(signum)
        trainer._stop_requested = signum
        cause = Stopped(signum).cause
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"a second {cause}"
        log.warning("%s: stopping after this step and saving last.ckpt (%s stops at once).", cause, again)

    previous = {}
    for signum in STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, handler)
        except ValueError:  # not the main thread (e.g. a thread-based launcher): keep the defaults
            break
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def check_ddp_task(task: Task) -> None:
    """DDP wraps `task.model` and runs its forward, so a task must declare that it trains only
    through that forward (`supports_ddp = True`, see `nnlab.engine.task.Task`); a GAN calls into
    the model's parts, a SOM learns without gradients. A task that declares nothing is refused."""
    if not getattr(task, "supports_ddp", False):
        raise ConfigValueError(
            "trainer.strategy=ddp supports tasks that train only through model(x), such as task=supervised and "
            f"task=reconstruction, not {type(task).__name__}. Train this model in one process (trainer.strategy=auto)."
        )
