"""What a run directory records about the code that produced it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import nnlab


def git_state(path: Path) -> dict[str, Any]:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the repository holding `path`."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return {"git_commit": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return {"git_commit": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def run_info() -> dict[str, Any]:
    """nnlab version and git commit (of the nnlab checkout, else of the working directory), the
    library versions and the command line: enough to rebuild the run from its folder."""
    import torch

    git = git_state(Path(nnlab.__file__).resolve().parent)
    if git["git_commit"] is None:
        git = git_state(Path.cwd())
    return {
        "nnlab_version": nnlab.__version__,
        **git,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "command": sys.argv,
        "cwd": str(Path.cwd()),
        "started": datetime.now().isoformat(timespec="seconds"),
    }


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write `data` as JSON, atomically (a temporary file renamed over `path`): a run killed
    mid-write leaves the previous file, never half of one, for `nnlab-report` to read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


STATUSES = ("running", "completed", "failed", "interrupted")


def write_status(output_dir: str | Path, status: str, started: float, **fields: Any) -> Path:
    """`status.json`: how the run ended (one of STATUSES), its wall time so far, and e.g. the
    error of a failed sweep trial. `nnlab-report` reads it for each trial of a sweep."""
    import time

    assert status in STATUSES, status
    record = {"status": status, "wall_s": round(time.time() - started, 3), **fields}
    return write_json(record, Path(output_dir) / "status.json")
