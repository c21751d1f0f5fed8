"""One optimizer with its scheduler and grad scaler: the update a task calls with its loss.

Every gradient-based task (supervised, reconstruction, GAN) updates its weights through
`Optimization.step`, so the training toolkit applies to all of them in one place:

    loss (+ L1/L2 penalty) -> backward (accumulated over k batches) -> non-finite check
      -> gradient clipping -> optimizer step -> max-norm constraint -> per-step schedule
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CyclicLR, LRScheduler, OneCycleLR, ReduceLROnPlateau

from nnlab.engine.regularization import Regularization
from nnlab.engine.schedules import WarmupCosineLR
from nnlab.errors import ConfigValueError

# Schedules designed to change the LR every optimizer step; all others step once per epoch.
PER_STEP_SCHEDULERS = (OneCycleLR, CyclicLR, WarmupCosineLR)


def build_scheduler(factory: Callable[..., Any] | None, optimizer: Optimizer, total_steps: int) -> Any:
    """Call a scheduler factory (a Hydra `_partial_`) with the optimizer.

    `total_steps` (optimizer steps in the whole run) is known only at run time; it is passed to
    schedules that take it (OneCycleLR, WarmupCosineLR) unless the config set it.
    """
    if factory is None:
        return None
    kwargs: dict[str, Any] = {}
    func = getattr(factory, "func", factory)
    set_by_config = getattr(factory, "keywords", {})
    if "total_steps" in inspect.signature(func).parameters and set_by_config.get("total_steps") is None:
        kwargs["total_steps"] = total_steps
    return factory(optimizer=optimizer, **kwargs)


def optimizer_factory(factory: Callable[..., Optimizer]) -> Callable[..., Optimizer]:
    """The optimizer config's partial (`instantiate(cfg.optimizer)`), as the task calls it with its
    parameters. `fused: true`, the packaged default for Adam, AdamW, SGD and Adagrad, needs every
    parameter floating point on a device with PyTorch's fused kernels. PyTorch finds out only at
    the first step, deep in training; here a model whose parameters are not (complex weights, a
    device without the kernels) is refused when its optimizer is built, naming the key to change."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    def build(params: Any, **kwargs: Any) -> Optimizer:
        optimizer = factory(params=params, **kwargs)
        if optimizer.defaults.get("fused"):
            devices = _get_fused_kernels_supported_devices()
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if not p.is_floating_point() or p.device.type not in devices:
                        raise ConfigValueError(
                            f"optimizer.fused=true (the default for {type(optimizer).__name__}) cannot update a "
                            f"{p.dtype} parameter on {p.device.type}: PyTorch's fused kernels take floating-point "
                            f"parameters on {', '.join(devices)}. Add optimizer.fused=null to use PyTorch's "
                            "per-tensor update instead."
                        )
        return optimizer

    return build


@dataclass
class UpdateRules:
    """What every optimizer step of a task does besides the update itself; built by the trainer
    from `trainer.*` and the `regularization` group, and shared by all of a task's optimizers.

    Attributes:
        accumulate_grad_batches: k > 1 sums the gradients of k batches (each loss divided by k)
            before one update: the gradient of a k-times larger batch, in the memory of one.
        gradient_clip_val: clip the gradients before each update (None: no clipping) ...
        gradient_clip_algorithm: ... "norm": rescale all gradients together so their global L2
            norm is at most the value (direction kept); "value": clamp each entry to +-value.
        regularization: L1/L2 penalties and the max-norm constraint (None: none).
        check_finite: check the losses and the gradients before each update (one host sync
            per update) and raise `NonFiniteStep` instead of stepping on NaN/inf.

    Which batch completes an accumulation window is not stored here: the trainer decides it per
    batch and it reaches `Optimization.step` as its `update` argument, through the task.
    """

    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str = "norm"
    regularization: Regularization | None = None
    check_finite: bool = True

    def gradient_free_conflicts(self) -> list[str]:
        """The options set here that need gradients (for tasks that learn without them)."""
        found = []
        if self.accumulate_grad_batches > 1:
            found.append(f"trainer.accumulate_grad_batches={self.accumulate_grad_batches}")
        if self.gradient_clip_val is not None:
            found.append(f"trainer.gradient_clip_val={self.gradient_clip_val}")
        if self.regularization is not None:
            found += self.regularization.gradient_options()
        return found


def require_no_gradient_rules(rules: UpdateRules | None, task: str) -> None:
    """For tasks that learn without gradients: reject options that would silently do nothing."""
    conflicts = rules.gradient_free_conflicts() if rules is not None else []
    if conflicts:
        raise ConfigValueError(
            f"{', '.join(conflicts)} {'act' if len(conflicts) > 1 else 'acts'} on gradient updates, but "
            f"task={task} learns without gradients, "
            "so they would do nothing. Remove them from the command line (or the experiment)."
        )


def any_nonfinite(tensors: list[torch.Tensor]) -> bool:
    """Whether any of the tensors holds a NaN or inf: `torch._amp_foreach_non_finite_check_and_unscale_`
    (GradScaler's check, one fused kernel) with a scale of 1, so the values are left as they
    are, then one flag read back. Tensors of several dtypes take one call too (on a GPU, a
    kernel per tensor then); tensors on several devices, a call per device."""
    try:
        return _nonfinite_on(tensors[0].device, tensors)
    except RuntimeError:  # (the kernel takes the tensors of one device)
        _FLAGS[tensors[0].device][0].zero_()
        devices: dict[torch.device, list[torch.Tensor]] = {}
        for t in tensors:
            devices.setdefault(t.device, []).append(t)
        return any([_nonfinite_on(device, group) for device, group in devices.items()])


