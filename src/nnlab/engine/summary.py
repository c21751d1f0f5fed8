"""A model summary: its layers, their output shapes and parameter counts, as a plain-text table."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def model_summary(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """A table of `model`'s layers: dotted name, type, output shape and own parameters.

    Rows are the leaf modules plus any container that holds parameters of its own (a SOM's
    prototypes, a perceptron's weights); containers that only group other layers are left out,
    since their dotted name already shows in their children's (`net.0`, `net.1`, ...). A row's
    parameters are the module's own, so the column adds up to the total (shared modules appear once).

    Shapes come from one forward pass of `example` (e.g. two rows of a validation batch) with a
    forward hook on every row's module; a module called twice shows its first call. The pass runs
    in eval mode under `torch.no_grad()`, and leaves the model as it found it: each module's
    train/eval mode and torch's random generators (CPU and CUDA) are restored and every hook is
    removed, even if the pass fails, so printing a summary never changes a run. If `model(example)`
    fails (a GAN's container, a SOM whose forward means something else), or no example is given,
    the table has no shape column, and a failure is said in one line under it.
    """
    rows: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        has_own = any(True for _ in module.parameters(recurse=False))
        is_leaf = not any(True for _ in module.children())
        if is_leaf or has_own:
            rows.append((name or "(model)", module))

    shapes: dict[nn.Module, str] = {}
    output_shape = None
    failure = None
    if example is not None:
        output_shape, failure = _forward_shapes(model, [m for _, m in rows], example, shapes)

    header = ["Layer", "Type"] + (["Output shape"] if output_shape is not None else []) + ["Params"]
    table = [header]
    for name, module in rows:
        own = sum(p.numel() for p in module.parameters(recurse=False))
        line = [name, type(module).__name__]
        if output_shape is not None:
            line.append(shapes.get(module, "-"))  # "-": not called by forward (e.g. a GAN's other net)
        line.append(f"{own:,}")
        table.append(line)

    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for i, line in enumerate(table):
        cells = [cell.ljust(w) for cell, w in zip(line[:-1], widths)] + [line[-1].rjust(widths[-1])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[0]))
    lines.append("-" * len(lines[0]))

    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if example is not None:
        lines.append(f"Input shape:          {_format_shape(example)}")
    if output_shape is not None:
        lines.append(f"Output shape:         {output_shape}")
    lines.append(f"Total params:         {total:,}")
    lines.append(f"Trainable params:     {trainable:,}")
    lines.append(f"Non-trainable params: {total - trainable:,}")
    if failure is not None:
        lines.append(f"(No shapes: model(example) failed with {failure}.)")
    return "\n".join(lines)


def _forward_shapes(
    model: nn.Module, modules: list[nn.Module], example: torch.Tensor, shapes: dict[nn.Module, str]
) -> tuple[str | None, str | None]:
    """Run `model(example)` once, filling `shapes` with each module's output shape; return the
    model's output shape (None on failure) and the failure as one line (None on success)."""

    def record(module: nn.Module, inputs: Any, output: Any) -> None:
        shapes.setdefault(module, _format_shape(output))

    modes = {m: m.training for m in model.modules()}
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    handles = [m.register_forward_hook(record) for m in modules]
    try:
        model.eval()
        with torch.no_grad():
            output = model(example)
        return _format_shape(output), None
    except Exception as e:  # any failure only costs the shape column
        shapes.clear()
        message = str(e).splitlines()[0] if str(e) else ""
        return None, f"{type(e).__name__}: {message[:160]}" if message else type(e).__name__
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _format_shape(value: Any) -> str:
    """(2, 10) for a tensor; [(2, 20, 64), [(1, 2, 64), (1, 2, 64)]] for an LSTM's nested tuple."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_format_shape(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_shape(v)}" for k, v in value.items()) + "}"
    return type(value).__name__
