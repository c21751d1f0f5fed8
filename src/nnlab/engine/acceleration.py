"""The GPU fast path's model-side switches: channels_last memory format and `torch.compile`.

The rest of the fast path lives where its data lives: in-memory datasets sit on the device and
are sliced there (`nnlab.data.datamodule`), augmentation runs batched on the device
(`nnlab.data.augment`), streamed datasets use pinned memory with non-blocking copies, and
bf16 / fp16 autocast is `nnlab.engine.precision`. See docs/gpu.md for what each buys.

channels_last stores a (B, C, H, W) tensor as (B, H, W, C) in memory (same shape, other
strides). cuDNN's convolutions on tensor cores (fp16/bf16, Volta and newer) run natively in that
layout, so a CNN under AMP skips the transposes it would otherwise do around every conv;
typical gains are 10-30% on ResNets. It changes nothing mathematically. It only applies to
4-D weights and inputs (2-D convs): for any other model it is a logged no-op, so one trainer
config (`trainer=gpu`) can turn it on for every model.

`torch.compile` traces the forward into graphs that Inductor fuses into Triton (GPU) or C++
(CPU) kernels: fewer kernel launches and memory round-trips. The first steps pay for the
compilation (seconds to minutes), and a new input shape (the short last batch of an epoch,
the eval batch size) compiles again, so it pays off on long runs of a fixed model. Modes:
"default"; "reduce-overhead" adds CUDA graphs (best for small models whose step is launch-
bound; needs fixed shapes, e.g. `data.drop_last=true`); "max-autotune" also benchmarks kernel
choices (longest compile, fastest kernels).

A compiled model is a wrapper (`torch._dynamo.eval_frame.OptimizedModule`) that shares its
parameters with the original, but its `state_dict()` keys carry an `_orig_mod.` prefix. So the
engine keeps the original module for checkpoints, EMA and testing, and calls the wrapper only in
training and validation steps: `prepare_model` returns the wrapper and leaves the module you
passed in untouched (apart from moving it to `device` and its memory format).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from nnlab.errors import ConfigValueError, check_choice

log = logging.getLogger(__name__)

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def compile_mode(compile: bool | str | None) -> str | None:
    """The `torch.compile` mode `trainer.compile` asks for, or None for eager execution.

    false/null -> None (eager), true -> "default", or one of default, reduce-overhead,
    max-autotune. Anything else raises a `ConfigValueError` naming the key.
    """
    if compile is None or compile is False:
        return None
    if compile is True:
        return "default"
    if not isinstance(compile, str):
        raise ConfigValueError(
            f"trainer.compile={compile!r} is not valid. Use false, true, or a mode name: {', '.join(COMPILE_MODES)}."
        )
    # YAML spells the booleans in many ways; accept their text too (e.g. from an env variable).
    lowered = compile.lower()
    if lowered in ("false", "off", "none", "null"):
        return None
    if lowered in ("true", "on"):
        return "default"
    check_choice("trainer.compile", compile, COMPILE_MODES)
    return compile


def has_4d_weights(model: nn.Module) -> bool:
    """True when the model has a 4-D parameter (a Conv2d's (out, in, kh, kw) weight): the only
    kind whose memory format channels_last changes."""
    return any(p.dim() == 4 for p in model.parameters())


def prepare_model(
    model: nn.Module,
    device: torch.device | str,
    channels_last: bool = False,
    compile: bool | str | None = False,
) -> nn.Module:
    """Move `model` to `device`, optionally to channels_last, and return what to call in steps.

    Args:
        model: the plain module (not wrapped). It is modified in place: moved to `device`, and
            its 4-D parameters and buffers restrided to channels_last when asked.
        device: where training runs.
        channels_last: store conv weights as (out, kh, kw, in) in memory. A no-op, logged, for a
            model without 4-D weights (an MLP, an RNN, a 1-D CNN).
        compile: false (eager), true (mode "default") or a mode name: default,
            reduce-overhead, max-autotune (see the module docstring).

    Returns:
        `model` itself when `compile` is off, else `torch.compile(model, mode=...)`: a wrapper
        sharing `model`'s parameters. Keep `model` for `state_dict()` (the wrapper's keys have an
        `_orig_mod.` prefix), for EMA copies and for anything that deep-copies the model.
    """
    mode = compile_mode(compile)
    device = torch.device(device)
    model.to(device)
    if channels_last:
        if has_4d_weights(model):
            # nn.Module.to(memory_format=...) restrides only 4-D tensors, leaving the rest as is.
            model.to(memory_format=torch.channels_last)
            log.info("channels_last: conv weights of %s stored as NHWC", type(model).__name__)
        else:
            log.info(
                "trainer.channels_last=true does nothing for %s: it has no 2-D convolutions (4-D weights).",
                type(model).__name__,
            )
    if mode is None:
        return model
    if device.type == "cuda" and mode == "reduce-overhead":
        log.info(
            "torch.compile mode reduce-overhead records CUDA graphs: keep batch shapes fixed (data.drop_last=true)"
        )
    log.info("torch.compile(%s, mode=%s): the first steps compile (seconds to minutes)", type(model).__name__, mode)
    return torch.compile(model, mode=mode)


def unwrap(model: nn.Module) -> nn.Module:
    """The original module behind a `torch.compile` wrapper (the model itself when not compiled)."""
    return getattr(model, "_orig_mod", model)


def to_channels_last(x: Any) -> Any:
    """A 4-D tensor (B, C, H, W) restrided to channels_last; anything else returned unchanged
    (tabular (B, F) or signal (B, C, L) batches have no NHWC layout)."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def channels_last_batches(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield `batches` with the inputs (a batch's first element, or the batch itself when it is a
    tensor) in channels_last; targets are left alone.

    Inputs matter as well as weights: a conv with NHWC weights and an NCHW input converts the
    input itself, once per step; doing it here keeps the whole forward in one layout.
    """
    for batch in batches:
        if isinstance(batch, (tuple, list)) and batch:
            yield type(batch)([to_channels_last(batch[0]), *batch[1:]])
        else:
            yield to_channels_last(batch)
