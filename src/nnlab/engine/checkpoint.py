"""Checkpoint files: written atomically, read without unpickling arbitrary code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: to a temporary file in the same folder, flushed and
    fsync'ed to disk, then renamed over `path` (a rename within one file system is atomic). A
    crash, SIGKILL or power cut mid-write leaves the previous file intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers only, so a
    crafted pickle cannot execute code. Failures end in a `UserError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint not found: {path}. Check ckpt_path, or list the run's checkpoints/ folder.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():  # not a pickle torch refused: not a checkpoint at all
            raise _unreadable(path, e) from e
        raise UserError(
            f"Refused to load {path}: it holds objects other than tensors and plain containers "
            f"({_first_line(e)}). nnlab loads checkpoints with weights_only=True so that a file "
            "from elsewhere cannot run code; only use checkpoints written by nnlab."
        ) from e
    except Exception as e:  # noqa: BLE001 - an untrusted file: whatever breaks, the file is unreadable
        raise _unreadable(path, e) from e


def _unreadable(path: Path, error: BaseException) -> UserError:
    return UserError(
        f"Could not read checkpoint {path}: it is empty, truncated or not a PyTorch checkpoint "
        f"({_first_line(error)}). Use another checkpoint, e.g. the run's checkpoints/last.ckpt."
    )


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
