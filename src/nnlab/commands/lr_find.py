"""`nnlab-lr-find` (also `python -m nnlab.commands.lr_find`): the LR range test, to pick `optimizer.lr`.

    build the run nnlab-train would -> one batch per lr, the lr growing exponentially
    -> smoothed loss vs lr -> suggestion -> figures/lr_find.png, TensorBoard, lr_find.json

The test (Smith 2015, "Cyclical learning rates for training neural networks"; fast.ai's lr_find)
trains for a few dozen batches while the learning rate grows from far too small to far too
large. At first the loss hardly moves, then it falls faster and faster, bottoms out, and blows
up. A good learning rate lies where the loss falls fastest: large enough to learn quickly, well
below the point where training turns unstable.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.optim import Optimizer

from nnlab.checks.validation import validate_config
from nnlab.cli import app
from nnlab.cli.app import guarded
from nnlab.cli.console import print_config_tree
from nnlab.cli.overrides import explainer
from nnlab.engine.optim import NonFiniteStep
from nnlab.engine.rng import seed_everything
from nnlab.engine.tensorboard import TensorBoardLogger, save_image
from nnlab.errors import ConfigValueError, UserError, check_range
from nnlab.runs.build import build
from nnlab.runs.pipeline import save_run_record
from nnlab.runs.runinfo import write_json

log = logging.getLogger(__name__)

STEEPEST = "steepest descent of the smoothed loss"
TENTH_OF_MINIMUM = "a tenth of the lr at the loss minimum"


@dataclass
class Curve:
    """What a range test records: the lr of each step and the loss it gave, raw and smoothed."""

    lr: list[float]
    loss: list[float]
    smoothed_loss: list[float]
    stopped: str  # why the sweep ended


class RangeTest:
    """Sweep the learning rate exponentially, one batch per value, and record the loss.

    Step i (of n) trains one batch at lr_i = start_lr * (end_lr / start_lr)^(i / (n - 1)), so the
    lrs are evenly spaced on a log axis. The loss of a single batch is noisy, so it is smoothed
    with fast.ai's bias-corrected exponential moving average:

        avg_i = beta * avg_(i-1) + (1 - beta) * loss_i,    smoothed_i = avg_i / (1 - beta^(i+1))

    (the correction makes the first values averages rather than shrunk towards 0). The sweep
    stops early once the smoothed loss exceeds `diverge_factor` times its best value, or the loss
    is not finite: past that point the lr only wrecks the weights.

    Args:
        start_lr: first lr, > 0: low enough that the loss barely moves.
        end_lr: last lr, > start_lr: high enough that the loss blows up.
        num_steps: batches (and lrs) in the sweep, >= 2; a few dozen to a few hundred.
        smoothing: beta of the moving average, in [0, 1); 0 keeps the raw loss. The average lags
            the raw loss by about beta / (1 - beta) steps (49 at fast.ai's 0.98, 9 at 0.9), which
            shifts the curve, and so the suggestion, towards larger lrs in a short sweep.
        diverge_factor: > 1; the smoothed loss at which the sweep stops, as a multiple of the best.
    """

    def __init__(
        self,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_steps: int = 100,
        smoothing: float = 0.95,
        diverge_factor: float = 4.0,
    ) -> None:
        check_range("lr_find.start_lr", start_lr, 0.0, low_inclusive=False)
        if end_lr <= start_lr:
            raise ConfigValueError(
                f"lr_find.end_lr={end_lr!r} must be above lr_find.start_lr={start_lr!r}: the sweep raises "
                "the lr from start_lr to end_lr. Use e.g. lr_find.start_lr=1e-7 lr_find.end_lr=10."
            )
        check_range("lr_find.num_steps", num_steps, 2)
        check_range("lr_find.smoothing", smoothing, 0.0, 1.0, high_inclusive=False)
        check_range("lr_find.diverge_factor", diverge_factor, 1.0, low_inclusive=False)
        self.start_lr = start_lr
        self.end_lr = end_lr
        self.num_steps = num_steps
        self.smoothing = smoothing
        self.diverge_factor = diverge_factor

    def lr_at(self, step: int) -> float:
        return self.start_lr * (self.end_lr / self.start_lr) ** (step / (self.num_steps - 1))

    def run(
        self,
        task: Any,
        optimizer: Optimizer,
        batches: Iterator[Any],
        on_step: Callable[[int, float, float, float], None] | None = None,
    ) -> Curve:
        """Train `task` on `batches`, setting every param group of `optimizer` to the step's lr
        first; `on_step(step, lr, loss, smoothed_loss)` is called after each step."""
        curve = Curve([], [], [], stopped=f"completed all {self.num_steps} steps")
        avg, best = 0.0, math.inf
        task.model.train()
        for step in range(self.num_steps):
            lr = self.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            try:
                loss = float(task.training_step(next(batches))["loss"])  # one host sync per step
            except NonFiniteStep as e:  # the update's own check (trainer.rules.check_finite) refused it
                curve.stopped = f"stopped at a {e} at step {step + 1}, lr={lr:.3g}"
                break
            if not math.isfinite(loss):
                curve.stopped = f"stopped at a loss of {loss} at step {step + 1}, lr={lr:.3g}"
                break
            avg = self.smoothing * avg + (1 - self.smoothing) * loss
            smoothed = avg / (1 - self.smoothing ** (step + 1))
            curve.lr.append(lr)
            curve.loss.append(loss)
            curve.smoothed_loss.append(smoothed)
            if on_step is not None:
                on_step(step, lr, loss, smoothed)
            if smoothed > self.diverge_factor * best:
                curve.stopped = (
                    f"diverged at step {step + 1}, lr={lr:.3g}: the smoothed loss passed "
                    f"{self.diverge_factor:g}x its best"
                )
                break
            best = min(best, smoothed)
        return curve


@dataclass
class Suggestion:
    lr: float
    rule: str  # how `lr` was chosen: STEEPEST, or TENTH_OF_MINIMUM when the loss never fell
    index: int  # the step of `lr` in the curve
    min_loss_lr: float  # the lr at the minimum of the smoothed loss
    min_loss_index: int

    @property
    def tenth_of_min(self) -> float:
        """The other common rule of thumb: a tenth of the lr at the loss minimum."""
        return self.min_loss_lr / 10


def suggest_lr(lrs: Sequence[float], smoothed_loss: Sequence[float], skip_fraction: float = 0.1) -> Suggestion:
    """The lr where the smoothed loss falls fastest against log10(lr).

    The slope d loss / d log10(lr) is taken with `np.gradient` (central differences) and its most
    negative value is searched between the first `skip_fraction` of the steps (where the moving
    average has seen few batches) and the minimum of the smoothed loss (beyond which the loss
    rises, so any descent there is noise). If that leaves no descent, the suggestion falls back
    to a tenth of the lr at the loss minimum.
    """
    lr = np.asarray(lrs, dtype=float)
    loss = np.asarray(smoothed_loss, dtype=float)
    if len(lr) < 3:
        raise UserError(
            f"The LR range test recorded only {len(lr)} step(s) before the loss diverged, too few to "
            "suggest an lr: the sweep starts too high. Start it lower, e.g. "
            f"lr_find.start_lr={(lr[0] if len(lr) else 1e-7) / 1000:.0e}."
        )
    i_min = int(np.argmin(loss))
    start = max(1, int(skip_fraction * len(lr)))
    if i_min - start >= 1:
        slope = np.gradient(loss, np.log10(lr))
        i = start + int(np.argmin(slope[start:i_min]))
        if slope[i] < 0:
            return Suggestion(float(lr[i]), STEEPEST, i, float(lr[i_min]), i_min)
    return Suggestion(float(lr[i_min]) / 10, TENTH_OF_MINIMUM, i_min, float(lr[i_min]), i_min)


def single_optimizer(task: Any) -> Optimizer:
    """The one optimizer a configured task declares it trains with (`task.single_optimizer()`, see
    `nnlab.engine.task.Task`), or a UserError (a task that declares none has none to sweep)."""
    optimizer = task.single_optimizer()
    if not isinstance(optimizer, Optimizer):
        choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
        name = type(task).__module__ + "." + type(task).__name__
        chosen = f"task={choices['task']} ({name})" if choices.get("task") else name
        raise UserError(
            f"The LR finder needs a task that trains with one gradient optimizer (task=supervised or "
            f"task=reconstruction), but this run's task is {chosen}, which has no single "
            "optimizer to sweep (a GAN has two, a SOM or perceptron none). Pick a model or "
            "experiment that trains with task=supervised or task=reconstruction, e.g. experiment=digits_mlp."
        )
    return optimizer


def endless(data: Any) -> Iterator[Any]:
    """Training batches of epoch 0, 1, 2, ...: a sweep may be longer than one epoch."""
    for epoch in itertools.count():
        yield from data.train_batches(epoch)


def plot(curve: Curve, suggestion: Suggestion):
    """Loss vs lr on a log axis: raw (faint), smoothed (bold), the suggestion marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(curve.lr, curve.loss, color="C0", alpha=0.3, lw=1, label="loss")
    ax.plot(curve.lr, curve.smoothed_loss, color="C0", lw=2.5, label="smoothed loss")
    y = curve.smoothed_loss[suggestion.index]
    ax.axvline(suggestion.lr, color="C3", ls="--", lw=1)
    ax.plot([suggestion.lr], [y], "o", color="C3", ms=8, label=f"suggested lr = {suggestion.lr:.3g}")
    ax.axvline(
        suggestion.min_loss_lr, color="grey", ls=":", lw=1, label=f"loss minimum, lr = {suggestion.min_loss_lr:.3g}"
    )
    # Keep the blow-up at the end from squashing the part of the curve that matters.
    low = min(min(curve.loss), min(curve.smoothed_loss))
    high = max(curve.smoothed_loss[: suggestion.min_loss_index + 1] + curve.loss[:1])
    margin = 0.1 * (high - low) or 0.1 * abs(high) or 1.0
    ax.set_ylim(low - margin, high + 2 * margin)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"LR range test: suggested lr at the {suggestion.rule}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lr_find(cfg: DictConfig) -> Suggestion:
    """Build the run `cfg` describes, sweep its optimizer's lr, write and print the suggestion."""
    if cfg.get("scheduler"):
        log.info("Ignoring scheduler <%s>: the range test sets the lr itself", cfg.scheduler._target_)
    with open_dict(cfg):
        cfg.scheduler = None
    validate_config(cfg)
    if cfg.get("print_config"):
        print_config_tree(cfg)
    output_dir = Path(cfg.paths.output_dir)
    seed_everything(cfg.seed)

    range_test = instantiate(cfg.lr_find)
    parts = build(cfg)
    data, task, trainer = parts.data, parts.task, parts.trainer
    data.setup(trainer.device)
    # The run's update rules (gradient clipping, penalties) shape which lrs are stable, so the sweep
    # keeps them; but it sets one lr per update, so every batch is an update.
    rules = trainer.rules
    if rules.accumulate_grad_batches > 1:
        log.info(
            "Ignoring trainer.accumulate_grad_batches=%d: the range test updates every batch",
            rules.accumulate_grad_batches,
        )
        rules = dataclasses.replace(rules, accumulate_grad_batches=1)
    task.configure(trainer.device, trainer.precision, total_steps=range_test.num_steps, rules=rules)
    optimizer = single_optimizer(task)
    save_run_record(cfg, output_dir)  # once the run is known to be possible (see its docstring)
    task.prepare(data)  # e.g. a reconstruction task's data-dependent setup
    log.info(
        "LR range test of %s on %s: %d steps, lr %.3g -> %.3g",
        type(task.model).__name__,
        trainer.device,
        range_test.num_steps,
        range_test.start_lr,
        range_test.end_lr,
    )

    logger = TensorBoardLogger(str(output_dir))
    try:

        def log_step(step: int, lr: float, loss: float, smoothed: float) -> None:
            logger.log_metrics({"lr_find/lr": lr, "lr_find/loss": loss, "lr_find/smoothed_loss": smoothed}, step)

        curve = range_test.run(task, optimizer, endless(data), on_step=log_step)
        log.info("Sweep %s", curve.stopped)
        suggestion = suggest_lr(curve.lr, curve.smoothed_loss)
        figure = plot(curve, suggestion)
        figure_path = save_image(
            figure, output_dir / "figures" / "lr_find.png", logger, "lr_find/loss_vs_lr", len(curve.lr) - 1
        )
    finally:
        logger.close()

    record = {
        "suggested_lr": suggestion.lr,
        "suggestion_rule": suggestion.rule,
        "min_loss_lr": suggestion.min_loss_lr,
        "min_loss_lr_div_10": suggestion.tenth_of_min,
        "stopped": curve.stopped,
        **{k: getattr(range_test, k) for k in ("start_lr", "end_lr", "num_steps", "smoothing", "diverge_factor")},
        "lr": curve.lr,
        "loss": curve.loss,
        "smoothed_loss": curve.smoothed_loss,
    }
    write_json(record, output_dir / "lr_find.json")
    log.info("Saved %s, %s and TensorBoard logs in %s", figure_path.name, "lr_find.json", output_dir)
    print(
        f"Suggested optimizer.lr={suggestion.lr:.3g} ({suggestion.rule}). "
        f"Loss minimum at lr={suggestion.min_loss_lr:.3g}; a tenth of it: {suggestion.tenth_of_min:.3g}.\n"
        f"Rerun with: {rerun_command(suggestion.lr)}"
    )
    return suggestion


def rerun_command(lr: float) -> str:
    """`nnlab-train <this command's overrides> optimizer.lr=<lr>`, shell-quoted."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("lr_find.", "lr_find=", "optimizer.lr="))]
    return shlex.join(["nnlab-train", *kept, f"optimizer.lr={lr:.3g}"])


@hydra.main(version_base="1.3", config_path="pkg://nnlab.configs", config_name="lr_find")
def main(cfg: DictConfig) -> None:
    guarded(lambda: lr_find(cfg), output_dir=cfg.paths.output_dir)


# nnlab.cli.overrides.explain, which knows train.yaml's keys, plus the keys of `lr_find`.
explain_override = explainer("lr_find", RangeTest)


def cli() -> None:
    """The `nnlab-lr-find` command: Hydra's `main`, with clearer composition errors (as nnlab-train)."""
    app.cli(main, explain_override)


if __name__ == "__main__":
    cli()
