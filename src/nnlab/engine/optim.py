"""One optimizer with its scheduler and grad scaler: the update a task calls with its loss."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from nnlab.errors import ConfigValueError

# Schedules designed to change the LR every optimizer step; all others step once per epoch.
PER_STEP_SCHEDULERS = (OneCycleLR, CyclicLR)


def build_scheduler(factory: Callable[..., Any] | None, optimizer: Optimizer, total_steps: int) -> Any:
    """Call a scheduler factory (a Hydra `_partial_`) with the optimizer.

    `total_steps` (optimizer steps in the whole run) is known only at run time; it is passed to
    schedules that take it (OneCycleLR) unless the config set it.
    """
    if factory is None:
        return None
    kwargs: dict[str, Any] = {}
    func = getattr(factory, "func", factory)
    set_by_config = getattr(factory, "keywords", {})
    if "total_steps" in inspect.signature(func).parameters and set_by_config.get("total_steps") is None:
        kwargs["total_steps"] = total_steps
    return factory(optimizer=optimizer, **kwargs)


class Optimization:
    """backward -> step -> zero_grad for one optimizer, with loss scaling and LR scheduling.

    Per-step schedules (OneCycleLR, CyclicLR) advance after every update; others advance in
    `epoch_end`, and ReduceLROnPlateau reads the monitored validation metric there.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None = None,
        scaler: torch.amp.GradScaler | None = None,
        monitor: str = "val/loss",
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.monitor = monitor
        self.per_step = isinstance(scheduler, PER_STEP_SCHEDULERS)

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate `loss` and update the parameters."""
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)  # skipped if the scaled grads overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.per_step:
            self.scheduler.step()

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        if self.scheduler is None or self.per_step:
            return
        if isinstance(self.scheduler, ReduceLROnPlateau):
            if self.monitor not in val_metrics:
                raise ConfigValueError(
                    f"scheduler: ReduceLROnPlateau monitors '{self.monitor}', which validation did not "
                    f"report. Available: {', '.join(sorted(val_metrics))}."
                )
            self.scheduler.step(val_metrics[self.monitor])
        else:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
