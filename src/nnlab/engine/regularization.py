"""Regularizers that act on every update: L1/L2 penalties, max-norm constraints, an EMA of the weights.

Composable: set any of them at once, e.g.
`nnlab-train regularization.l1=1e-5 regularization.max_norm=3 regularization.ema_decay=0.999`.
The other regularizers live where they act: dropout in the model (`model.dropout`), label
smoothing in the loss (`task.label_smoothing`), decoupled weight decay in the optimizer
(`optimizer=adamw optimizer.weight_decay=0.01`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from nnlab.errors import check_range


class Regularization:
    """Penalties added to the loss, a constraint applied after each update, and the EMA decay.

    Penalties and constraints act on weight matrices and filters (parameters with 2 or more
    dimensions), not on biases or normalization scales, as is usual: shrinking a bias does not
    simplify the function a layer computes.

    - L1 penalty, `l1 * sum |w|`: its gradient `l1 * sign(w)` has the same size however small w
      is, so it pushes weights all the way to zero: sparse weights, a form of feature selection.
    - L2 penalty, `l2 / 2 * sum w^2`: its gradient `l2 * w` shrinks large weights most and
      never quite reaches zero. With plain SGD it equals `optimizer.weight_decay=l2`; with
      Adam the penalty's gradient is rescaled per weight like any other, so large-gradient
      weights are barely decayed. Decoupled weight decay (AdamW, Loshchilov & Hutter 2019)
      shrinks every weight by lr * wd each step outside the adaptive scaling: use
      `optimizer=adamw optimizer.weight_decay=...` for that. Both can be on at once.
    - max-norm, `max_norm = c`: after each update, rescale each unit's incoming weight vector
      (a row of a Linear weight, one conv filter) to an L2 norm of at most c (Srivastava et al.
      2014 used c = 3 to 4 with dropout). Bounds the weights without any penalty on the loss.
    - EMA, `ema_decay = d`: keep w_ema <- d * w_ema + (1 - d) * w after every update and
      evaluate, checkpoint-select and test with w_ema (Polyak averaging). Averages out the noise
      of the last updates; d = 0.999 averages roughly the last 1000 updates.

    Args:
        l1: weight of the L1 penalty (0 = off).
        l2: weight of the L2 penalty (0 = off).
        max_norm: largest L2 norm of a unit's incoming weights (None = off).
        ema_decay: decay of the exponential moving average of the weights, in (0, 1) (None = off).
    """

    def __init__(
        self,
        l1: float = 0.0,
        l2: float = 0.0,
        max_norm: float | None = None,
        ema_decay: float | None = None,
    ) -> None:
        check_range("regularization.l1", l1, 0.0)
        check_range("regularization.l2", l2, 0.0)
        if max_norm is not None:
            check_range("regularization.max_norm", max_norm, 0.0, low_inclusive=False)
        if ema_decay is not None:
            check_range("regularization.ema_decay", ema_decay, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.l1 = float(l1)
        self.l2 = float(l2)
        self.max_norm = max_norm
        self.ema_decay = ema_decay

    @property
    def penalizes(self) -> bool:
        """Whether `penalty` adds anything to the loss."""
        return bool(self.l1 or self.l2)

    @property
    def constrains(self) -> bool:
        """Whether `constrain` changes anything after an update."""
        return self.max_norm is not None

    def gradient_options(self) -> list[str]:
        """The options set that act on gradient updates (for tasks without gradients)."""
        found = [f"regularization.{k}={v}" for k, v in (("l1", self.l1), ("l2", self.l2)) if v]
        if self.max_norm is not None:
            found.append(f"regularization.max_norm={self.max_norm}")
        return found

    def penalty(self, params: Iterable[torch.Tensor]) -> torch.Tensor | float:
        """l1 * sum |w| + l2 / 2 * sum w^2 over the weight matrices and filters in `params`."""
        total: torch.Tensor | float = 0.0
        if not (self.l1 or self.l2):
            return total
        for w in params:
            if w.ndim < 2 or not w.requires_grad:
                continue
            if self.l1:
                total = total + self.l1 * w.abs().sum()
            if self.l2:
                total = total + 0.5 * self.l2 * w.pow(2).sum()
        return total

    @torch.no_grad()
    def constrain(self, params: Iterable[torch.Tensor]) -> None:
        """Max-norm: rescale every unit's incoming weights (dim 0 slices) to norm <= max_norm."""
        if self.max_norm is None:
            return
        for w in params:
            if w.ndim >= 2 and w.requires_grad:
                w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=self.max_norm))
