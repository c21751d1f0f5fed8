"""Run an artifact on a batch: every artifact becomes a `Predictor`, a function from a (B, ...)
float tensor to the (B, outputs) tensor, so parity, accuracy and latency treat them alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from nnlab.deploy import require

Predictor = Callable[[torch.Tensor], torch.Tensor]


def torch_predictor(model: torch.nn.Module) -> Predictor:
    """An nn.Module (or a TorchScript module) as a predictor, without autograd."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x)

    return predict


def onnx_predictor(path: Path, threads: int = 1) -> Predictor:
    """An onnxruntime session on the CPU with `threads` intra-op threads (and one inter-op
    thread), the same count torch is given, so their latencies compare."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: no notes about unused initializers
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def predict(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])

    return predict
