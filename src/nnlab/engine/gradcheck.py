"""Gradient check: backpropagation's gradients against finite differences of the loss.

Backpropagation is the chain rule applied layer by layer, so autograd's gradient of the loss
must equal the slope of the loss itself. For one weight w, the central difference

    n = (f(w + eps) - f(w - eps)) / (2 eps)

differs from the true derivative by about eps^2 f''' / 6 (truncation) plus about
u |f| / eps (rounding, u = 1.1e-16 in float64). A correct backward pass agrees with it to
~1e-8; a wrong one (a custom `autograd.Function` with a bad `backward`, a `.detach()` in the
wrong place) is off by a factor of order one, in exactly the layers it feeds.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from nnlab.errors import ConfigValueError, check_range
from nnlab.runs.runinfo import write_json

if TYPE_CHECKING:
    from collections.abc import Callable

    from nnlab.engine.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class TensorCheck:
    """The check of one parameter tensor: its worst sampled entry."""

    name: str  # parameter name, e.g. net.1.weight
    module: str  # class of the module that owns it, e.g. Linear
    entries: int  # entries compared
    rel_error: float  # max |a - n| over the sampled entries, relative to their scale (see `check_gradients`)
    index: tuple[int, ...]  # the entry with the largest |a - n|
    analytic: float  # autograd's gradient there
    numeric: float  # the finite difference there


def check_gradients(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 1e-6,
    max_entries: int = 20,
    generator: torch.Generator | None = None,
    floor: float = 1e-3,
) -> list[TensorCheck]:
    """Compare autograd's gradient of `loss_fn(model(x), y)` with central differences, for up to
    `max_entries` randomly chosen entries of every trainable parameter tensor.

    Works on a float64 copy of `model` (the model itself is untouched) in training mode, so batch
    norm backpropagates through its batch statistics, with dropout switched off (a fresh mask
    per evaluation would make the loss a random function).

    The error of a tensor is max_i |a_i - n_i| / max(|a|_max, |n|_max, floor * g_max): each
    entry's disagreement relative to the largest gradient entry of the tensor, or, for a tensor
    whose gradient is tiny, to `floor` times the largest gradient entry g_max of the whole model.
    A finite difference resolves a slope only to ~1e-11 (its rounding), so dividing that noise by
    a gradient near 0 would flag correct code: an entry with its own tiny max(|a_i|, |n_i|) (a dead
    ReLU, a bias that batch norm cancels), or every entry of the first layers of a deep sigmoid net
    (gradients ~1e-5 of the last layer's: vanishing).
    """
    model = copy.deepcopy(model).double().train()
    for module in model.modules():
        if isinstance(module, _DropoutNd):
            module.eval()
    x = x.double() if x.is_floating_point() else x
    y = y.double() if y.is_floating_point() else y
    modules = dict(model.named_modules())

    def loss() -> torch.Tensor:
        return loss_fn(model(x), y)

    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    loss().backward()
    g_max = max((p.grad.abs().max().item() for _, p in params if p.grad is not None), default=0.0)
    results = []
    for name, p in params:
        analytic = p.grad if p.grad is not None else torch.zeros_like(p)  # unused by the loss: 0
        flat = p.data.view(-1)
        picked = torch.randperm(flat.numel(), generator=generator)[:max_entries].tolist()
        a = torch.tensor([analytic.view(-1)[i].item() for i in picked], dtype=torch.float64)
        n = torch.empty_like(a)
        with torch.no_grad():
            for k, i in enumerate(picked):
                w = flat[i].item()
                flat[i] = w + eps
                up = loss().item()
                flat[i] = w - eps
                down = loss().item()
                flat[i] = w  # the exact old value (w + eps - 2 eps may round elsewhere)
                n[k] = (up - down) / (2 * eps)
        diff = (a - n).abs()
        scale = max(a.abs().max().item(), n.abs().max().item(), floor * g_max, torch.finfo(torch.float64).tiny)
        worst = int(diff.argmax())
        owner = modules.get(name.rpartition(".")[0], model)
        results.append(
            TensorCheck(
                name=name,
                module=type(owner).__name__,
                entries=len(picked),
                rel_error=diff[worst].item() / scale,
                index=tuple(int(j) for j in torch.unravel_index(torch.tensor(picked[worst]), p.shape)),
                analytic=a[worst].item(),
                numeric=n[worst].item(),
            )
        )
    return results


class GradientCheck:
    """Checks backpropagation once, on the first training batch, before its update.

    On the first `rows` rows of that batch, in float64 on a copy of the model, it compares
    autograd's gradient of the task's loss with central finite differences for `max_entries`
    sampled entries of every parameter tensor (`check_gradients`), then logs per tensor:

    - `gradcheck/rel_error/<param>` to TensorBoard (step 0) and a table to the log;
    - `gradcheck.json` in the run folder: every tensor's error, the worst, pass or fail.

    A correct model gives errors around 1e-8 (float64 rounding and truncation; up to ~1e-6 in
    the first layers of a deep sigmoid net, whose gradients vanish); any tensor above
    `tolerance` gets a warning naming it and its module: its gradient is not the derivative of
    the loss. (A ReLU kink within eps of a sampled unit can, rarely, give a false alarm of
    ~1e-2 on a deep ReLU net: rerun with another `seed` or a smaller `eps`.)

    The check needs the loss of a batch without an update, `task.loss(model(x), y)`: the
    supervised task's. Penalties of `regularization` are not part of it.

    Args:
        eps: finite-difference step. Rounding adds ~1e-16 |f| / eps to the difference and
            truncation ~eps^2 |f'''|: 1e-6 keeps both near 1e-10, and seldom steps over a ReLU
            kink (at 1e-5, deep ReLU nets already do).
        rows: rows of the first batch the loss is computed on (fewer: faster).
        max_entries: entries sampled per parameter tensor (each costs two forward passes).
        tolerance: relative error above which a tensor's gradient is reported wrong: 1e-4 is
            25x above the worst correct case measured (~4e-6, a 14-layer sigmoid net), and a
            wrong backward is off by 1e-2 or more.
        seed: seed of the entry sampling (a generator of its own: the run's draws are untouched).
    """

    def __init__(
        self,
        eps: float = 1e-6,
        rows: int = 8,
        max_entries: int = 20,
        tolerance: float = 1e-4,
        seed: int = 0,
    ) -> None:
        check_range("callbacks.gradient_check.eps", eps, 0.0, 1e-2, low_inclusive=False)
        check_range("callbacks.gradient_check.rows", rows, 1)
        check_range("callbacks.gradient_check.max_entries", max_entries, 1)
        check_range("callbacks.gradient_check.tolerance", tolerance, 0.0, low_inclusive=False)
        self.eps = eps
        self.rows = rows
        self.max_entries = max_entries
        self.tolerance = tolerance
        self.seed = seed
        self.results: list[TensorCheck] = []
        self.failed: list[TensorCheck] = []
        self._pending = False  # set at fit start: check the next training batch

    def on_fit_start(self, trainer: Trainer) -> None:
        task = trainer.task
        loss = getattr(task, "loss", None)
        if not callable(loss):
            raise ConfigValueError(
                f"callbacks.gradient_check needs a task with a loss(out, y) method (task=supervised); "
                f"{type(task).__name__} has none. Set callbacks.gradient_check=null."
            )
        self._pending = True

    def on_train_batch_start(self, trainer: Trainer, batch: Any) -> None:
        if self._pending:  # the first batch of the fit, before its update
            self._pending = False
            self.run(trainer, batch)

    def run(self, trainer: Trainer, batch: Any) -> list[TensorCheck]:
        """Check the gradients on `batch`, log them; returns the per-tensor results."""
        x, y = batch[0][: self.rows], batch[1][: self.rows]
        generator = torch.Generator().manual_seed(self.seed)
        self.results = check_gradients(
            trainer.module, _float64_loss(trainer.task), x, y, self.eps, self.max_entries, generator
        )
        self.failed = [r for r in self.results if not r.rel_error <= self.tolerance]  # NaN fails too
        worst = max((r.rel_error for r in self.results), default=0.0)
        lines = [f"{'tensor':<40} {'module':<12} {'entries':>7}  rel. error"]
        lines += [f"{r.name:<40} {r.module:<12} {r.entries:>7}  {r.rel_error:.1e}" for r in self.results]
        log.info(
            "Gradient check (float64, eps %g, %d rows, up to %d entries per tensor): max relative error per tensor\n%s",
            self.eps,
            len(x),
            self.max_entries,
            "\n".join(lines),
        )
        for r in self.failed:
            log.warning(
                "GRADIENT CHECK FAILED for %s (%s): relative error %.1e > callbacks.gradient_check.tolerance=%g. "
                "At entry %s autograd gives %.6e, the finite difference of the loss %.6e: the backward of "
                "this layer, or the input gradient of a layer after it, is not the derivative of its forward "
                "(when several tensors fail, look first at the one nearest the output).",
                r.name,
                r.module,
                r.rel_error,
                self.tolerance,
                r.index,
                r.analytic,
                r.numeric,
            )
        if not self.failed:
            log.info("Gradient check passed: max relative error %.1e <= %g.", worst, self.tolerance)
        if trainer.logger is not None:
            scalars = {f"gradcheck/rel_error/{r.name}": r.rel_error for r in self.results}
            trainer.logger.log_metrics(scalars, trainer.global_step)
        record = {
            "eps": self.eps,
            "rows": len(x),
            "tolerance": self.tolerance,
            "max_rel_error": worst,
            "passed": not self.failed,
            "rel_error": {r.name: r.rel_error for r in self.results},
        }
        write_json(record, Path(trainer.output_dir) / "gradcheck.json")
        return self.results


def _float64_loss(task: Any) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """`task.loss`, with the float tensors it holds (class weights) in float64 like the model copy."""
    weights = getattr(task, "class_weights", None)
    if not isinstance(weights, torch.Tensor):
        return task.loss
    task = copy.copy(task)  # a shallow copy: the training task keeps its float32 weights
    task.class_weights = weights.double()
    return task.loss
