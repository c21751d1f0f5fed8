"""Who may write a run folder: one process at a time, held by a lock file `<run>/.nnlab.lock`.

Two runs started into one folder (`hydra.run.dir=x` twice, or two runs in the same second with
the default timestamped folder) would mix silently: last.ckpt from one, best.ckpt from the
other, one train.log interleaving both. Every command locks its folder first (`nnlab.cli.app.guarded`),
and a second process stops at once with one paragraph naming the process that holds it.

The lock is the operating system's advisory file lock (`flock`) on `.nnlab.lock`: the kernel drops
it when the holding process ends, however it ends (SIGKILL, out of memory), so a killed run never
blocks the next one or its `trainer.resume=auto`. The file itself holds, for the message, the
holder's pid, host, command line and start time; it is deleted when the lock is released (one a
killed process left is taken over by the next run). Within one process the lock is re-entrant:
cross-validation and nnlab-ensemble lock their folder, then each fold or member its sub-folder,
and a run moved into another run's folder (`ckpt_path=<run>/checkpoints/last.ckpt`) locks that
one too. Ranks of a data-parallel run other than 0 lock nothing: they write nothing, and they
share rank 0's folder.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from nnlab.errors import UserError
from nnlab.runs.runlog import RunLogHandler, detach_logs

log = logging.getLogger(__name__)

LOCK_NAME = ".nnlab.lock"
# A file system without flock (some network mounts) answers one of these: the run goes on unlocked.
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class FolderInUse(UserError):
    """Another process holds the lock of the run folder this command was to write."""


@dataclass
class _Held:
    fd: int
    path: Path  # the lock file
    count: int  # the RunFolderLocks of this process that hold it


_held: dict[Path, _Held] = {}  # folder (resolved) -> this process's lock on it


class RunFolderLock:
    """One hold on a run folder's lock; `release()` (or leaving a `with` block) drops it, and the
    folder is unlocked when the process's last hold on it is dropped."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder  # None: nothing was locked (a rank other than 0, no flock)

    @property
    def held(self) -> bool:
        return self.folder is not None and self.folder in _held

    def release(self) -> None:
        """Idempotent."""
        folder, self.folder = self.folder, None
        held = _held.get(folder) if folder is not None else None
        if held is None:
            return
        held.count -= 1
        if held.count == 0:
            del _held[folder]
            # Deleted while still locked, so no other process can take a lock on the old file.
            held.path.unlink(missing_ok=True)
            os.close(held.fd)  # (closing drops the flock)

    def __enter__(self) -> RunFolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_run_folder(folder: str | Path) -> RunFolderLock:
    """Take the lock of `folder` (created if missing) for this process, or raise `FolderInUse`
    naming the process that holds it. Nothing is written into a folder another process holds."""
    if os.environ.get("RANK", "0") != "0":  # torchrun's rank: only rank 0 writes (see the module)
        return RunFolderLock(None)
    folder = Path(folder).resolve()
    held = _held.get(folder)
    if held is not None:
        held.count += 1
        return RunFolderLock(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderInUse(in_use_message(folder, path)) from None
        except OSError as e:
            os.close(fd)
            if e.errno not in NO_LOCKS:
                raise
            log.warning("%s cannot be locked (%s): nothing stops a second run from writing there.", folder, e.strerror)
            return RunFolderLock(None)
        # A holder releasing its lock deletes the file first: if that happened after this process
        # opened it, the lock just taken is on a file no one else will open. Lock the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _write_holder(fd)
    _held[folder] = _Held(fd, path, 1)
    return RunFolderLock(folder)


def _write_holder(fd: int) -> None:
    """Who holds the lock, for the message another process prints. Best effort: a full disk must
    not stop the lock from working (the lock itself needs no data)."""
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command_line(),
        "started": datetime.now().isoformat(timespec="seconds"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    except OSError:
        pass


def command_line() -> str:
    """This process's command as typed: `nnlab-train ...`, or `python -m nnlab.commands.train ...`."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(".py") and "-m" in sys.orig_argv:  # python -m <module>: argv[0] is its file
        argv = ["python", *sys.orig_argv[sys.orig_argv.index("-m") :]]
    elif argv:
        argv[0] = Path(argv[0]).name
    return shlex.join(argv)


def in_use_message(folder: Path, path: Path) -> str:
    """The paragraph for a folder locked by another process, naming that process."""
    try:
        holder = json.loads(path.read_text())
        who = f"process {holder['pid']} on {holder['host']}, started {holder['started']}, command: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # it has the lock but has not written its name yet
        who = "another process"
    return (
        f"The run folder {folder} is in use by {who}. Two runs in one folder would mix their "
        f"checkpoints and logs, so this one stopped before writing anything there. Wait for that run to "
        f"end, or choose another folder with hydra.run.dir=<folder> (a sweep: hydra.sweep.dir=<folder>). "
        f"(The lock is {path}; it is released when that process ends, however it ends.)"
    )


def discard_if_unused(folder: str | Path, lock: RunFolderLock | None) -> bool:
    """Undo what this process made in `folder` when that is only its log file (and the lock): a
    command refused at start-up leaves the folder as it found it, and no folder at all where it
    made the folder itself (`nnlab.runs.runlog.RunLogHandler` records, as it opens the log, whether
    the log file and the folder were there before). Needs this process's lock on the folder.
    Nothing that was there before is touched: not an earlier run's train.log (which may have
    grown), not a file of the user's, not a file this process wrote besides its log (the folder
    holds a name the log handler did not find there: the command got further than its start).
    Returns whether the folder was removed. The log handlers into the folder are closed either way.
    """
    folder = Path(folder).resolve()
    logs = detach_logs(folder)
    if lock is None or not lock.held or lock.folder != folder or _held[folder].count > 1:
        return False
    if not all(isinstance(h, RunLogHandler) for h in logs):  # (a FileHandler of the user's: unknown)
        return False
    made = {Path(h.baseFilename).name for h in logs if h.created}
    found = set.union(set(), *(h.found for h in logs)) if logs else None
    names = {p.name for p in folder.iterdir()}
    if found is None or not names <= found | made | {LOCK_NAME}:
        return False
    for name in made:
        (folder / name).unlink(missing_ok=True)
    fresh = all(h.fresh_folder for h in logs)
    lock.release()  # (its last hold: the lock file goes too)
    if not fresh:
        return False
    try:
        folder.rmdir()  # only if empty: a file that appeared meanwhile keeps the folder
    except OSError:
        return False
    return True
