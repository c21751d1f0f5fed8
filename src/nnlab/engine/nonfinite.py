"""Finding where a NaN or inf came from, when an update was refused for one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from nnlab.engine.rng import rng_state, set_rng_state
from nnlab.errors import UserError

if TYPE_CHECKING:
    from nnlab.engine.optim import NonFiniteStep
    from nnlab.engine.precision import Precision


class TrainingDiverged(UserError):
    """The loss or the gradients became NaN/inf and the run stopped (`trainer.nonfinite`)."""


def locate_nonfinite(model: nn.Module, batch: Any, error: NonFiniteStep, precision: Precision) -> str:
    """One phrase saying where the first non-finite value appeared, checked in the order
    values arise: the weights, the input batch, each layer's output (the forward pass is re-run
    on the batch with hooks), the loss, then the gradients (the layer nearest the loss first).

    The re-run leaves no trace: random generators and buffers (batch-norm statistics) are
    restored afterwards, so a skipped step does not change what follows.
    """
    names = {id(p): name for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            return f"the weights of {name} are already non-finite"
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        return "the input batch itself holds NaN/inf values: check the data (data.standardize, missing values)"
    layer = _first_nonfinite_output(model, x, precision)
    if layer is not None:
        return f"it first appeared in the output of layer {layer}"
    if not error.loss_finite:
        return "every layer's output is finite, so the loss computation itself produced it"
    if error.bad_grads:
        deepest = names.get(id(error.bad_grads[-1]), "?")
        return (
            f"it first appeared in the gradient of {deepest} (the non-finite layer nearest the loss; "
            f"{len(error.bad_grads)} parameter tensor(s) affected): the gradients exploded"
        )
    if error.largest_grad is not None:
        return (
            "every gradient is finite, but their total norm overflows (above 3.4e38 in float32): the "
            f"gradients exploded, the largest in {names.get(id(error.largest_grad), '?')}"
        )
    return "the location could not be determined"


def diverged(cause: str, kept_in: Path | None, skipping: bool) -> TrainingDiverged:
    """The error that ends a run whose updates went NaN/inf: its `cause`, what is kept (the
    checkpoint folder `kept_in`; None when no checkpoint was written) and the fixes to try
    (trainer.nonfinite=skip among them unless the run was `skipping` already)."""
    kept = f"The checkpoints written before it are kept ({kept_in})" if kept_in else "No checkpoint was written"
    return TrainingDiverged(
        f"Training stopped: {cause}. {kept}, and no update with NaN/inf was applied. Try a lower "
        "optimizer.lr, gradient clipping (trainer.gradient_clip_val=1.0), a smaller initialization "
        "(init=xavier_uniform or init=kaiming_normal) or normalization (model.batch_norm=true)"
        + ("." if skipping else ", or trainer.nonfinite=skip to skip such steps.")
    )


@torch.no_grad()
def _first_nonfinite_output(model: nn.Module, x: Any, precision: Precision) -> str | None:
    """Name and type of the first leaf module, in execution order, whose output is non-finite."""
    found: list[str] = []
    names = {m: name for name, m in model.named_modules()}

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        if not found and isinstance(out, torch.Tensor) and out.is_floating_point():
            if not bool(torch.isfinite(out).all()):
                found.append(f"{names[module]} ({type(module).__name__})")

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    rng = rng_state()
    try:
        with precision.autocast():
            model(x)
    except Exception:  # a model whose forward needs more than x (a GAN container): no location
        return None
    finally:
        for h in handles:
            h.remove()
        set_rng_state(rng)
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return found[0] if found else None
