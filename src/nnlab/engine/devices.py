"""Which device a run trains on, and which kernels it may use there."""

from __future__ import annotations

import os
import re

import torch

from nnlab.errors import ConfigValueError


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; 'cpu'; 'cuda'; 'cuda:N'."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ConfigValueError(
            f"trainer.device={device!r} is not a valid choice. Choose one of: auto, cpu, cuda, cuda:N."
        )
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigValueError(
                f"trainer.device={device} but no CUDA device is available here "
                "(torch.cuda.is_available() is False). Use trainer.device=cpu or trainer.device=auto."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigValueError(
                f"trainer.device={device} but this machine has {torch.cuda.device_count()} CUDA device(s): "
                f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}."
            )
    return dev


def choose_kernels(device: torch.device, deterministic: bool) -> None:
    """`deterministic` (trainer.deterministic): only deterministic kernels, the same bits on every
    rerun. Otherwise, on CUDA, cuDNN times its candidate kernels once and keeps the fastest."""
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
