"""Checkpoint files: written atomically, read without unpickling arbitrary code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` via a temporary file and an atomic rename, so a crash or Ctrl-C
    mid-write leaves the previous checkpoint intact instead of a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers only, so a
    crafted pickle cannot execute code. Failures end in a `UserError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint not found: {path}. Check ckpt_path, or list the run's checkpoints/ folder.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"Refused to load {path}: it holds objects other than tensors and plain containers "
            f"({str(e).splitlines()[0]}). nnlab loads checkpoints with weights_only=True so that a file "
            "from elsewhere cannot run code; only use checkpoints written by nnlab."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise UserError(
            f"Could not read checkpoint {path}: it is truncated or not a PyTorch checkpoint "
            f"({str(e).splitlines()[0]}). Use another checkpoint, e.g. the run's checkpoints/last.ckpt."
        ) from e
