"""The training loop, written out: epochs of steps, validation, logging, checkpoints."""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import torch

from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.metrics import RunningMean
from nnlab.engine.precision import Precision
from nnlab.engine.rng import rng_state
from nnlab.engine.task import Task
from nnlab.errors import ConfigValueError, check_choice, check_range

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
    split, then `task.epoch_end` (schedulers), logging and the callbacks (checkpoints).
    Step metrics stay on the device and are averaged every `log_every_n_steps` steps, which is
    the only point a step reads anything back to the host.

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
        output_dir: the run directory (checkpoints go under it).
        callbacks, logger: given at build time by `nnlab.train`.
    """

    def __init__(
        self,
        max_epochs: int = 30,
        device: str = "auto",
        precision: str | int = "32",
        log_every_n_steps: int = 10,
        limit_train_batches: int | None = None,
        limit_eval_batches: int | None = None,
        deterministic: bool = False,
        detect_anomaly: bool = False,
        test_ckpt: str = "best",
        output_dir: str = ".",
        callbacks: list[Any] | None = None,
        logger: Any | None = None,
    ) -> None:
        check_range("trainer.max_epochs", max_epochs, 1)
        check_range("trainer.log_every_n_steps", log_every_n_steps, 1)
        for key, limit in (("limit_train_batches", limit_train_batches), ("limit_eval_batches", limit_eval_batches)):
            if limit is not None:
                check_range(f"trainer.{key}", limit, 1)
        check_choice("trainer.test_ckpt", test_ckpt, ["best", "last"])
        self.max_epochs = max_epochs
        self.device = resolve_device(device)
        self.precision = Precision(precision, self.device)
        self.log_every_n_steps = log_every_n_steps
        self.limit_train_batches = limit_train_batches
        self.limit_eval_batches = limit_eval_batches
        self.deterministic = deterministic
        self.detect_anomaly = detect_anomaly
        self.test_ckpt = test_ckpt
        self.output_dir = output_dir
        self.callbacks = callbacks or []
        self.logger = logger
        # Loop state: what a checkpoint records.
        self.epoch = 0  # completed epochs
        self.global_step = 0  # optimizer steps taken
        self.epoch_step = 0  # steps taken in the current epoch
        self.steps_per_epoch = 0
        self.last_step_metrics: dict[str, float] = {}
        self.metrics: dict[str, float] = {}  # latest epoch metrics
        self.extra_state: dict[str, Any] = {}  # e.g. the resolved config, saved with checkpoints
        self.task: Task | None = None

    # ----------------------------------------------------------------------------------------
    def fit(self, task: Task, data: Any) -> dict[str, float]:
        """Train for `max_epochs`; returns the last epoch's train/ and val/ metrics."""
        if self.deterministic:
            # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.task = task
        data.setup(self.device)
        self.steps_per_epoch = min(data.steps_per_epoch, self.limit_train_batches or data.steps_per_epoch)
        task.configure(self.device, self.precision, total_steps=self.max_epochs * self.steps_per_epoch)
        # Optional: initialisation that needs the data (a SOM's PCA init, a GAN's judge classifier).
        prepare = getattr(task, "prepare", None)
        if prepare is not None:
            prepare(data)
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
        self._call("on_fit_start")
        try:
            with torch.autograd.set_detect_anomaly(self.detect_anomaly):
                while self.epoch < self.max_epochs:
                    self._run_epoch(task, data)
        except KeyboardInterrupt:
            log.warning("Interrupted during epoch %d (step %d).", self.epoch + 1, self.global_step)
            self._call("on_interrupt")
            raise
        finally:
            self._call("on_fit_end")
            if self.logger is not None:
                self.logger.flush()
        return self.metrics

    def _run_epoch(self, task: Task, data: Any) -> None:
        task.model.train()
        window = RunningMean()  # step metrics since the last log
        totals: dict[str, float] = {}  # sample-weighted sums over the epoch
        seen = 0
        t_start = t_log = time.perf_counter()
        samples_since_log = 0
        self.epoch_step = 0
        batches = itertools.islice(data.train_batches(self.epoch), self.steps_per_epoch)
        for batch in batches:
            out = task.training_step(batch)
            n = len(batch[0])
            window.update(out, n)
            samples_since_log += n
            self.global_step += 1
            self.epoch_step += 1
            last = self.epoch_step == self.steps_per_epoch
            if self.global_step % self.log_every_n_steps == 0 or last:
                means, count = window.pop()  # the only host sync of the step loop
                for k, v in means.items():
                    totals[k] = totals.get(k, 0.0) + v * count
                seen += count
                self.last_step_metrics = means
                now = time.perf_counter()
                if self.logger is not None and self.global_step % self.log_every_n_steps == 0:
                    scalars = {f"train/{k}_step": v for k, v in means.items()}
                    scalars.update(task.learning_rates())
                    scalars["perf/samples_per_s"] = samples_since_log / max(now - t_log, 1e-9)
                    self.logger.log_metrics(scalars, self.global_step)
                t_log, samples_since_log = now, 0
            self._call("on_train_batch_end")
        train_time = time.perf_counter() - t_start

        val = task.evaluate(self._limit(data.eval_batches("val")))
        metrics = {f"train/{k}": v / max(seen, 1) for k, v in totals.items()}
        # Optional: counts over the whole epoch, e.g. the perceptron's mistakes.
        metrics.update({f"train/{k}": v for k, v in getattr(task, "epoch_metrics", dict)().items()})
        metrics.update({f"val/{k}": v for k, v in val.items()})
        task.epoch_end(metrics)
        self.epoch += 1
        self.epoch_step = 0  # (epoch, epoch_step) = where a checkpoint taken now resumes
        self.metrics = metrics
        if self.logger is not None:
            epoch_scalars = dict(metrics)  # (lr is logged on the step axis only)
            epoch_scalars["perf/epoch_s"] = train_time
            epoch_scalars["perf/samples_per_s_epoch"] = seen / max(train_time, 1e-9)
            self.logger.log_metrics(epoch_scalars, self.epoch)
        # Optional: pictures of the model now (reconstructions, GAN samples), one per epoch.
        for name, image in getattr(task, "epoch_images", dict)().items():
            self._show(name, image, self.epoch)
        shown = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        log.info(
            "epoch %d/%d  %s  (%.2fs, %.0f samples/s)",
            self.epoch,
            self.max_epochs,
            shown,
            train_time,
            seen / max(train_time, 1e-9),
        )
        self._call("on_epoch_end", metrics)

    def test(self, task: Task, data: Any) -> dict[str, float]:
        """Score the test split with the weights `test_ckpt` names; returns test/ metrics."""
        best = next((cb.best_path for cb in self.callbacks if getattr(cb, "best_path", None)), None)
        if self.test_ckpt == "best" and best is not None:
            state = load_checkpoint(best, map_location=self.device)
            task.model.load_state_dict(state["model"])
            log.info("Testing the best checkpoint (epoch %d): %s", state["epoch"], best)
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

    def _show(self, tag: str, image: Any, step: int) -> Path:
        """Log an image (a (C, H, W) tensor in [0, 1], or a matplotlib figure) to TensorBoard
        under `tag`, and save it as figures/<name>.png (the latest one, for image series)."""
        path = Path(self.output_dir) / "figures" / f"{tag.rsplit('/', 1)[-1]}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(image, torch.Tensor):
            from matplotlib.image import imsave

            pixels = image.detach().float().clamp(0, 1).cpu()
            imsave(path, pixels[0].numpy() if len(pixels) == 1 else pixels.permute(1, 2, 0).numpy(), cmap="gray")
            if self.logger is not None:
                self.logger.log_image(tag, pixels, step)
        else:
            image.savefig(path)
            if self.logger is not None:
                self.logger.log_figure(tag, image, step)  # closes the figure
            else:
                import matplotlib.pyplot as plt

                plt.close(image)
        return path

    # ----------------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to rebuild or continue the run from a file."""
        return {
            "model": self.task.model.state_dict(),
            "task": self.task.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "epoch_step": self.epoch_step,
            "metrics": dict(self.metrics),
            "rng": rng_state(),
            **self.extra_state,
        }

    def _limit(self, batches):
        return itertools.islice(batches, self.limit_eval_batches) if self.limit_eval_batches else batches

    def _call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(self, *args)
