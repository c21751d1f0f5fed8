"""The exponential moving average of the weights (`regularization.ema_decay`): updated after
every optimizer update, and the weights that validation, checkpoint selection and testing use
(see `nnlab.engine.regularization.Regularization` for the rule)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch.optim.swa_utils import AveragedModel


def averaged_model(model: nn.Module, decay: float) -> AveragedModel:
    """A copy of `model` that keeps w_ema <- decay * w_ema + (1 - decay) * w, buffers included,
    each time its `update_parameters(model)` is called."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


@contextmanager
def averaged_weights(model: nn.Module, ema: AveragedModel | None) -> Iterator[None]:
    """`model` holds the EMA's weights inside the block (nothing changes when `ema` is None); the
    training weights are back afterwards. Buffers the block itself sets (an anomaly threshold
    chosen on validation) are kept in both."""
    if ema is None:
        yield
        return
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
    averaged = ema.module.state_dict()
    model.load_state_dict(averaged)
    try:
        yield
    finally:
        for name, buf in model.named_buffers():
            if name in averaged and not torch.equal(buf, averaged[name]):  # (non-persistent ones are not saved)
                backup[name] = buf.detach().clone()
                averaged[name].copy_(buf)
        model.load_state_dict(backup)
