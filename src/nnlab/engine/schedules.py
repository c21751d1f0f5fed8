"""Learning-rate schedules torch does not ship as one class.

`WarmupCosineLR` is the schedule most transformer and large-batch recipes use (Goyal et al. 2017,
"Accurate, large minibatch SGD"; Loshchilov & Hutter 2017, "SGDR"): a short linear warm-up keeps
the first updates small while Adam's moment estimates and the batch-norm statistics settle, then
a cosine decays the learning rate smoothly to `eta_min` at the last step.
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from nnlab.errors import ConfigValueError, check_range


class WarmupCosineLR(SequentialLR):
    """Linear warm-up, then cosine annealing, stepped once per optimizer step.

    With base lr `lr` (the optimizer's), W warm-up steps and T total steps, the lr after t calls
    of `step()` is

        lr * (start_factor + (1 - start_factor) * t / W)                        for t <= W
        eta_min + (lr - eta_min) * (1 + cos(pi * (t - W) / (T - W))) / 2          for W <= t <= T

    so the first update uses lr * start_factor, update W + 1 uses the full lr, and the lr reaches
    eta_min after the last update. It is torch's `LinearLR` followed by `CosineAnnealingLR`
    (T_max = T - W) in a `SequentialLR`, so its state_dict holds only numbers and lists: it loads
    with `torch.load(weights_only=True)`, and a loaded schedule continues where it stopped.

    Args:
        optimizer: the optimizer whose param groups' lr it sets (given at build time).
        total_steps: optimizer steps in the whole run (filled in by `build_scheduler`).
        warmup_steps: steps of the linear ramp; null takes `warmup_fraction` of the run. 0 skips
            the warm-up (a plain cosine).
        warmup_fraction: the share of `total_steps` to warm up for when `warmup_steps` is null,
            rounded down. 1-10% is common; 5% of a 600-step run is 30 steps.
        start_factor: the first lr as a fraction of the base lr, in (0, 1]. Small values (0.01)
            start almost from zero; 1 makes the warm-up flat.
        eta_min: the lr at the end of the run, usually 0 or about 1% of the base lr.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int | None = None,
        warmup_fraction: float = 0.05,
        start_factor: float = 0.01,
        eta_min: float = 0.0,
    ) -> None:
        check_range("scheduler.total_steps", total_steps, 1)
        check_range("scheduler.warmup_fraction", warmup_fraction, 0.0, 1.0, high_inclusive=False)
        check_range("scheduler.start_factor", start_factor, 0.0, 1.0, low_inclusive=False)
        check_range("scheduler.eta_min", eta_min, 0.0)
        if warmup_steps is None:
            warmup_steps = int(warmup_fraction * total_steps)  # < total_steps, as warmup_fraction < 1
        check_range("scheduler.warmup_steps", warmup_steps, 0)
        if warmup_steps >= total_steps:
            raise ConfigValueError(
                f"scheduler.warmup_steps={warmup_steps} is not shorter than the run: it has "
                f"total_steps={total_steps} optimizer steps (epochs x steps per epoch), and the cosine "
                f"needs at least one of them. Use scheduler.warmup_steps=<fewer than {total_steps}>, or "
                "scheduler.warmup_steps=null with scheduler.warmup_fraction=<0..1> to warm up for a "
                "share of the run."
            )
        cosine = CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps, eta_min=eta_min)
        if warmup_steps == 0:
            super().__init__(optimizer, schedulers=[cosine], milestones=[])
        else:
            warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
            super().__init__(optimizer, schedulers=[warmup, cosine], milestones=[warmup_steps])
        # Plain ints and floats: they go into state_dict() (every attribute but the optimizer does).
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the schedule's position and put the optimizer's lr where the schedule had it.

        torch's schedules compute each lr from the previous one in the optimizer, so restoring the
        lr as well makes a loaded schedule continue exactly even if the optimizer's own state was
        not loaded (a checkpoint restores both anyway).
        """
        super().load_state_dict(state_dict)
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr
