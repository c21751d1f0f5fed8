"""The contract between the engine and a task.

The engine owns *when* things happen (epochs, logging intervals, checkpoints, devices); a task
owns *what* one step means: which losses, which optimizers, which updates. A classifier steps
one optimizer on cross-entropy; a GAN steps a discriminator then a generator; a self-organizing
map updates its weights with no gradients at all. All of them fit this Protocol, so the loop in
`nnlab.engine.trainer` never branches on the kind of model.

What a task supports it declares (the `supports_*` and `own_optimizer_parts` class attributes,
`single_optimizer()`): the trainer, the transfer options and the LR finder read these, never the
task's type or its model's layer names. A task that declares nothing supports none of it.

Besides the step and the evaluation, the trainer calls seven hooks on every task: `prepare`,
`epoch_metrics`, `baseline_metrics`, `epoch_images`, `epoch_text`, `figures` and `embeddings`.
Most tasks have something for only some of them; `TaskDefaults` gives the others' empty
answers, so a task inherits it and writes only the hooks it has.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import nn

from nnlab.engine.optim import UpdateRules
from nnlab.engine.precision import Precision


class Task(Protocol):
    model: nn.Module
    """Every trainable module of the task (a GAN's holds both networks); checkpointed as a whole."""

    supports_ddp: bool
    """True when the task trains only through model(x), so trainer.strategy=ddp may wrap the model
    in DistributedDataParallel (a GAN calls into the model's parts; a SOM learns without
    gradients). Read by `nnlab.engine.distributed.check_ddp_task`."""

    supports_backbone_lr_scale: bool
    """True when `configure` builds the optimizer from `nnlab.models.transfer.optimizer_params`
    (then `scale_group_lrs`), so the tensors copied by transfer.init_from train at
    lr x transfer.backbone_lr_scale. Read by `nnlab.models.transfer.check_task_support`."""

    own_optimizer_parts: tuple[str, ...]
    """The submodules of `model` that each train with an optimizer of their own (a GAN's
    "generator" and "discriminator"); empty when one optimizer, or none, trains the whole model.
    transfer.freeze must leave each of them something to train (`check_task_support`)."""

    prepare_when_restored: bool
    """True when `prepare` only reads the data (a tokenizer, a baseline, probe inputs) and leaves
    the weights alone, so a run rebuilt from a checkpoint (`nnlab.runs.restore.load_run`: eval,
    predict, export) calls it after loading the weights. A task whose `prepare` initialises
    weights (a SOM's PCA init) or trains a helper (a GAN's judge) leaves it False."""

    def single_optimizer(self) -> torch.optim.Optimizer | None:
        """The one gradient optimizer the task trains with, once configured: the one whose lr the
        LR range test (`nnlab.commands.lr_find`) sets. None when it has two (a GAN) or none (a SOM, a
        perceptron)."""

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        """Move to `device` and build optimizers/schedulers (`total_steps` = optimizer steps
        planned). Gradient-based tasks hand `rules` (accumulation, clipping, penalties, the
        non-finite check) to each `Optimization`; tasks without gradients reject any rule that
        would do nothing for them (`nnlab.engine.optim.require_no_gradient_rules`)."""

    def prepare(self, data: Any) -> None:
        """Called once per fit, after `configure` and before any checkpoint is restored:
        initialisation that needs the data module `data` (a SOM's PCA init, the judge classifier
        that scores a GAN's samples, the anomaly classes a reconstruction task leaves out)."""

    def training_step(self, batch: Any, update: bool = True) -> dict[str, torch.Tensor]:
        """Do one training step on `batch`; return detached 0-dim metric tensors (on device).

        `update` says whether this batch ends with an optimizer update: False while a window of
        trainer.accumulate_grad_batches = k > 1 batches is open (backward only, the gradients
        kept for the next batch), True on its k-th batch and on the epoch's last. Pass it to every
        `Optimization.step` of the step. Tasks without gradients refuse accumulation in
        `configure`, so they only ever get True.

        The engine averages the metrics over the logging interval and the epoch, reading them
        back to the host only at those points, so a step never forces a device synchronisation.
        """

    def evaluate(self, batches: Iterable[Any], detailed: bool = False) -> dict[str, float]:
        """Metrics over a whole split (no gradients, eval mode), e.g. {"loss": .., "acc": ..}.
        `detailed` (the final test) asks for the full report, e.g. per-class metrics."""

    def epoch_metrics(self) -> dict[str, float]:
        """Called once per epoch, after its training steps and validation: totals over the epoch's
        training steps (not per-sample means), logged as train/<name>, e.g. the perceptron's
        mistakes. Empty for most tasks."""

    def baseline_metrics(self) -> dict[str, float]:
        """Called once per epoch: the validation metrics of a simple model fitted on the same
        split (an n-gram model for a language model, bag-of-words for text), logged as the run
        `baseline` on the same charts as train and val. Empty for most tasks."""

    def epoch_text(self) -> dict[str, str]:
        """Called after each validation, with the evaluation weights: {tag: Markdown} for the Text
        tab at step = epoch, e.g. a language model's sampled continuation of a fixed prompt."""

    def epoch_images(self) -> dict[str, Any]:
        """Called after each validation, with the evaluation weights (the EMA when set): {tag:
        (C, H, W) tensor in [0, 1] or matplotlib figure}, logged at step = epoch and saved as
        figures/<name>.png, e.g. reconstructions, or a GAN's samples from a fixed noise batch."""

    def figures(self) -> dict[str, Any]:
        """Called after testing: {name: matplotlib figure}, logged as test/<name> and saved as
        figures/<name>.png, e.g. a confusion matrix or a U-matrix."""

    def embeddings(self) -> dict[str, tuple[torch.Tensor, list[str] | None, torch.Tensor | None]]:
        """Called after testing when a logger is set: {tag: (vectors (N, D), labels or None,
        thumbnails (N, C, H, W) in [0, 1] or None)} for TensorBoard's Projector tab, e.g. an
        autoencoder's codes."""

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        """Called after each validation: step per-epoch schedulers (plateau ones read val metrics)."""

    def learning_rates(self) -> dict[str, float]:
        """Current learning rate of each optimizer, for logging ({"lr": ..} or {"lr/g": .., "lr/d": ..})."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer, scheduler and grad-scaler state (the model's weights are saved separately)."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskDefaults:
    """The hooks' answers for a task that has nothing for them: no data-dependent setup, no
    epoch totals, no pictures, no embeddings. A task inherits this and overrides the hooks it
    has (see `Task` for when each is called); it holds no state and no other behaviour."""

    def prepare(self, data: Any) -> None:
        return None

    def epoch_metrics(self) -> dict[str, float]:
        return {}

    def baseline_metrics(self) -> dict[str, float]:
        return {}

    def epoch_text(self) -> dict[str, str]:
        return {}

    def epoch_images(self) -> dict[str, Any]:
        return {}

    def figures(self) -> dict[str, Any]:
        return {}

    def embeddings(self) -> dict[str, tuple[torch.Tensor, list[str] | None, torch.Tensor | None]]:
        return {}
