"""The training loop, written out: epochs of steps, validation, logging, checkpoints."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nnlab.engine import distributed, resume
from nnlab.engine.acceleration import channels_last_batches, compile_mode, prepare_model
from nnlab.engine.devices import choose_kernels, resolve_device
from nnlab.engine.ema import averaged_model, averaged_weights
from nnlab.engine.metrics import EpochMeans
from nnlab.engine.nonfinite import diverged, locate_nonfinite
from nnlab.engine.optim import NonFiniteStep, UpdateRules
from nnlab.engine.precision import Precision
from nnlab.engine.regularization import Regularization
from nnlab.engine.signals import StopSignals
from nnlab.engine.task import Task
from nnlab.engine.tensorboard import headline_metrics, per_class_table, save_image
from nnlab.errors import Stopped, check_choice, check_range

log = logging.getLogger(__name__)


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
        callbacks, logger, regularization: given at build time by `nnlab.runs.build.build`.
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
        self.epoch_means = EpochMeans()  # the epoch's step metrics so far
        # True while an accumulation window is open: the current batch is (or the last batch
        # was) backward only, so no checkpoint or stop may be taken after it.
        self.pending_grads = False
        self.stop_signals = StopSignals()  # Ctrl-C, SIGTERM: stop at the next step boundary
        self._hooks: dict[str, list[Callable[..., None]]] = {}  # hook name -> the callbacks' methods

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
        choose_kernels(self.device, self.deterministic)
        self.task = task
        self.module = task.model
        self._hooks = {}  # (the callbacks may have changed since the last fit)
        dist_info = distributed.current()
        if self.strategy == "ddp":
            distributed.check_ddp_task(task)
            data.shard(dist_info.rank, dist_info.world_size)
        data.setup(self.device)
        self.steps_per_epoch = min(data.steps_per_epoch, self.limit_train_batches or data.steps_per_epoch)
        updates_per_epoch = math.ceil(self.steps_per_epoch / self.rules.accumulate_grad_batches)
        task.configure(self.device, self.precision, total_steps=self.max_epochs * updates_per_epoch, rules=self.rules)
        task.prepare(data)  # initialisation that needs the data (a SOM's PCA init, a GAN's judge classifier)
        if self.regularization is not None and self.regularization.ema_decay is not None:
            self.ema = averaged_model(task.model, self.regularization.ema_decay)
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
            resume.restore(self, resume.load_given(Path(ckpt_path), self.device), Path(ckpt_path))
        elif self.resume == "auto":
            resume.resume_auto(self)
        # NHWC before DDP (its gradient buckets must see the final strides); compile after it.
        prepare_model(self.module, self.device, channels_last=self.channels_last)
        if self.strategy == "ddp" and dist_info.active:
            task.model = distributed.data_parallel(self.module, self.device)
        if compile_mode(self.compile) is not None:
            task.model = prepare_model(task.model, self.device, compile=self.compile)  # a wrapper; self.module stays
        if on_start is not None:
            on_start()
        self._call("on_fit_start")
        self.stop_signals.install()
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
            self.stop_signals.restore()
            self._call("on_fit_end")
            if self.logger is not None:
                self.logger.flush()
        return self.metrics

    def _run_epoch(self, task: Task, data: Any) -> None:
        task.model.train()
        if self.epoch_step == 0:  # a fresh epoch (not one resumed mid-way)
            self.epoch_means = EpochMeans()
        t_start = t_log = time.perf_counter()
        samples_since_log = 0
        k = self.rules.accumulate_grad_batches
        # The epoch's order depends only on (seed, epoch), so a resumed epoch skips what was done.
        batches = itertools.islice(data.train_batches(self.epoch), self.epoch_step, self.steps_per_epoch)
        if self.channels_last:
            batches = channels_last_batches(batches)  # after augmentation, which works on NCHW
        for batch in batches:
            # Update on the batch that completes a window of k (or ends the epoch); else backward only.
            update = (self.epoch_step + 1) % k == 0 or self.epoch_step + 1 == self.steps_per_epoch
            self.pending_grads = not update
            self._call("on_train_batch_start", batch)
            try:
                with distributed.gradient_sync(task.model, update):
                    out = task.training_step(batch, update)
                self.consecutive_skips = 0
            except NonFiniteStep as e:
                out = self._on_nonfinite(e, task, batch)
            n = batch[0].shape[0]
            if out is not None:
                self.epoch_means.window.update(out, n)
                if self.ema is not None and update:
                    self.ema.update_parameters(self.module)
            samples_since_log += n
            self.global_step += 1
            self.epoch_step += 1
            last = self.epoch_step == self.steps_per_epoch
            if self.global_step % self.log_every_n_steps == 0 or last:
                means = self.epoch_means.pop_window()  # the only metric read-back of the step loop
                self.last_step_metrics = means or self.last_step_metrics
                now = time.perf_counter()
                if self.logger is not None and self.global_step % self.log_every_n_steps == 0:
                    scalars = {f"train/{key}_step": v for key, v in means.items()}
                    scalars.update(task.learning_rates())
                    scalars["perf/samples_per_s"] = samples_since_log / max(now - t_log, 1e-9)
                    self.logger.log_metrics(scalars, self.global_step)
                t_log, samples_since_log = now, 0
            self._call("on_train_batch_end")
            if self.stop_signals.requested and not self.pending_grads:
                raise Stopped(self.stop_signals.requested)  # at a step boundary, so last.ckpt resumes exactly
        train_time = time.perf_counter() - t_start

        totals, seen = self.epoch_means.totals, self.epoch_means.seen
        if distributed.current().active:  # training metrics over every rank's shard
            totals, seen = distributed.all_reduce_sums(totals, seen)
            distributed.broadcast_buffers(self.module)  # every rank validates the same model
        with averaged_weights(self.module, self.ema):
            val = task.evaluate(self._limit(data.eval_batches("val")))
        metrics = {f"train/{key}": v / max(seen, 1) for key, v in totals.items()}
        # Counts over the whole epoch, e.g. the perceptron's mistakes (none for most tasks).
        metrics.update({f"train/{key}": v for key, v in task.epoch_metrics().items()})
        if self.skipped_steps:
            metrics["train/skipped_steps"] = float(self.skipped_steps)
        metrics.update({f"val/{key}": v for key, v in val.items()})
        # A simple model's validation figures on the same split (n-gram, bag-of-words), if the task has one.
        metrics.update({f"baseline/{key}": v for key, v in task.baseline_metrics().items()})
        task.epoch_end(metrics)
        self.epoch += 1
        self.epoch_step = 0  # (epoch, epoch_step) = where a checkpoint taken now resumes
        self.metrics = metrics
        if self.logger is not None:
            epoch_scalars = dict(metrics)  # (lr is logged on the step axis only)
            epoch_scalars["perf/epoch_s"] = train_time
            epoch_scalars["perf/samples_per_s_epoch"] = self.epoch_means.seen / max(train_time, 1e-9)
            self.logger.log_epoch_metrics(epoch_scalars, self.epoch)
        # Pictures of the model now (reconstructions, GAN samples), one per epoch; none for most tasks.
        with averaged_weights(self.module, self.ema):
            for name, image in task.epoch_images().items():
                self._show(name, image, self.epoch)
            for name, text in task.epoch_text().items():
                log.info("%s after epoch %d:\n%s", name, self.epoch, text)
                if self.logger is not None:
                    self.logger.log_text(name, text, self.epoch)
        shown = "  ".join(f"{key} {v:.4f}" for key, v in metrics.items())
        log.info(
            "epoch %d/%d  %s  (%.2fs, %.0f samples/s)",
            self.epoch,
            self.max_epochs,
            shown,
            train_time,
            self.epoch_means.seen / max(train_time, 1e-9),
        )
        self._call("on_validation_end", metrics)  # decisions first (early stopping) ...
        self._call("on_epoch_end", metrics)  # ... so the checkpoints taken here record them
        if self.stop_signals.requested:
            raise Stopped(self.stop_signals.requested)

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
        raise diverged(cause, folder, skipping=self.nonfinite == "skip")

    def test(self, task: Task, data: Any) -> dict[str, float]:
        """Score the test split with the weights `test_ckpt` names; returns test/ metrics."""
        best = next((cb.best_path for cb in self.callbacks if getattr(cb, "best_path", None)), None)
        if self.test_ckpt == "best" and best is not None:
            state = resume.load_weights(self, best)
            log.info("Testing the best checkpoint (epoch %d): %s", state["epoch"], best)
        with averaged_weights(self.module, self.ema):
            results = task.evaluate(self._limit(data.eval_batches("test")), detailed=True)
            metrics = {f"test/{k}": v for k, v in results.items()}
            if self.logger is not None:  # per-class metrics as one table (Text tab), not a chart each
                self.logger.log_metrics(headline_metrics(metrics), self.epoch)
                table = per_class_table(metrics)
                if table:
                    self.logger.log_text("test/per_class", table, self.epoch)
            for name, figure in task.figures().items():
                log.info("Saved %s", self._show(f"test/{name}", figure, self.epoch))
            # Vectors for TensorBoard's Projector tab (e.g. an autoencoder's latent codes).
            if self.logger is not None:
                for name, (vectors, labels, images) in task.embeddings().items():
                    self.logger.log_embedding(name, vectors, labels, images, self.epoch)
        return metrics

    def _show(self, tag: str, image: Any, step: int) -> Path:
        """Log an image (a (C, H, W) tensor in [0, 1], or a matplotlib figure) to TensorBoard
        under `tag`, and save it as figures/<name>.png (the latest one, for image series)."""
        path = Path(self.output_dir) / "figures" / f"{tag.rsplit('/', 1)[-1]}.png"
        return save_image(image, path, self.logger, tag, step)

    def _log_summary(self, task: Task, data: Any) -> None:
        from nnlab.engine.summary import model_summary

        # Two rows of a validation batch, or the inputs a data module names (an environment's observations).
        example = getattr(data, "example_inputs", None)
        if example is None:
            batch = next(iter(data.eval_batches("val")), None)
            example = None if batch is None else batch[0][:2]
        log.info("Model:\n%s", model_summary(task.model, example))

    # ----------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to rebuild or continue the run from a file (the checkpoint callbacks
        write it); see `nnlab.engine.resume`."""
        return resume.checkpoint_state(self)

    def last_checkpoint(self) -> Path | None:
        """last.ckpt in this run's checkpoint folder, if there is one."""
        return resume.last_checkpoint(self)

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
