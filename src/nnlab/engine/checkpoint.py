"""Checkpoint files: written atomically, read without unpickling arbitrary code."""

from __future__ import annotations

import _compat_pickle
import copy
import io
import os
import pickle
import pickletools
import re
import shutil
import threading
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nnlab.errors import UserError


class UnreadableCheckpoint(UserError):
    """A checkpoint file that is missing, empty, truncated or not a PyTorch checkpoint at all.
    `what` is the message's first sentence, what is wrong, without the advice that follows (a
    caller that knows which other files load gives its own)."""

    def __init__(self, what: str, advice: str) -> None:
        super().__init__(f"{what} {advice}")
        self.what = what


class RefusedCheckpoint(UserError):
    """A checkpoint whose pickle refers to code (a class or function that is not a tensor or a
    plain container): refused, never loaded."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` to `path` atomically: to a temporary file
    in the same folder, flushed and fsync'ed to disk, then renamed over `path` (a rename within
    one file system is atomic). A crash, SIGKILL or power cut mid-write leaves the previous file
    intact, never a truncated one; so does a write the system refuses (a full disk, a quota).

    The state is pickled into memory, then written with Python's own file write: torch's file
    writer reports a failed write as "enforce fail ... file write failed", without the reason,
    while Python's raises an `OSError` with its errno (ENOSPC, EDQUOT, EFBIG, ...), here named
    after `path`, which `nnlab.cli.app.guarded` turns into one paragraph. (The cost: the file's
    bytes are in memory once more while it is written.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pickled = io.BytesIO()
    torch.save(state, pickled)
    with _replacing(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(pickled.getbuffer())
            f.flush()
            os.fsync(f.fileno())
    return path


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary name beside `path` to write; then rename it over `path` and make the
    rename durable. On any error the temporary file is removed (also freeing the space it took),
    and an `OSError` is raised again naming `path`, not the temporary file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno is None:
            raise
        raise OSError(e.errno, e.strerror, str(path)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


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
    pickled, written and fsync'ed (for a small model, that takes a large share of an epoch).

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
    with _replacing(path) as tmp:  # (a full disk can refuse the copy, or even the link's directory entry)
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())


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
    crafted pickle cannot execute code. A file whose pickle refers to code ends in
    `RefusedCheckpoint` naming what it refers to; a missing, empty or damaged one in
    `UnreadableCheckpoint`."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableCheckpoint(
            f"Checkpoint not found: {path}.", "Check ckpt_path, or list the run's checkpoints/ folder."
        )
    require_safe_torch()
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol other than its own (asking to file an issue): a crafted
            # file's, refused below with a message of its own.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - an untrusted file: whatever breaks, it is not loaded
        # Why it failed is read from the file itself, not from the wording of torch's message
        # (which changes between releases, and advises weights_only=False: never repeated here).
        references = code_references(path)
        if references:
            raise RefusedCheckpoint(
                f"Refused to load {path}: its pickle refers to code ({', '.join(references[:5])}), not only to "
                "tensors and plain values, so loading it could run that code; nnlab did not load it. A checkpoint "
                "written by nnlab-train never holds such references. Do not use this file: ask whoever sent it for "
                "one written by nnlab-train, or train the run again."
            ) from None
        raise _unreadable(path, e) from None


# The pickle opcodes that push a string (candidates for STACK_GLOBAL's module and name).
_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}
)
# Far above the pickle of any checkpoint nnlab writes (its tensors are stored beside it).
_MAX_PICKLE_BYTES = 256 * 2**20


def code_references(path: Path) -> list[str]:
    """The classes and functions the pickle(s) in checkpoint `path` refer to, other than those
    torch's weights-only loader allows (its tensor rebuilders, OrderedDict, ...): read with
    `pickletools`, which parses the opcodes without running any. [] for a file that refers to
    none, or cannot be parsed."""
    found: set[str] = set()
    try:
        for data in _pickles(path):
            found |= _globals_in(data)
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        pass
    allowed = _weights_only_globals()
    return sorted(found - allowed)


def _pickles(path: Path) -> Iterator[bytes]:
    """The pickled parts of a checkpoint: `*/data.pkl` in torch's zip format; the whole file in
    the legacy format (a few pickles one after another, then raw tensor bytes)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".pkl") and info.file_size <= _MAX_PICKLE_BYTES:
                    yield archive.read(info)
    elif path.stat().st_size <= _MAX_PICKLE_BYTES:
        yield path.read_bytes()


def _globals_in(data: bytes) -> set[str]:
    """The "module.name" of every GLOBAL, INST and STACK_GLOBAL in the pickles at the start of `data`."""
    found: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        pushed: list[Any] = []  # recent values pushed: strings, or None for anything else
        memo: dict[int, Any] = {}
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if name in ("GLOBAL", "INST"):
                    found.add(_py3_name(*str(arg).split(" ", 1)))
                elif name == "STACK_GLOBAL":
                    module, qualname = pushed[-2:] if len(pushed) >= 2 else [None, None]
                    found.add(_py3_name(module, qualname) if module and qualname else "<a class or function>")
                elif name in _STRING_OPS:
                    pushed.append(arg if isinstance(arg, str) else bytes(arg).decode("latin-1"))
                elif name == "MEMOIZE":
                    memo[len(memo)] = pushed[-1] if pushed else None
                elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = pushed[-1] if pushed else None
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    pushed.append(memo.get(int(arg)))
                elif name != "STOP" and op.stack_after:
                    pushed.append(None)
                pushed = pushed[-2:]
        except Exception:  # noqa: BLE001 - the end of the pickles (raw tensor bytes follow) or damage
            break
    return found


def _py3_name(module: str, name: str = "") -> str:
    """The "module.name" as Python 3 unpickles it (protocol 2 writes builtins as __builtin__)."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _weights_only_globals() -> set[str]:
    """The "module.name"s torch's weights-only unpickler accepts (private torch API, read
    defensively: an empty set only makes the refusal message name more)."""
    try:
        from torch import _weights_only_unpickler as wo

        allowed = set(wo._get_allowed_globals())
        allowed |= set(wo._get_user_allowed_globals())
        return allowed
    except Exception:  # noqa: BLE001
        return set()


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
    others = sorted(p.name for p in path.parent.glob("*.ckpt") if p.name != path.name)
    instead = (
        f"Use another checkpoint of the run (beside it: {', '.join(others[:6])}{', ...' if len(others) > 6 else ''})"
        if others
        else "Use another checkpoint, or train the run again"
    )
    detail = first_line(error).split(". ")[0]  # (torch's zip reader goes on about miniz for 3 more sentences)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in detail:
        detail = "its pickle is damaged"  # (torch's own text advises unpickling it unchecked)
    return UnreadableCheckpoint(
        f"Could not read checkpoint {path}: it is empty, truncated or not a PyTorch checkpoint ({detail}).",
        f"{instead}.",
    )


def _plain(text: str) -> str:
    """`text` without terminal colour codes (torch's unpickling errors carry some)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def first_line(error: BaseException) -> str:
    lines = _plain(str(error)).strip().splitlines()
    return lines[0] if lines else type(error).__name__
