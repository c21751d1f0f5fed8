"""Checkpoint files: written atomically, read without unpickling arbitrary code."""

from __future__ import annotations

import copy
import os
import pickle
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import UserError


class UnreadableCheckpoint(UserError):
    """A checkpoint file that is missing, empty, truncated or not a PyTorch checkpoint at all."""


class RefusedCheckpoint(UserError):
    """A checkpoint whose pickle refers to code (a class or function that is not a tensor or a
    plain container): refused, never loaded."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: to a temporary file
    in the same folder, flushed and fsync'ed to disk, then renamed over `path` (a rename within
    one file system is atomic). A crash, SIGKILL or power cut mid-write leaves the previous file
    intact, never a truncated one."""
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


_IMMUTABLE = frozenset({int, float, bool, str, bytes, type(None)})


def snapshot(state: Any) -> Any:
    """A copy of `state` that training cannot change any more: every tensor copied to the host,
    every dict, list and tuple rebuilt with its type and attributes (a state dict's
    `_metadata`, which `load_state_dict` reads for old layouts, is kept). Cheap: one memcpy per tensor, no pickling."""
    if isinstance(state, torch.Tensor):
        state = state.detach()
        return state.clone() if state.device.type == "cpu" else state.to("cpu")  # (clone: 30% less overhead)
    if isinstance(state, dict):  # a shallow copy keeps the type (Counter, OrderedDict) and attributes
        frozen = copy.copy(state)
        for k, v in state.items():
            frozen[k] = snapshot(v)
        return frozen
    if isinstance(state, list):
        return [snapshot(v) for v in state]
    if isinstance(state, tuple):
        if set(map(type, state)) <= _IMMUTABLE:  # e.g. Python's RNG state: 625 ints
            return state
        items = [snapshot(v) for v in state]
        return type(state)(*items) if hasattr(state, "_fields") else type(state)(items)
    return state  # numbers, strings, None: immutable


class CheckpointWriter:
    """Writes checkpoint files on a background thread, so training goes on while a file is
    pickled, written and fsync'ed (2-7 ms per file on a 2-core machine: a large share of a
    small model's epoch).

    `write(state, paths)` takes a `snapshot` of the state in the calling thread (tensor copies
    only, so training cannot change what is written); the thread then pickles it and writes it
    atomically as `save_checkpoint` does, and every further path (best.ckpt next to last.ckpt,
    say) becomes a hard link to the file (a copy where links are not supported): one state, one
    write. Writes happen in order, one at a time. `wait()` blocks until the last write is on
    disk and re-raises an error it met; the engine calls it when training ends or is
    interrupted, before anything reads the files. A crash or SIGKILL mid-write leaves the
    previous files intact, as always.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(self, state: dict[str, Any], paths: Sequence[str | Path]) -> None:
        if paths:
            self.write_frozen(snapshot(state), paths)

    def write_frozen(self, frozen: dict[str, Any], paths: Sequence[str | Path]) -> None:
        """`write` for a state that is already a `snapshot` (one kept in memory for later)."""
        if not paths:
            return
        self.wait()
        self._thread = threading.Thread(target=self._write, args=(frozen, [Path(p) for p in paths]), name="ckpt")
        self._thread.start()

    def _write(self, state: dict[str, Any], paths: list[Path]) -> None:
        try:
            first = save_checkpoint(state, paths[0])
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


# torch.load(weights_only=True) could still run code from a crafted file before these releases:
# CVE-2025-32434 (GHSA-53q9-r3pm-6pq6, fixed in 2.6.0) and CVE-2026-24747 (GHSA-63cw-57p8-fm3p,
# heap corruption in the weights-only unpickler, fixed in 2.10.0). pyproject.toml pins a newer torch;
# this guards an install that went around the pin.
SAFE_TORCH = (2, 10)


def require_safe_torch(version: str | None = None) -> None:
    """Refuse to unpickle any file with a torch whose weights-only loader has known holes."""
    version = version or torch.__version__
    major, minor = (int(part) for part in re.findall(r"\d+", version)[:2])
    if (major, minor) < SAFE_TORCH:
        raise UserError(
            f"torch {version} is installed, whose torch.load(weights_only=True) can be made to run code by a "
            "crafted file (CVE-2025-32434, CVE-2026-24747); nnlab loads no checkpoint with it. Install nnlab's "
            "pinned torch: pip install -e . (or pip install 'torch>=2.14.1,<2.15')."
        )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers only, so a
    crafted pickle cannot execute code. Failures end in a `UserError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpoint(f"Checkpoint not found: {path}. Check ckpt_path, or list the run's checkpoints/ folder.")
    require_safe_torch()
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names what a refused pickle wanted to call; anything else is a broken file.
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", _plain(str(e)))
        if refused is None:
            raise _unreadable(path, e) from e
        raise RefusedCheckpoint(
            f"Refused to load {path}: unpickling it would call {refused.group(1)}, which is not a tensor or a "
            "plain container. nnlab loads checkpoints with weights_only=True so that a file from elsewhere "
            "cannot run code; only use checkpoints written by nnlab."
        ) from e
    except Exception as e:  # noqa: BLE001 - an untrusted file: whatever breaks, the file is unreadable
        raise _unreadable(path, e) from e


def mismatch(module: torch.nn.Module, weights: dict[str, Any]) -> str:
    """Why `weights` do not fit `module`, briefly: counts of missing, unexpected and
    wrongly-shaped entries with the first few names ("" when they fit)."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [
        f"{k} {tuple(weights[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in weights and hasattr(weights[k], "shape") and weights[k].shape != v.shape
    ]
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
        if names:
            more = ", ..." if len(names) > 3 else ""
            parts.append(f"{len(names)} {label} ({', '.join(names[:3])}{more})")
    return "; ".join(parts)


def _unreadable(path: Path, error: BaseException) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(
        f"Could not read checkpoint {path}: it is empty, truncated or not a PyTorch checkpoint "
        f"({first_line(error)}). Use another checkpoint, e.g. the run's checkpoints/last.ckpt."
    )


def _plain(text: str) -> str:
    """`text` without terminal colour codes (torch's unpickling errors carry some)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def first_line(error: BaseException) -> str:
    lines = _plain(str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__
