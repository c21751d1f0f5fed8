"""Adversarial examples under an L-infinity budget: FGSM and PGD.

An attack looks for an input x' with max_i |x'_i - x_i| <= eps that the classifier gets wrong,
by climbing the cross-entropy loss of the true label y:

    FGSM (Goodfellow et al., 2015):  x' = x + eps * sign(grad_x loss(f(x), y))           one step
    PGD  (Madry et al., 2018):       x_0 = x + uniform(-eps, eps)                          random start
                                     x_{t+1} = P(x_t + step_size * sign(grad_x loss(f(x_t), y)))
                                     P = clip to [x - eps, x + eps] (then to the valid range)

PGD with `steps` iterations is the stronger attack; FGSM is its one-step, no-random-start special
case. The rule of thumb for the step size is step_size = 2.5 * eps / steps (Madry et al.), so
the iterate can cross the whole ball (2 * eps) and still refine at the end.

eps is measured in the units of what the model sees: raw pixels when `data.standardize=false`
(digits and the torchvision sets: [0, 1]), standard deviations of each feature when the data
are standardized. For image data train with `data.standardize=false` so eps is in pixel units,
and pass `clamp=(0, 1)` so adversarial images stay valid images.

Gradients are taken with `torch.autograd.grad` with respect to the input only: the weights'
`.grad` is never touched, so an attack can run inside a training step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.errors import check_choice, check_range

METHODS = ("fgsm", "pgd")


def default_step_size(eps: float, steps: int) -> float:
    """2.5 * eps / steps: the PGD step size of Madry et al."""
    return 2.5 * eps / steps


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d loss(model(x), y) / dx, without touching the weights' gradients."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, clamp: Sequence[float] | None) -> torch.Tensor:
    """Back into the eps-ball around x, then into the valid range [lo, hi] when given."""
    x_adv = torch.max(torch.min(x_adv, x + eps), x - eps)
    if clamp is not None:
        x_adv = x_adv.clamp(clamp[0], clamp[1])
    return x_adv


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, clamp: Sequence[float] | None = None
) -> torch.Tensor:
    """The fast gradient sign method: one step of size eps up the sign of the loss gradient.

    Args:
        model: a classifier returning logits; call it in eval mode (no BN updates, no dropout).
        x: inputs (B, ...) in the units the model sees; y: their labels (B,).
        eps: the L-infinity budget, >= 0 (in the units of x).
        clamp: (lo, hi) valid range of the inputs, e.g. (0, 1) for pixels; None: no clamp.
    """
    check_range("attack eps", eps, 0.0)
    if eps == 0:
        return x.detach().clone()
    return _project(x + eps * _input_grad(model, x, y).sign(), x, eps, clamp).detach()


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    clamp: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Projected gradient descent (ascent on the loss) from a random start inside the eps-ball.

    Args:
        model, x, y, eps, clamp: as in `fgsm`.
        steps: signed-gradient steps, >= 1.
        step_size: the size of each step; None: 2.5 * eps / steps.
        generator: seeds the random start (None: torch's global generator).
    """
    check_range("attack eps", eps, 0.0)
    check_range("attack steps", steps, 1)
    if eps == 0:
        return x.detach().clone()
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    check_range("attack step_size", step_size, 0.0, low_inclusive=False)
    noise = torch.rand(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    x_adv = _project(x + (noise.to(x.device, x.dtype) * 2 - 1) * eps, x, eps, clamp)
    for _ in range(steps):
        x_adv = _project(x_adv + step_size * _input_grad(model, x_adv, y).sign(), x, eps, clamp)
    return x_adv.detach()


def perturb(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    clamp: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial versions of x by `method` (fgsm or pgd); see `fgsm` and `pgd`."""
    check_choice("attack method", method, METHODS)
    if method == "fgsm":
        return fgsm(model, x, y, eps, clamp)
    return pgd(model, x, y, eps, steps, step_size, clamp, generator)


def adversarial_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    method: str,
    eps: float,
    steps: int = 10,
    step_size: float | None = None,
    clamp: Sequence[float] | None = None,
    seed: int = 0,
) -> float:
    """Accuracy of `model` (put in eval mode) on the attacked versions of `batches`."""
    model.eval()
    generator = None
    correct = total = 0
    for x, y in batches:
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        x_adv = perturb(method, model, x, y, eps, steps, step_size, clamp, generator)
        with torch.no_grad():
            correct += (model(x_adv).argmax(1) == y).sum().item()
        total += len(y)
    return correct / max(total, 1)
