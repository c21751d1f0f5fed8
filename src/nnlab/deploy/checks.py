"""Checks on an artifact: does it compute what the float model computes (parity), how well does
it score on the test split, and how fast does it answer (median latency)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable

import torch

from nnlab.deploy.runtime import Predictor
from nnlab.errors import UserError

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


class ParityError(UserError):
    """An exported artifact whose outputs differ from the PyTorch model's: the export is wrong."""


def check_parity(
    name: str, artifact: Predictor, reference: Predictor, batches: Batches, atol: float = 1e-4, classes: bool = True
) -> dict[str, float]:
    """Compare `artifact` with `reference` on every batch; raise `ParityError` when the largest
    absolute output difference exceeds `atol` or (classification) any predicted class differs.

    1e-4 on logits is loose enough for float32 reassociation (kernels sum in another order,
    ~1e-6 relative) and tight enough to catch a wrong weight, layer or axis, which move logits
    by far more. Returns {max_abs_diff, argmax_agree (the share of equal predicted classes)}.
    """
    diff, agree, n = 0.0, 0, 0
    for x, _ in batches:
        ours, theirs = artifact(x).float(), reference(x).float()
        if ours.shape != theirs.shape:
            raise ParityError(
                f"Parity check failed: {name} returns outputs of shape {tuple(ours.shape)} where PyTorch "
                f"returns {tuple(theirs.shape)}. The export is wrong; do not deploy it."
            )
        diff = max(diff, (ours - theirs).abs().max().item())
        # The predicted class (or, for a language model's (B, T, V), each position's next token).
        same = ours.argmax(-1) == theirs.argmax(-1)
        agree += same.reshape(len(x), -1).all(1).sum().item() if classes else len(x)
        n += len(x)
    result = {"max_abs_diff": diff, "argmax_agree": agree / max(n, 1)}
    if diff > atol or agree < n:
        classes_note = f"; predicted classes agree on {agree} of {n} inputs" if classes else ""
        raise ParityError(
            f"Parity check failed: {name} differs from the PyTorch model by up to {diff:.3g} "
            f"(tolerance export.atol={atol:g}){classes_note}. The export is wrong; do not deploy it. "
            "Re-export (another export.opset or export.onnx_exporter may help), or raise export.atol "
            "if a difference of this size is acceptable."
        )
    return result


def score(predict: Predictor, batches: Batches, kind: str) -> dict[str, float]:
    """Accuracy (classification; next-token accuracy of a language model) or mean squared error
    (regression, in the model's target units)."""
    hits, sq, n = 0.0, 0.0, 0
    for x, y in batches:
        out = predict(x).float()
        if kind in ("classification", "language_model"):  # (B, K) vs (B,), or (B, T, V) vs (B, T)
            hits += (out.argmax(-1) == y).float().reshape(len(x), -1).mean(1).sum().item()
        else:
            sq += ((out - y.float().reshape(out.shape)) ** 2).mean(dim=tuple(range(1, out.dim()))).sum().item()
        n += len(x)
    return {"mse": sq / n} if kind == "regression" else {"acc": hits / n}


def median_latency_ms(predict: Predictor, x: torch.Tensor, repeats: int = 50, warmup: int = 5) -> float:
    """Median wall time of one call on the batch `x`, in milliseconds, after `warmup` calls
    (which fill caches and let onnxruntime and torch pick their kernels). The median, not the
    mean, so one call preempted by another process does not move it."""
    for _ in range(warmup):
        predict(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def batch_of(batches: Batches, size: int) -> torch.Tensor:
    """`size` real inputs: the split's first rows, repeated when the split is smaller."""
    rows, n = [], 0
    while n < size:
        for x, _ in batches:
            rows.append(x)
            n += len(x)
            if n >= size:
                break
        if n == 0:
            raise ValueError("no inputs to time")
    return torch.cat(rows)[:size]
