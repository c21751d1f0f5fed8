"""Deployment artifacts of a trained model, and the checks that they still compute the same thing.

    model (eval, CPU) -> to_torchscript -> model.ts        (runs without nnlab's code)
                      -> to_onnx        -> model.onnx      (onnxruntime, any language)
                      -> quantize_onnx  -> model.int8.onnx (int8 weights, float activations)
                      -> quantize_torch -> the same model with int8 Linear/LSTM/GRU layers
    each artifact -> check_parity (same outputs as the float model on real inputs)
                  -> median_latency_ms at batch 1 and 64

`nnlab-export` (nnlab.commands.export) runs the whole list on a checkpoint. onnx, onnxruntime and
onnxscript are an optional extra, imported only when needed (`pip install "nnlab[export]"`).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from nnlab.errors import UserError


def require(module: str) -> ModuleType:
    """Import one of the export extra's packages, or say how to install them."""
    try:
        return import_module(module)
    except ImportError as e:
        raise UserError(
            f"Exporting to ONNX needs the package '{module.split('.')[0]}', which is not installed. "
            'Install the export extra: pip install "nnlab[export]" (or drop onnx from export.formats).'
        ) from e
