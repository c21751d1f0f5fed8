"""Numeric precision: full fp32, bf16 autocast, or fp16 autocast with loss scaling."""

from __future__ import annotations

import contextlib

import torch

from nnlab.errors import ConfigValueError, check_choice

PRECISIONS = ("32", "bf16", "16-mixed")


class Precision:
    """Wraps forward passes in autocast and hands out grad scalers.

    - "32": plain float32, no autocast (the fast path: `autocast()` is a null context).
    - "bf16": matmuls/convs in bfloat16 under autocast, weights stay fp32. Same exponent range
      as fp32, so no loss scaling is needed. Works on CPU and on Ampere-or-newer GPUs.
    - "16-mixed": float16 autocast plus a `GradScaler`, which multiplies the loss so small
      gradients do not underflow fp16 and skips steps whose gradients overflowed. CUDA only.
    """

    def __init__(self, precision: str | int, device: torch.device) -> None:
        precision = str(precision)
        check_choice("trainer.precision", precision, PRECISIONS)
        if precision == "16-mixed" and device.type != "cuda":
            raise ConfigValueError(
                f"trainer.precision=16-mixed needs a CUDA device, but the run is on {device}. "
                "Use trainer.precision=bf16 for mixed precision on CPU, or trainer.precision=32."
            )
        self.name = precision
        self.device = device
        self.dtype = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}[precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A scaler per optimizer; disabled (a pass-through) unless precision is 16-mixed."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "16-mixed")
