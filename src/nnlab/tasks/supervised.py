"""Supervised learning: predict y from x with one optimizer, for classification or regression."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.engine.optim import Optimization, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.errors import check_choice, check_range

LOSSES = {
    "classification": ("cross_entropy",),
    "regression": ("mse", "l1", "huber"),
}


class Supervised:
    """One optimizer minimising a loss between model(x) and y.

    The dataset's kind picks the defaults: cross-entropy and accuracy for classification; MSE
    with MAE and R^2 for regression (`loss: auto`). Metrics from `evaluate` are computed over the
    whole split at once, so R^2 and accuracy are exact rather than averages of batch values.

    Args:
        model: maps (B, *input_shape) to (B, num_outputs).
        optimizer: a factory taking `params` (a Hydra `_partial_` optimizer config).
        scheduler: a factory taking `optimizer`, or None.
        kind: "classification" or "regression", given by the dataset.
        loss: auto, cross_entropy (classification); mse, l1 or huber (regression).
        label_smoothing: cross-entropy target smoothing in [0, 1): the true class gets
            1 - eps + eps/K, every other class eps/K.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        kind: str = "classification",
        loss: str = "auto",
        label_smoothing: float = 0.0,
    ) -> None:
        check_choice("data kind", kind, LOSSES)
        if loss == "auto":
            loss = LOSSES[kind][0]
        check_choice("task.loss", loss, LOSSES[kind])
        check_range("task.label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        self.model = model
        self.kind = kind
        self.loss_name = loss
        self.label_smoothing = label_smoothing
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim: Optimization | None = None
        self.precision: Precision | None = None

    def configure(self, device: torch.device, precision: Precision, total_steps: int) -> None:
        self.model.to(device)
        self.precision = precision
        optimizer = self._optimizer_factory(params=self.model.parameters())
        scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps)
        self.optim = Optimization(optimizer, scheduler, precision.grad_scaler())

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(out, y, label_smoothing=self.label_smoothing)
        out = out.view_as(y)  # (B, 1) -> (B,) for single-target regression
        if self.loss_name == "mse":
            return F.mse_loss(out, y)
        if self.loss_name == "l1":
            return F.l1_loss(out, y)
        return F.huber_loss(out, y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        with self.precision.autocast():
            out = self.model(x)
            loss = self.loss(out.float(), y)
        self.optim.step(loss)
        metrics = {"loss": loss.detach()}
        if self.kind == "classification":
            metrics["acc"] = (out.detach().argmax(1) == y).float().mean()
        return metrics

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        self.model.eval()
        outs, ys = [], []
        for x, y in batches:
            with self.precision.autocast():
                outs.append(self.model(x).float())
            ys.append(y)
        out, y = torch.cat(outs), torch.cat(ys)
        metrics = {"loss": self.loss(out, y)}
        if self.kind == "classification":
            metrics["acc"] = (out.argmax(1) == y).float().mean()
        else:
            err = out.view_as(y) - y
            metrics["mse"] = err.pow(2).mean()
            metrics["mae"] = err.abs().mean()
            metrics["r2"] = 1 - err.pow(2).sum() / (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
        values = torch.stack(list(metrics.values())).tolist()  # one host sync
        return dict(zip(metrics, values))

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": self.optim.lr}

    def state_dict(self) -> dict[str, Any]:
        return {"optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optim"])
