"""A write the operating system refuses (a full disk, a file-size limit) ends a command in one
paragraph naming the file and the fix, status.json says the same, and what was on disk before the
failure still loads (`nnlab.cli.write_errors`, `nnlab.engine.checkpoint.save_checkpoint`).

Real failures: a subprocess with a file-size limit (`RLIMIT_FSIZE`, SIGXFSZ ignored: a write past
it fails with EFBIG, no privileges needed) and, where the test may mount one, a small tmpfs that
fills up (ENOSPC); the log handler and status.json's fallback by writes made to fail in-process.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CLI_TIMEOUT_S, TINY, cli_env, train_tiny
from nnlab.cli import write_errors
from nnlab.cli.app import user_error_message
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.runs.runlog import RunLogHandler

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="resource limits and tmpfs are POSIX")


def train_limited(args: list[str], cwd: Path, max_file_bytes: int) -> subprocess.CompletedProcess[str]:
    """`python -m nnlab.commands.train <args>` that may not write a file larger than `max_file_bytes`."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (else the signal kills it): the write fails with EFBIG

    return subprocess.run(
        [sys.executable, "-m", "nnlab.commands.train", *args],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        preexec_fn=limit,
    )


def assert_one_paragraph(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert "enforce fail" not in result.stdout + result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: Could not write ")
    assert result.stderr.count("Error:") == 1 and "Logging error" not in result.stderr
    for part in parts:
        assert part in message, message
    return message


def test_a_checkpoint_the_system_refuses_to_write_ends_in_one_paragraph(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train_tiny([], run_dir)  # epoch 1's last.ckpt and best.ckpt (~650 KB each)
    before = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    args = [*TINY, "trainer.max_epochs=3", "trainer.resume=auto", f"hydra.run.dir={run_dir}"]
    result = train_limited(args, tmp_path, max_file_bytes=200_000)  # room for logs and JSON, not a checkpoint

    assert_one_paragraph(result, str(run_dir / "checkpoints"), ".ckpt: File too large", "ulimit -f", "hydra.run.dir=")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed"
    assert status["error"] == result.stderr.strip().splitlines()[-1].removeprefix("Error: ")
    after = {p.name: p.read_bytes() for p in (run_dir / "checkpoints").iterdir()}
    assert after == before  # no temporary file left, nothing overwritten
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == 1


@pytest.mark.slow
def test_tensorboard_that_cannot_write_ends_the_same_way(tmp_path: Path) -> None:
    # No checkpoints: the event file, growing with every logged value, is what hits the limit.
    run_dir = tmp_path / "run"
    args = [
        "trainer.max_epochs=60",
        "trainer.device=cpu",
        "callbacks.model_checkpoint=null",
        "callbacks.progress=null",
        f"hydra.run.dir={run_dir}",
    ]
    result = train_limited(args, tmp_path, max_file_bytes=20_000)
    assert_one_paragraph(result, f"a file in {run_dir}: File too large")
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert [p.stat().st_size for p in events] == [20_000]  # it was the event file
    assert json.loads((run_dir / "status.json").read_text())["error"].startswith(f"Could not write a file in {run_dir}")


def can_mount_tmpfs(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_full_disk_ends_in_one_paragraph_and_keeps_the_checkpoints_written_before(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if not can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs here (needs root or unprivileged user namespaces)")
    run_dir, copy = disk / "run", tmp_path / "copy"
    # Every epoch keeps its own checkpoint (~650 KB): a 2.6 MB disk fills up after a few.
    args = [
        "trainer.max_epochs=20",
        "trainer.device=cpu",
        "callbacks.progress=null",
        "callbacks.model_checkpoint.every_n_epochs=1",
        "callbacks.model_checkpoint.save_interval_s=0",
        f"hydra.run.dir={run_dir}",
    ]
    train = [sys.executable, "-m", "nnlab.commands.train", *args]
    # In a mount namespace of its own: the tmpfs goes away with it, after the run's folder is copied out.
    script = (
        f"mount -t tmpfs -o size=2600k tmpfs {disk} && {subprocess.list2cmdline(train)}; "
        f"code=$?; cp -a {run_dir} {copy}; exit $code"
    )
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    message = assert_one_paragraph(result, "No space left on device", "Free space on that disk", str(run_dir))
    status = json.loads((copy / "status.json").read_text())
    assert status["status"] == "failed" and status["error"] == message.removeprefix("Error: ")
    snapshots = sorted((copy / "checkpoints").glob("epoch-*.ckpt"))
    assert len(snapshots) >= 2
    assert [load_checkpoint(p)["epoch"] for p in snapshots] == list(range(1, len(snapshots) + 1))
    assert load_checkpoint(copy / "checkpoints" / "last.ckpt")["epoch"] == len(snapshots)
    assert not list(copy.rglob("*.tmp"))


def test_the_run_log_reports_a_failed_write_in_one_line_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class FullDisk:
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    handler = RunLogHandler(str(tmp_path / "train.log"))
    handler.stream.close()
    handler.stream = FullDisk()
    record = logging.LogRecord("nnlab", logging.INFO, __file__, 1, "epoch %d", (1,), None)
    for _ in range(3):
        handler.emit(record)
    handler.close()
    err = capsys.readouterr().err
    assert (
        err == f"nnlab: could not write {tmp_path / 'train.log'} (No space left on device); its later lines are lost.\n"
    )


def test_status_json_says_why_even_when_no_new_file_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "status.json").write_text(json.dumps({"status": "running", "wall_s": 1.0}))

    def full_disk(output_dir, status, started, **fields):
        (Path(output_dir) / f"status.json.{os.getpid()}.tmp").write_text("")  # (what write_json leaves)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(write_errors, "write_status", full_disk)
    assert write_errors.write_status_anyway(tmp_path, "failed", 0.0, error="Could not write x")
    assert json.loads((tmp_path / "status.json").read_text())["error"] == "Could not write x"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_which_os_errors_are_the_users_to_fix(tmp_path: Path) -> None:
    full = user_error_message(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert full.startswith(f"Could not write a file in {tmp_path}: No space left on device.")
    named = user_error_message(OSError(errno.EDQUOT, "Disk quota exceeded", "/runs/x/last.ckpt"), tmp_path)
    assert named.startswith("Could not write /runs/x/last.ckpt: Disk quota exceeded.")
    assert "read-only" in user_error_message(OSError(errno.EROFS, "Read-only file system", "/ro/x"))
    assert "permissions" in user_error_message(PermissionError(errno.EACCES, "Permission denied", "/root/x"))
    assert user_error_message(OSError(errno.EIO, "Input/output error", "/x")) is None  # a fault: its traceback
    assert user_error_message(PermissionError(errno.EPERM, "Operation not permitted")) is None  # about what?
