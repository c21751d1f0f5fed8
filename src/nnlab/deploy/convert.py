"""Turn an eval-mode PyTorch model into deployable files: TorchScript, ONNX, and int8 variants.

Every function takes an `example` batch of real inputs, shape (B, *input_shape), used to trace
the model; the batch dimension stays dynamic in every artifact.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from nnlab.deploy import require

log = logging.getLogger(__name__)

ONNX_EXPORTERS = ("dynamo", "torchscript")


def to_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> torch.jit.ScriptModule:
    """Trace `model` on `example` and save it to `path` (load with `torch.jit.load`, no nnlab needed).

    Tracing records the operations one forward pass runs, so data-dependent Python branches are
    frozen; nnlab's models have none that depend on the batch. torch 2.14 marks torch.jit as
    deprecated in favour of torch.export; the warning is silenced because TorchScript is still
    what LibTorch (C++) and older serving stacks load, and the parity check proves the file right.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        # An RNN's flatten_parameters check converts a tensor to a bool; it does not depend on the input.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")
        traced = torch.jit.trace(model, example, check_trace=False)
    traced.save(str(path))
    return traced


def to_onnx(model: nn.Module, example: torch.Tensor, path: Path, opset: int = 18, exporter: str = "dynamo") -> Path:
    """Export `model` to ONNX at `path`, input `x` (batch, *input_shape) -> output `y` (batch, outputs).

    Exporters (torch 2.14):
        dynamo: the default of `torch.onnx.export` since torch 2.9. It captures the graph with
            `torch.export` and translates it with onnxscript; the slower of the two, the
            supported path going forward.
        torchscript: the legacy exporter (trace, then translate), fast but deprecated and due
            for removal.
    Opset 18 is the oldest the dynamo exporter targets natively (it would convert down to older
    ones) and onnxruntime 1.14+ runs it.
    """
    require("onnx")
    kwargs: dict[str, object]
    if exporter == "dynamo":
        require("onnxscript")
        kwargs = {"dynamic_shapes": ({0: "batch"},), "dynamo": True, "external_data": False}
    else:
        kwargs = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}, "dynamo": False}
    # The dynamo exporter prints its progress and the legacy one warns that it is legacy: neither is news.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (example,), str(path), input_names=["x"], output_names=["y"], opset_version=opset, **kwargs
        )
    return path


def quantize_onnx(src: Path, dst: Path) -> Path:
    """Dynamic int8 quantization of an ONNX model (`onnxruntime.quantization.quantize_dynamic`).

    The weights of MatMul/Gemm (and Conv, LSTM, GRU nodes) are stored as int8 with a per-tensor
    scale, about 4x smaller; activations stay float and are quantized on the fly at each call,
    so no calibration data is needed. Accuracy usually moves by well under a point; check it.
    """
    quantization = require("onnxruntime.quantization")
    # onnxruntime advises its pre-processing (shape inference, graph fusion) on every call; it
    # matters for static (calibrated) quantization, and the exported graph is already optimized.
    advice = _DropMessage("Please consider to run pre-processing")
    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8)
    finally:
        root.removeFilter(advice)
    return dst


class _DropMessage(logging.Filter):
    """Drops log records whose message starts with `prefix`."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quantize_torch(model: nn.Module) -> nn.Module:
    """A copy of `model` whose Linear, LSTM and GRU layers hold int8 weights
    (`torch.ao.quantization.quantize_dynamic`); convolutions stay float (dynamic quantization
    has no int8 convolution). Runs on CPU only."""
    import copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).cpu(), {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8
        )


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's weights as `torch.save` writes them (its checkpoint, less the optimizer)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()
