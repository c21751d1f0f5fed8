"""Checkpoint files: written atomically, read without unpickling arbitrary code."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import UserError


def save_checkpoint(state: dict[str, Any] | bytes, path: str | Path) -> Path:
    """Write `state` (or its bytes, from `serialize`) to `path` atomically: to a temporary file
    in the same folder, flushed and fsync'ed to disk, then renamed over `path` (a rename within
    one file system is atomic). A crash, SIGKILL or power cut mid-write leaves the previous file
    intact, never a truncated one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if isinstance(state, bytes):
                f.write(state)
            else:
                torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable
    return path


def serialize(state: dict[str, Any]) -> bytes:
    """The bytes `torch.save` would write for `state` (tensors copied to the host)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


class CheckpointWriter:
    """Writes checkpoint files on a background thread, so training goes on while a file is
    written and fsync'ed (3-7 ms per file on a 2-core machine: a large share of a small model's
    epoch).

    `write(state, paths)` serializes the state in memory first, in the calling thread (the
    pickling holds Python's lock anyway, and afterwards training cannot change what is
    written); the thread then writes the bytes atomically as `save_checkpoint` does (file I/O
    and fsync release that lock), and every further path (best.ckpt next to last.ckpt, say)
    becomes a hard link to the file (a copy where links are not supported): one state, one write. Writes happen in
    order, one at a time. `wait()` blocks until the last write is on disk and re-raises an error
    it met; the engine calls it when training ends or is interrupted, before anything reads the
    files. A crash or SIGKILL mid-write leaves the previous files intact, as always.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, state: dict[str, Any], paths: Sequence[str | Path]) -> None:
        if not paths:
            return
        data = serialize(state)
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(data, [Path(p) for p in paths]), name="ckpt")
        self._thread.start()

    def _write(self, data: bytes, paths: list[Path]) -> None:
        try:
            first = save_checkpoint(data, paths[0])
            for path in paths[1:]:
                _link_or_copy(first, path)
        except BaseException as e:  # raised in the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _link_or_copy(source: Path, path: Path) -> None:
    """Make `path` the same file as `source`, atomically (a hard link, else a copy)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
