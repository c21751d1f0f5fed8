"""Supervised learning: predict y from x with one optimizer, for classification or regression."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.analysis.adversarial import METHODS as ATTACKS
from nnlab.analysis.adversarial import perturb
from nnlab.engine.metrics import Accuracy
from nnlab.engine.optim import Optimization, UpdateRules, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_choice, check_range
from nnlab.models import transfer
from nnlab.tasks.metrics import classification_metrics, regression_metrics

log = logging.getLogger(__name__)

# Each loss maps (out, y, class weights or None, label smoothing) to a scalar: out is (B, K)
# logits and y (B,) class indices for classification; out and y are (B,) or (B, T) values for
# regression.
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, float], torch.Tensor]


def _kl_div(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    k = out.shape[1]
    target = F.one_hot(y, k).to(out.dtype) * (1 - eps) + eps / k  # (B, K), label-smoothed one-hot
    return F.kl_div(F.log_softmax(out, 1), target, reduction="batchmean")


# The losses of each data kind, by name: the one source of the choices of `task.loss` (its type
# hint `LossName` and its error messages are built from it). The first of a kind is its default.
LOSSES: dict[str, dict[str, LossFn]] = {
    "classification": {
        "cross_entropy": lambda out, y, w, eps: F.cross_entropy(out, y, weight=w, label_smoothing=eps),
        "nll": lambda out, y, w, eps: F.nll_loss(F.log_softmax(out, 1), y, weight=w),
        "bce": lambda out, y, w, eps: F.binary_cross_entropy_with_logits(out, F.one_hot(y, out.shape[1]).to(out.dtype)),
        "hinge": lambda out, y, w, eps: F.multi_margin_loss(out, y, weight=w),
        "kl_div": _kl_div,
    },
    "regression": {
        "mse": lambda out, y, w, eps: F.mse_loss(out, y),
        "mae": lambda out, y, w, eps: F.l1_loss(out, y),
        "huber": lambda out, y, w, eps: F.huber_loss(out, y),
    },
}
# `task.loss`'s type hint, which `nnlab.checks.validation` reads to check a configured name (with a
# "did you mean") before anything is built.
LossName = Literal[("auto", *(name for losses in LOSSES.values() for name in losses))]
# The losses that take `class_weight: balanced` (a weight per class in the loss).
CLASS_WEIGHTED = ("cross_entropy", "nll", "hinge")


class Supervised(TaskDefaults):
    """One optimizer minimising a loss between model(x) and y.

    The dataset's kind picks the defaults: cross-entropy for classification, MSE for regression
    (`loss: auto`). The model outputs logits (classification) or values (regression).
    Classification losses, for K classes:
      - cross_entropy: -log softmax(z)_y, optionally with label smoothing.
      - nll: negative log-likelihood of log_softmax(z); the same value as cross_entropy, spelled
        the way a model ending in LogSoftmax would be trained.
      - bce: one-vs-rest binary cross-entropy, a sigmoid per class against the one-hot target.
      - hinge: multi-class margin loss, sum_j max(0, 1 - z_y + z_j) / K (Crammer-Singer style SVM).
      - kl_div: KL(target || softmax(z)) with a (label-smoothed) one-hot target.
    Regression losses: mse, mae, huber (quadratic below 1, linear above: robust to outliers).

    Metrics come from `nnlab.tasks.metrics` over a whole split: loss, accuracy and macro-F1
    (plus ROC-AUC for binary problems, and per-class precision/recall/F1 on the test split), or
    MSE, MAE and R^2. After testing, `figures()` gives the test confusion matrix.

    Args:
        model: maps (B, *input_shape) to (B, num_outputs).
        optimizer: a factory taking `params` (a Hydra `_partial_` optimizer config).
        scheduler: a factory taking `optimizer`, or None.
        kind: "classification" or "regression", given by the dataset.
        class_names: the dataset's class names (classification), for per-class metrics.
        loss: auto or one of the losses above.
        label_smoothing: target smoothing in [0, 1) for cross_entropy and kl_div: the true
            class gets 1 - eps + eps/K, every other class eps/K.
        class_counts: training rows per class, given by the dataset (for class weights).
        class_weight: "none", or "balanced": weight class c by n / (K * n_c) in cross_entropy,
            nll or hinge, so rare classes count as much as common ones in total.
        adversarial: adversarial training (classification): "none", "fgsm" or "pgd". Each step
            replaces a share of the batch by adversarial examples against the current model
            (`nnlab.analysis.adversarial`), generated in eval mode (no BN statistics, no dropout)
            without gradients into the weights, then trains on the mixed batch (Goodfellow et al.
            2015 mix clean and FGSM examples; Madry et al. 2018 train on PGD examples).
        adversarial_eps: the L-infinity budget, in the units the model sees (pixels when
            data.standardize=false).
        adversarial_steps: PGD steps (>= 1); each costs one forward and backward pass.
        adversarial_step_size: PGD step size; None: 2.5 * eps / steps.
        adversarial_fraction: the share of each batch replaced, in (0, 1]; 0.5 keeps clean accuracy
            close to a normal run, 1.0 is Madry et al.'s pure adversarial training.
    """

    # What this task supports, declared for the engine and the commands (see nnlab.engine.task.Task).
    supports_ddp = True  # trains only through model(x): DistributedDataParallel can wrap it
    supports_backbone_lr_scale = True  # `configure` builds the optimizer from transfer.optimizer_params
    own_optimizer_parts: tuple[str, ...] = ()  # one optimizer trains the whole model
    prepare_when_restored = True  # `prepare` reads the data (tokenizer, baselines) and leaves the weights alone

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        kind: str = "classification",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        loss: LossName = "auto",
        label_smoothing: float = 0.0,
        class_weight: str = "none",
        adversarial: str = "none",
        adversarial_eps: float = 0.1,
        adversarial_steps: int = 7,
        adversarial_step_size: float | None = None,
        adversarial_fraction: float = 0.5,
    ) -> None:
        check_choice("data kind", kind, LOSSES)
        if loss == "auto":
            loss = next(iter(LOSSES[kind]))
        check_choice(f"task.loss (for {kind})", loss, LOSSES[kind])
        check_range("task.label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        check_choice("task.class_weight", class_weight, ["none", "balanced"])
        self.class_weights: torch.Tensor | None = None
        if class_weight == "balanced":
            if kind != "classification" or loss not in CLASS_WEIGHTED:
                weighted = f"{', '.join(CLASS_WEIGHTED[:-1])} or {CLASS_WEIGHTED[-1]}"
                raise ConfigValueError(
                    f"task.class_weight=balanced weights the {weighted} loss of a classification task, but this "
                    f"run uses loss={loss} on {kind} data."
                )
            counts = torch.tensor(class_counts, dtype=torch.float32).clamp_min(1)
            self.class_weights = counts.sum() / (len(counts) * counts)  # n / (K * n_c)
        check_choice("task.adversarial", adversarial, ["none", *ATTACKS])
        if adversarial != "none":
            if kind != "classification":
                raise ConfigValueError(
                    f"task.adversarial={adversarial} attacks a classifier's cross-entropy, but this run's data "
                    f"are {kind}. Set task.adversarial=none."
                )
            check_range("task.adversarial_eps", adversarial_eps, 0.0, low_inclusive=False)
            check_range("task.adversarial_steps", adversarial_steps, 1)
            if adversarial_step_size is not None:
                check_range("task.adversarial_step_size", adversarial_step_size, 0.0, low_inclusive=False)
            check_range("task.adversarial_fraction", adversarial_fraction, 0.0, 1.0, low_inclusive=False)
        self.adversarial = adversarial
        self.adversarial_eps = adversarial_eps
        self.adversarial_steps = adversarial_steps
        self.adversarial_step_size = adversarial_step_size
        self.adversarial_fraction = adversarial_fraction
        self.model = model
        self.kind = kind
        self.class_names = class_names
        self.loss_name = loss
        self.label_smoothing = label_smoothing
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim: Optimization | None = None
        self.precision: Precision | None = None
        self._confusion = None
        self._probe: torch.Tensor | None = None  # a few validation inputs, for attention maps
        self.tokenizer: Any = None
        self._baseline_data: Any = None  # text classification: the data the baseline is fitted on
        self.baseline_val: dict[str, float] = {}
        self.baseline_test: dict[str, float] = {}

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        self.model.to(device)
        self.precision = precision
        if self.class_weights is not None:
            self.class_weights = self.class_weights.to(device)
        # model.parameters() unless transfer options were applied (nnlab.models.transfer): then
        # the trainable parameters, the copied ones at lr x transfer.backbone_lr_scale.
        optimizer = self._optimizer_factory(params=transfer.optimizer_params(self.model))
        transfer.scale_group_lrs(optimizer)
        scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps)
        self.optim = Optimization(optimizer, scheduler, precision.grad_scaler(), rules=rules)

    def prepare(self, data: Any) -> None:
        """Keep a few validation inputs for attention maps (a model with attention) and, for text
        classification, the data, whose bag-of-words baseline is fitted when first asked for (a
        run rebuilt to predict never needs it)."""
        self.tokenizer = getattr(data, "tokenizer", None)
        if hasattr(self.model, "attention_maps"):
            self._probe = next(iter(data.eval_batches("val")))[0][:3]
        if self.tokenizer is not None and self.kind == "classification":
            self._baseline_data = data

    def _fit_baseline(self) -> None:
        """The bag-of-words logistic regression on the training rows, scored on val and test (once)."""
        if self._baseline_data is None or self.baseline_val:
            return
        from nnlab.analysis.text_baselines import bag_of_words

        data = self._baseline_data
        scores = bag_of_words(data.arrays("train"), {s: data.arrays(s) for s in ("val", "test")})
        self.baseline_val, self.baseline_test = {"acc": scores["val"]}, {"acc": scores["test"]}
        log.info("Baseline: bag-of-words logistic regression, val acc %.4f", scores["val"])

    def baseline_metrics(self) -> dict[str, float]:
        self._fit_baseline()
        return dict(self.baseline_val)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "regression":
            out = out.view_as(y)  # (B, 1) -> (B,) for single-target regression
        return LOSSES[self.kind][self.loss_name](out, y, self.class_weights, self.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x, y = batch
        if self.adversarial != "none":
            x = self.adversarial_batch(x, y)
        with self.precision.autocast():
            out = self.model(x)
            loss = self.loss(out.float(), y)
        self.optim.step(loss, update)
        metrics: dict[str, torch.Tensor | Accuracy] = {"loss": loss.detach()}
        if self.kind == "classification":
            metrics["acc"] = Accuracy(out.detach(), y)  # counted when the trainer logs
        return metrics

    def adversarial_batch(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x with its first `adversarial_fraction` rows replaced by adversarial examples."""
        n = max(1, round(self.adversarial_fraction * len(x)))
        model = getattr(self.model, "module", self.model)  # unwrap DDP: the attack needs no gradient sync
        training = model.training
        model.eval()  # attack the model as it predicts: no BN statistic updates, no dropout
        try:
            x_adv = perturb(
                self.adversarial,
                model,
                x[:n],
                y[:n],
                self.adversarial_eps,
                self.adversarial_steps,
                self.adversarial_step_size,
            )
        finally:
            model.train(training)
        return torch.cat([x_adv, x[n:]])

    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        self.model.eval()
        outs, ys = [], []
        for x, y in batches:
            with self.precision.autocast():
                outs.append(self.model(x).float())
            ys.append(y)
        out, y = (outs[0], ys[0]) if len(outs) == 1 else (torch.cat(outs), torch.cat(ys))  # (one batch: no copy)
        metrics = {"loss": self.loss(out, y).item()}
        if self.kind == "classification":
            more, confusion = classification_metrics(out, y, self.class_names, detailed)
            if detailed:
                self._confusion = confusion
        else:
            more = regression_metrics(out, y)
        metrics.update(more)
        if detailed:  # the final test: the baseline's score on the same rows, beside the network's
            self._fit_baseline()
            metrics.update({f"baseline_{k}": v for k, v in self.baseline_test.items()})
        return metrics

    def figures(self) -> dict[str, Any]:
        """Figures of the last detailed (test) evaluation: the confusion matrix, if any, and the
        attention maps of a few validation samples for a model with attention."""
        figures = {}
        if self._confusion is not None:
            from nnlab.tasks.metrics import confusion_figure

            names = self.class_names or [str(i) for i in range(len(self._confusion))]
            figures["confusion_matrix"] = confusion_figure(self._confusion, names)
        if self._probe is not None:
            from nnlab.analysis.attention import probe_figure

            figures["attention"] = probe_figure(self.model, self._probe, self.tokenizer)
        return figures

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": self.optim.lr}

    def single_optimizer(self) -> torch.optim.Optimizer | None:
        return self.optim.optimizer if self.optim is not None else None  # None until `configure`

    def state_dict(self) -> dict[str, Any]:
        return {"optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optim"])