def _nonfinite_on(device: torch.device, tensors: list[torch.Tensor]) -> bool:
    flags = _FLAGS.get(device)
    if flags is None:  # (made once per device: two kernels fewer per step)
        flags = _FLAGS[device] = (torch.zeros(1, device=device), torch.ones(1, device=device))
    flag, one = flags
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, flag, one)
    if flag.item():
        flag.zero_()
        return True
    return False


_FLAGS: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # per device: (found-inf flag, scale 1)


class NonFiniteStep(Exception):
    """Raised by `Optimization.step` instead of an update whose loss or gradients are NaN/inf.
    The gradients are cleared and the weights are untouched; the trainer decides what follows
    (`trainer.nonfinite`: stop the run, or skip the step)."""

    def __init__(
        self,
        loss_finite: bool,
        bad_grads: list[torch.nn.Parameter],
        largest_grad: torch.nn.Parameter | None = None,
    ) -> None:
        self.loss_finite = loss_finite
        self.bad_grads = bad_grads  # parameters whose gradient holds NaN/inf, in model order
        self.largest_grad = largest_grad  # when all are finite but their norm overflowed: the largest
        super().__init__("non-finite loss" if not loss_finite else "non-finite gradient")


class Optimization:
    """backward -> step -> zero_grad for one optimizer, with loss scaling, LR scheduling and the
    update rules (accumulation, clipping, penalties, constraints, the non-finite check).

    Per-step schedules (OneCycleLR, CyclicLR, WarmupCosineLR) advance after every update; others
    advance in `epoch_end`, and ReduceLROnPlateau reads the monitored validation metric there.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        scheduler: LRScheduler | ReduceLROnPlateau | None = None,
        scaler: torch.amp.GradScaler | None = None,
        monitor: str = "val/loss",
        rules: UpdateRules | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.monitor = monitor
        self.rules = rules or UpdateRules()
        self.per_step = isinstance(scheduler, PER_STEP_SCHEDULERS)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        # Resolved once, so the default config (every regularizer off) adds nothing to a step.
        reg = self.rules.regularization
        self._penalty = reg if reg is not None and reg.penalizes else None
        self._constraint = reg if reg is not None and reg.constrains else None
        self._losses: list[torch.Tensor] = []  # the losses of the open accumulation window

    def step(self, loss: torch.Tensor, update: bool = True) -> None:
        """Backpropagate `loss`, then update the parameters if `update`: on the batch that completes
        the accumulation window (every batch, without accumulation). With `update=False` the
        gradients are kept, to be summed with the next batches'."""
        rules = self.rules
        if self._penalty is not None:
            loss = loss + self._penalty.penalty(self.params)
        if rules.check_finite:
            self._losses.append(loss.detach())  # checked with the gradients, at the update
        k = rules.accumulate_grad_batches
        if k > 1:
            loss = loss / k  # the window's gradient is the mean over its k batches
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
        if update:
            self._update()

    def _update(self) -> None:
        rules = self.rules
        if self.scaler is not None and (rules.gradient_clip_val is not None or rules.check_finite):
            self.scaler.unscale_(self.optimizer)  # clip and check true gradients, not scaled ones
        grads = [p.grad for p in self.params if p.grad is not None]
        clip = rules.gradient_clip_val
        norm = None
        if clip is not None and rules.gradient_clip_algorithm == "norm":
            norm = torch.nn.utils.get_total_norm(grads)  # checked before the gradients are scaled by it
        if rules.check_finite:
            self._check_finite(grads, norm)
        if norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.params, clip, norm)
        elif clip is not None:
            torch.nn.utils.clip_grad_value_(self.params, clip)
        if self.scaler is None:
            self.optimizer.step()
        else:
            self.scaler.step(self.optimizer)  # skipped if the scaled grads overflowed
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self._constraint is not None:
            self._constraint.constrain(self.params)
        if self.per_step:
            self.scheduler.step()

    def _check_finite(self, grads: list[torch.Tensor], norm: torch.Tensor | None) -> None:
        """One host read-back: are the window's losses and (without a grad scaler, which handles
        overflow itself by skipping the step) the gradients all finite? With norm clipping, the
        norm it divides by is checked instead of the gradients: it is NaN/inf when any gradient
        is, and also when finite gradients are so large that their norm overflows (clipping
        would then zero them). Without clipping such gradients are a finite update.

        The check is PyTorch's fused one (what `GradScaler` runs): one kernel over all the
        tensors and one flag read back. On a small model every extra kernel of a step is a
        visible share of it."""
        losses, self._losses = self._losses, []
        checked = losses if self.scaler is not None else losses + ([norm] if norm is not None else grads)
        if not checked or not any_nonfinite(checked):
            return
        loss_finite = all(bool(torch.isfinite(loss)) for loss in losses)
        bad = [p for p in self.params if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
        largest = None
        if loss_finite and not bad and norm is not None:  # every gradient finite, but their norm overflows
            largest = max((p for p in self.params if p.grad is not None), key=lambda p: p.grad.abs().max().item())
        self.optimizer.zero_grad(set_to_none=True)
        raise NonFiniteStep(loss_finite=loss_finite, bad_grads=bad, largest_grad=largest)

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
