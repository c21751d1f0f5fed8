"""The perceptron learning rule: correct the weights only on mistakes, one sample at a time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from nnlab.engine.optim import UpdateRules, require_no_gradient_rules
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.errors import ConfigValueError, check_range
from nnlab.models.perceptron import Perceptron
from nnlab.tasks.metrics import classification_metrics


class PerceptronRule(TaskDefaults):
    """Online perceptron training (Rosenblatt 1958), one-vs-rest for more than two classes.

    For each training sample x with label t in {-1, +1} (per unit: +1 for its class, -1 for the
    rest), a unit with score s = w.x + b that gets the sign wrong (t * s <= 0) is updated:

        w <- w + lr * t * x,    b <- b + lr * t

    Correct samples change nothing. If the classes are linearly separable with margin gamma and
    |x| <= R, the rule makes at most (R / gamma)^2 mistakes in total (Novikoff, 1962), so the
    mistakes per epoch fall to 0; on circles or XOR no line separates the classes and the count
    never settles. `train/mistakes` logs that count per epoch; `train/loss` is the perceptron
    criterion mean(max(0, -t * s)) measured before each update.

    The rule needs no optimizer or scheduler (nor class counts): those are accepted and ignored.
    """

    # What this task supports, declared for the engine and the commands (see nnlab.engine.task.Task).
    supports_ddp = False  # learns without gradients: nothing for DDP to average
    supports_backbone_lr_scale = False  # no optimizer
    own_optimizer_parts: tuple[str, ...] = ()

    def __init__(
        self,
        model: Perceptron,
        optimizer: Any = None,
        scheduler: Any = None,
        kind: str = "classification",
        class_names: list[str] | None = None,
        class_counts: list[int] | None = None,
        lr: float = 1.0,
    ) -> None:
        if not isinstance(model, Perceptron):
            raise ConfigValueError(
                f"task=perceptron applies the perceptron rule to model=perceptron, but the model is a "
                f"{type(model).__name__}. Use model=perceptron (it selects this task), or task=supervised."
            )
        if kind != "classification":
            raise ConfigValueError(
                f"model=perceptron is a classifier, but the dataset is {kind}. Choose a classification "
                "dataset (e.g. data=blobs, data=iris, data=circles)."
            )
        check_range("task.lr", lr, 0.0, low_inclusive=False)
        self.model = model
        self.lr = lr
        self.class_names = class_names
        self.precision: Precision | None = None
        self._mistakes: torch.Tensor | None = None

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        require_no_gradient_rules(rules, "perceptron")
        self.model.to(device)
        self.precision = precision
        self._mistakes = torch.zeros((), device=device)

    def _signed_targets(self, y: torch.Tensor) -> torch.Tensor:
        """(B, units) targets in {-1, +1}: the class itself for one unit, one-vs-rest for K."""
        units = self.model.weight.shape[0]
        onehot = (y[:, None] == 1) if units == 1 else F.one_hot(y, units).bool()
        return onehot.float() * 2 - 1

    @torch.no_grad()
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], update: bool = True) -> dict[str, torch.Tensor]:
        x, y = batch
        x = x.flatten(1)
        t = self._signed_targets(y)  # (B, units)
        w, b = self.model.weight, self.model.bias
        criterion = torch.zeros((), device=x.device)
        mistakes = torch.zeros((), device=x.device)
        for i in range(len(x)):  # the rule is sequential: each update changes the next score
            s = w @ x[i] + b  # (units,)
            wrong = (t[i] * s <= 0).float()  # units that got this sample's sign wrong
            criterion += torch.clamp(-t[i] * s, min=0).sum()
            mistakes += wrong.max()
            step = self.lr * wrong * t[i]  # (units,)
            w += step[:, None] * x[i]
            b += step
        self._mistakes += mistakes
        scores = self.model(x)
        return {"loss": criterion / len(x), "acc": (scores.argmax(1) == y).float().mean()}

    @torch.no_grad()
    def evaluate(
        self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], detailed: bool = False
    ) -> dict[str, float]:
        scores, ys = [], []
        for x, y in batches:
            scores.append(self.model.scores(x))
            ys.append(y)
        s, y = torch.cat(scores), torch.cat(ys)
        criterion = torch.clamp(-self._signed_targets(y) * s, min=0).sum(1).mean()
        logits = torch.cat([torch.zeros_like(s), s], 1) if s.shape[1] == 1 else s
        metrics, _ = classification_metrics(logits, y, self.class_names, detailed)
        return {"loss": criterion.item(), **metrics}

    def epoch_metrics(self) -> dict[str, float]:
        """Totals over the epoch just finished (then reset): the number of samples misclassified."""
        count = float(self._mistakes.item())
        self._mistakes.zero_()
        return {"mistakes": count}

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        pass

    def learning_rates(self) -> dict[str, float]:
        return {}

    def single_optimizer(self) -> None:
        return None  # the rule updates the weights itself

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
