"""Training health: vanishing and exploding gradients, dead ReLUs and update sizes, every N steps."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.hooks import RemovableHandle

from nnlab.errors import check_range

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer

log = logging.getLogger(__name__)

# Activations whose outputs are watched (histograms). The ReLU-like ones, identity-ish for
# x > 0 and (near) zero below, also get a dead-unit fraction.
RELU_LIKE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)
SQUASHING = (nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardsigmoid, nn.Softsign, nn.LogSigmoid, nn.Softplus)

# Values kept per histogram: an evenly strided sample of a larger tensor (a conv layer's
# activations can hold millions) keeps the copy and TensorBoard's binning cheap.
HISTOGRAM_VALUES = 10_000


class HealthMonitor:
    """Checks the gradients, weights and activations of one optimizer step every `every_n_steps`.

    What it logs (to TensorBoard at step = trainer.global_step), and what healthy looks like:

    - `health/grad_norm/<weight>`: the L2 norm of each weight matrix's (or conv kernel's)
      gradient, and `health/grad_norm_total` over every parameter. With a mean-reduced loss the
      total is typically 0.1-10 and falls slowly as training converges. Norms that shrink layer by
      layer towards the input mean *vanishing* gradients: early layers stop learning (saturating
      sigmoid/tanh units, tiny initial weights, great depth). Norms in the thousands, or growing
      tenfold check after check, mean *exploding* gradients: the loss jumps and ends in NaN.
    - `health/grad_norm_ratio`: the first weight's gradient norm over the last one's, the number
      the vanishing warning below watches (healthy: about 0.1-10).
    - `health/update_ratio/<weight>` = ||W_after - W_before|| / ||W_before|| over the step: how
      much one update changes a layer. About 1e-3 is the usual healthy value; 1e-5 or below
      means the layer barely moves (learning rate too low, or vanishing gradients), 1e-1 or above
      means updates overwrite what was learned (learning rate too high).
    - `health/dead_relu/<module>`: the fraction of a ReLU-like activation's units whose output is
      <= 0 for every sample of the batch. A unit is a feature of a (B, F) output, and a whole
      channel of a (B, C, ...) conv or sequence output (dead at every position). A dead ReLU
      passes no gradient, so it may never recover. Some are normal (under 0.1-0.2); half or
      more means a too-high learning rate or a bad initialisation killed them (try leaky_relu,
      a lower lr, batch norm). For leaky/smooth variants such units still learn, slowly.
    - `hist/weight/<weight>`, `hist/grad/<weight>`, `hist/activation/<module>` (when
      `histograms`): distributions in TensorBoard's Histograms tab. Sigmoid/tanh activations
      piled up at their limits mean saturated units (and vanishing gradients). Tensors of more
      than HISTOGRAM_VALUES values are sampled with an even stride.

    Warnings go to the log (console and the run's log file), at most once per kind until the
    condition clears and comes back, and to `self.warnings`:

    - vanishing: ||grad first weight|| / ||grad last weight|| < `vanish_ratio` at `patience`
      checks in a row. Healthy nets keep this ratio near 0.1-10; 1e-3 means the input layer
      learns a thousand times slower than the output layer.
    - exploding: a check is "exploding" if the total grad norm is not finite, is above
      `explode_norm`, or is above `explode_growth` times the previous check's; it warns after
      `patience` such checks in a row. Early training does not trip it: there norms fall or
      stay flat, and one noisy spike is absorbed by the patience. (A regression on targets left
      in raw units can: large targets give large gradients; standardize them.)

    Cost: nothing between checks. At step s with (s + 1) % every_n_steps == 0 it arms for the
    next step: it copies the weights and registers hooks (forward hooks on activation modules,
    one optimizer step pre-hook); after that step it computes, logs and removes every hook.
    Gradients are read in the optimizer's step pre-hook, so they are the ones the update uses:
    after mixed precision's loss scaling is undone (and after clipping, when clipping is on).
    A step that did not run the optimizer (skipped for a non-finite loss or an fp16 overflow)
    records no gradients, and its entries are left out. Activations come from the step's last
    forward pass with gradients enabled (evaluation runs without them and is never recorded).
    Weights are the >= 2-D parameters, in registration order, so "first" is the input layer of
    a single network; in a GAN it is the generator's first layer and "last" the discriminator's.

    Args:
        every_n_steps: optimizer steps between checks.
        histograms: also log weight, gradient and activation histograms.
        vanish_ratio: first/last layer gradient-norm ratio below which gradients vanish.
        explode_norm: total gradient norm above which gradients explode.
        explode_growth: growth of the total norm between checks that counts as exploding.
        patience: consecutive checks a condition must hold before it warns.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        histograms: bool = True,
        vanish_ratio: float = 1e-3,
        explode_norm: float = 1e3,
        explode_growth: float = 10.0,
        patience: int = 3,
    ) -> None:
        check_range("callbacks.health.every_n_steps", every_n_steps, 1)
        check_range("callbacks.health.vanish_ratio", vanish_ratio, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("callbacks.health.explode_norm", explode_norm, 0.0, low_inclusive=False)
        check_range("callbacks.health.explode_growth", explode_growth, 1.0, low_inclusive=False)
        check_range("callbacks.health.patience", patience, 1)
        self.every_n_steps = every_n_steps
        self.histograms = histograms
        self.vanish_ratio = vanish_ratio
        self.explode_norm = explode_norm
        self.explode_growth = explode_growth
        self.patience = patience
        self.warnings: list[str] = []
        # State of one armed step; empty between checks.
        self._handles: list[RemovableHandle] = []
        self._before: dict[str, torch.Tensor] = {}  # weight name -> copy taken when armed
        self._grad_norms: dict[str, torch.Tensor] = {}  # parameter name -> 0-dim norm
        self._grad_copies: dict[str, torch.Tensor] = {}  # weight name -> CPU copy (histograms)
        self._activations: dict[str, torch.Tensor] = {}  # module name -> CPU copy (histograms)
        self._dead: dict[str, torch.Tensor] = {}  # module name -> 0-dim dead fraction
        # Across checks: the warning rules.
        self._vanish_streak = 0
        self._explode_streak = 0
        self._last_total: float | None = None
        self._raised: set[str] = set()  # kinds warned about whose condition has not cleared since

    # ---- engine hooks ---------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer) -> None:
        if (trainer.global_step + 1) % self.every_n_steps == 0:  # every_n_steps=1, or a resumed run
            self._arm(trainer.task.model)

    def on_train_batch_end(self, trainer: Trainer) -> None:
        # Collect after the armed step; with gradient accumulation, after the update that ends
        # its window (until then the optimizer has not stepped).
        if self._handles and not trainer.pending_grads:
            self._collect(trainer)
        if not self._handles and (trainer.global_step + 1) % self.every_n_steps == 0:
            self._arm(trainer.task.model)

    def on_fit_end(self, trainer: Trainer) -> None:
        self._disarm()  # the run ended while armed: leave nothing hooked

    # ---- arming: copies and hooks for one step ------------------------------------------------
    def _arm(self, model: nn.Module) -> None:
        self._disarm()
        params: dict[nn.Parameter, str] = {}
        for name, p in model.named_parameters():
            params[p] = name
            if p.ndim >= 2 and p.is_floating_point():
                self._before[name] = p.detach().clone()
        self._handles.append(register_optimizer_step_pre_hook(self._grad_hook(params)))
        for name, module in model.named_modules():
            relu_like = isinstance(module, RELU_LIKE)
            if relu_like or (self.histograms and isinstance(module, SQUASHING)):
                self._handles.append(module.register_forward_hook(self._activation_hook(name, relu_like)))

    def _grad_hook(self, params: dict[nn.Parameter, str]):
        """A global optimizer step pre-hook: runs inside `optimizer.step()`, so the gradients it
        sees are unscaled (mixed precision) and not yet changed by the update (SGD's Nesterov
        momentum adds to them in place)."""

        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    name = params.get(p)
                    if name is None or p.grad is None:
                        continue
                    grad = p.grad.detach()
                    self._grad_norms[name] = torch.linalg.vector_norm(grad.float())
                    if self.histograms and name in self._before:
                        self._grad_copies[name] = _sample(grad)

        return hook

    def _activation_hook(self, name: str, relu_like: bool):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if not torch.is_grad_enabled() or not isinstance(output, torch.Tensor):
                return  # an evaluation pass, or an output this monitor cannot read
            out = output.detach()
            if relu_like and out.ndim >= 2:
                alive = (out > 0).any(0)  # (C, *rest): positive for some sample
                if alive.ndim > 1:
                    alive = alive.flatten(1).any(1)  # (C,): a channel is alive anywhere
                self._dead[name] = 1.0 - alive.float().mean()
            if self.histograms:
                self._activations[name] = _sample(out)

        return hook

    def _disarm(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._before, self._grad_norms, self._grad_copies = {}, {}, {}
        self._activations, self._dead = {}, {}

    # ---- after the armed step: compute, log, warn -------------------------------------------
    def _collect(self, trainer: Trainer) -> None:
        model = trainer.task.model
        step = trainer.global_step
        names = list(self._grad_norms)
        moved = [
            (name, before, p.detach())
            for name, p in model.named_parameters()
            if (before := self._before.get(name)) is not None
        ]
        befores = [before.float() for _, before, _ in moved]
        sizes = torch._foreach_norm(befores) if moved else []
        changes = torch._foreach_norm(torch._foreach_sub([p.float() for *_, p in moved], befores)) if moved else []
        read = [*self._grad_norms.values(), *sizes, *changes, *self._dead.values()]
        values = torch.stack([v.float() for v in read]).tolist() if read else []  # one device sync
        norms = dict(zip(names, values))
        weights = [n for n, _, _ in moved if n in norms]
        scalars: dict[str, float] = {}
        for name in weights:
            scalars[f"health/grad_norm/{name}"] = norms[name]
        grad_values = values[: len(names)]
        total = math.sqrt(sum(v * v for v in grad_values)) if grad_values else None
        if total is not None:
            scalars["health/grad_norm_total"] = total
        if len(weights) > 1 and norms[weights[-1]] > 0:
            scalars["health/grad_norm_ratio"] = norms[weights[0]] / norms[weights[-1]]
        rest = values[len(names) :]
        for (name, _, _), size, change in zip(moved, rest, rest[len(moved) :]):
            if size > 0:  # a zero-initialised layer (the perceptron's) has no ratio
                scalars[f"health/update_ratio/{name}"] = change / size
        for name, fraction in zip(self._dead, rest[2 * len(moved) :]):
            scalars[f"health/dead_relu/{name}"] = fraction

        logger = trainer.logger
        if logger is not None:
            logger.log_metrics(scalars, step)
            if self.histograms:
                tensors: dict[str, torch.Tensor] = {}
                for name, p in model.named_parameters():
                    if name in self._before:
                        tensors[f"hist/weight/{name}"] = _sample(p)
                tensors.update({f"hist/grad/{name}": grad for name, grad in self._grad_copies.items()})
                tensors.update({f"hist/activation/{name}": out for name, out in self._activations.items()})
                for tag, values in tensors.items():
                    logger.log_histogram(tag, values, step)  # (of the finite values)
        self._disarm()
        if weights:
            self._check_vanishing(weights[0], weights[-1], norms, step)
        if total is not None:
            self._check_exploding(total, {n: norms[n] for n in weights}, trainer, step)

    def _check_vanishing(self, first: str, last: str, norms: dict[str, float], step: int) -> None:
        if first == last or not norms[last] > 0:
            return  # one layer, or nothing reached the output layer: no ratio
        ratio = norms[first] / norms[last]
        self._vanish_streak = self._vanish_streak + 1 if ratio < self.vanish_ratio else 0
        if self._vanish_streak == 0:
            self._raised.discard("vanishing")
        elif self._vanish_streak >= self.patience and "vanishing" not in self._raised:
            self._warn(
                "vanishing",
                f"Vanishing gradients (step {step}): the first layer's gradient norm ({first}: "
                f"{norms[first]:.2e}) is {ratio:.1e} x the last layer's ({last}: {norms[last]:.2e}), "
                f"below callbacks.health.vanish_ratio={self.vanish_ratio:g} for {self._vanish_streak} checks in a "
                "row: the early layers barely learn. Try ReLU-family activations with He init "
                "(model.activation=relu init=kaiming_normal), batch normalization (model.batch_norm=true), "
                "residual connections, or a shallower network (fewer model.hidden_sizes).",
            )

    def _check_exploding(self, total: float, norms: dict[str, float], trainer: Trainer, step: int) -> None:
        previous = self._last_total
        self._last_total = total
        if not math.isfinite(total):
            reason = "not finite"
        elif total > self.explode_norm:
            reason = f"above callbacks.health.explode_norm={self.explode_norm:g}"
        elif previous and math.isfinite(previous) and total > self.explode_growth * previous:  # (0 or None: no growth)
            reason = f"{total / previous:.0f}x the previous check's {previous:.2e}"
        else:
            self._explode_streak = 0
            self._raised.discard("exploding")
            return
        self._explode_streak += 1
        if self._explode_streak < self.patience or "exploding" in self._raised:
            return
        largest = sorted(norms.items(), key=lambda kv: -kv[1] if math.isfinite(kv[1]) else -math.inf)[:3]
        shown = ", ".join(f"{name} {norm:.2e}" for name, norm in largest)
        lr = trainer.task.learning_rates().get("lr")
        lower_lr = f"optimizer.lr={lr / 10:g}" if lr else "a lower optimizer.lr"
        self._warn(
            "exploding",
            f"Exploding gradients (step {step}): total gradient norm {total:.2e} ({reason}), "
            f"{self._explode_streak} checks in a row. Largest: {shown}. Try gradient clipping "
            f"(trainer.gradient_clip_val=1.0), a lower learning rate ({lower_lr}), a smaller initial scale "
            "(init=xavier_uniform or init=kaiming_normal), or normalization (model.batch_norm=true).",
        )

    def _warn(self, kind: str, message: str) -> None:
        self._raised.add(kind)
        self.warnings.append(message)
        log.warning("%s", message)


def _sample(values: torch.Tensor) -> torch.Tensor:
    """A float32 CPU copy of at most HISTOGRAM_VALUES of `values`, taken with an even stride (no
    random numbers, so the run's generators are untouched)."""
    flat = values.detach().reshape(-1)
    stride = max(1, math.ceil(flat.numel() / HISTOGRAM_VALUES))
    return flat[::stride].to("cpu", torch.float32, copy=True)
