"""When the operating system refuses a write (a full disk, a quota, a read-only mount): one
paragraph naming the file and the fix, and a status.json that still says why the run ended.

nnlab's own writes keep what is on disk whole when they fail: checkpoints and JSON files are
written to a temporary file and renamed over the old one only once complete, so a failed write
leaves the previous file; `nnlab.engine.checkpoint.save_checkpoint` pickles into memory first, so
the failure reaches `nnlab.cli.app.guarded` as Python's `OSError` with its errno and file name (torch's
own file writer reports only "enforce fail ... file write failed").
"""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

from nnlab.runs.runinfo import write_status

# Writes the machine refused for want of room: freeing space (or writing elsewhere) is the fix.
NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Writes refused whatever the room: the place itself may not be written (by this user).
NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}

ELSEWHERE = "write the run elsewhere with hydra.run.dir=<folder>"


def write_error_message(error: BaseException, folder: str | Path | None = None) -> str | None:
    """The paragraph for an `OSError` that refused a write (see NO_ROOM, NOT_WRITABLE), naming
    its file (else `folder`, the command's output folder), or None for any other error.
    EACCES and EPERM count only with a file name (without one they may be about anything)."""
    if not isinstance(error, OSError) or error.errno is None:
        return None
    code = error.errno
    if code not in NO_ROOM and not (code in NOT_WRITABLE and (error.filename or code == errno.EROFS)):
        return None
    where = error.filename or (f"a file in {folder}" if folder else "a file")
    if code == errno.EFBIG:
        fix = f"This process may not write a file that large (see `ulimit -f`): raise the limit, or {ELSEWHERE}"
    elif code in NO_ROOM:
        fix = f"Free space on that disk (or raise your quota), or {ELSEWHERE} on another disk"
    elif code == errno.EROFS:
        fix = f"That file system is read-only: {ELSEWHERE}"
    else:
        fix = f"This user may not write there: change the permissions, or {ELSEWHERE}"
    kept = f" The files already in {folder} are intact (checkpoints and JSON files are only ever replaced whole)."
    kept = kept if folder else ""
    return (
        f"Could not write {where}: {os.strerror(code)}. {fix}; then run the same command again (nnlab-train "
        f"continues from the run's last checkpoint with trainer.resume=auto).{kept}"
    )


def write_status_anyway(output_dir: str | Path, status: str, started: float, **fields: Any) -> bool:
    """`nnlab.runs.runinfo.write_status`, also on a full disk: when the new file cannot be written
    beside the old one, the old status.json is overwritten in place (its disk block is already
    allocated, so a record of a few hundred bytes needs no new space; not atomic, which matters
    only if the process dies during that one write). Returns whether status.json now says
    `status`; never raises an `OSError`, so it cannot replace the error being reported."""
    path = Path(output_dir) / "status.json"
    try:
        write_status(output_dir, status, started, **fields)
        return True
    except OSError:
        path.with_name(f"{path.name}.{os.getpid()}.tmp").unlink(missing_ok=True)  # what write_json left
    if not path.is_file():
        return False
    record = {"status": status, "wall_s": round(time.time() - started, 3), **fields}  # as write_status makes it
    try:
        with open(path, "r+b") as f:
            f.write((json.dumps(record, indent=2) + "\n").encode())
            f.truncate()
            f.flush()
            os.fsync(f.fileno())
        return True
    except OSError:
        return False
