"""One process per run folder (`nnlab.runs.runfolder`): a second run into a folder in use stops at once
with one paragraph naming the holder, a SIGKILLed run's lock never blocks the next one, and a run
refused at start-up leaves no folder behind (but never removes anything that was there)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import TINY, cli_env, run_cli, train_tiny
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.runs.runfolder import LOCK_NAME, FolderInUse, lock_run_folder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and signals are POSIX")

WAIT_S = 120
# A long digits run that writes last.ckpt and best.ckpt after every epoch.
LONG = [
    "data=digits",
    "trainer.max_epochs=100000",
    "trainer.device=cpu",
    "trainer.summary=false",
    "callbacks.progress=null",
    "callbacks.model_checkpoint.save_interval_s=0",
]
# Holds the lock of argv[1] until stdin closes: another process, as a second nnlab command would see it.
HOLDER = (
    "import sys; from nnlab.runs.runfolder import lock_run_folder; lock = lock_run_folder(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nnlab.commands.train", *args],
        cwd=cwd,
        env=cli_env(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"no {what} within the time limit"
        time.sleep(0.05)


def status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text())["status"]
    except (OSError, ValueError):
        return None


def stop(proc: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_a_second_run_into_a_folder_in_use_stops_at_once_and_the_first_keeps_its_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start([*LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        wait_for(
            lambda: status(run_dir) == "running" and (run_dir / "checkpoints" / "last.ckpt").exists(), first, "run"
        )
        # The second differs in its seed and epochs: whatever of it reached the folder would show.
        second = run_cli([*TINY, "seed=7", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"], tmp_path)
        assert first.poll() is None, "the first run ended before the second one was refused"
    finally:
        stdout, stderr = stop(first)  # SIGTERM: it stops after its step, saving last.ckpt

    assert second.returncode == 2, second.stderr
    message = second.stderr.strip()
    assert message.startswith("Error: The run folder") and "\n" not in message
    assert (
        f"in use by process {first.pid} on " in message
        and "nnlab.commands.train" in message
        and "started 20" in message
    )
    assert "hydra.run.dir=" in message and "Traceback" not in second.stdout + second.stderr
    assert "Training" not in second.stdout  # stopped before building anything

    assert first.returncode == 128 + signal.SIGTERM, stderr
    log = (run_dir / "train.log").read_text()
    assert log.count("Building data") == 1 and log.count("Training MLP") == 1  # one run's lines only
    assert "in use" not in log and "seed=7" not in log
    assert "seed=7" not in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["seed"] == 0
    last = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    best = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    for state in (last, best):
        assert yaml.safe_load(state["config"])["seed"] == 0  # written by the first run
        assert yaml.safe_load(state["config"])["trainer"]["max_epochs"] == 100000
    assert best["epoch"] <= last["epoch"] >= 1
    assert status(run_dir) == "interrupted"
    assert not (run_dir / LOCK_NAME).exists()  # released as the first run ended


@pytest.mark.slow
def test_a_sigkilled_run_does_not_block_resuming_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = start([*LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    try:
        wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").exists(), first, "checkpoint")
    finally:
        stop(first, signal.SIGKILL)
    lock_file = json.loads((run_dir / LOCK_NAME).read_text())  # left behind: nothing ran on the way out
    assert lock_file["pid"] == first.pid

    epoch = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"]
    args = [*LONG, f"trainer.max_epochs={epoch + 1}", "trainer.resume=auto", f"hydra.run.dir={run_dir}"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"Resumed from {run_dir / 'checkpoints' / 'last.ckpt'}" in (run_dir / "train.log").read_text()
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["epoch"] == epoch + 1
    assert status(run_dir) == "completed"
    assert not (run_dir / LOCK_NAME).exists()


def test_the_lock_is_re_entrant_within_a_process_and_exclusive_across_processes(tmp_path: Path) -> None:
    folder = tmp_path / "run"

    def other_process_can_lock() -> bool:
        probe = "import sys; from nnlab.runs.runfolder import lock_run_folder; lock_run_folder(sys.argv[1]).release()"
        return subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True).returncode == 0

    outer = lock_run_folder(folder)
    inner = lock_run_folder(folder)  # e.g. train_once inside the command's guarded
    holder = json.loads((folder / LOCK_NAME).read_text())
    assert holder["pid"] == os.getpid() and holder["command"] and holder["started"]
    inner.release()
    assert outer.held and not other_process_can_lock()
    outer.release()
    outer.release()  # idempotent: does not drop a hold it no longer has
    assert not (folder / LOCK_NAME).exists()
    assert other_process_can_lock()


def test_a_folder_held_by_another_process_is_refused_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderInUse) as refused:
            lock_run_folder(folder)
    finally:
        holder.communicate("")
    message = str(refused.value)
    assert f"{folder} is in use by process {holder.pid} on " in message and "hydra.run.dir=" in message
    assert lock_run_folder(folder).held  # free again once the holder ended


def test_a_stale_lock_file_does_not_block(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text('{"pid": 1, "host": "gone", "command": "nnlab-train", "started": "then"}\n')
    lock = lock_run_folder(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


def test_ranks_other_than_zero_lock_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")  # torchrun's: rank 1 shares rank 0's folder and writes nothing
    lock = lock_run_folder(tmp_path / "run")
    assert not lock.held and not (tmp_path / "run").exists()


def test_a_run_refused_at_start_up_leaves_no_folder(tmp_path: Path) -> None:
    result = run_cli(["trainer.max_epochs=-1"], tmp_path)  # the default, timestamped run folder
    assert result.returncode == 2 and "trainer.max_epochs=-1" in result.stderr
    runs = tmp_path / "outputs" / "runs"
    assert not runs.exists() or not list(runs.iterdir())


@pytest.mark.parametrize(
    "earlier",
    [
        pytest.param({"notes.txt": "the user's own file"}, id="a file of the user's"),
        pytest.param({}, id="an empty folder of the user's"),
    ],
)
def test_a_run_refused_in_an_existing_folder_leaves_it_as_it_was(earlier: dict[str, str], tmp_path: Path) -> None:
    """(An earlier run's folder: tests/cli/test_errors.py::test_failed_run_leaves_an_earlier_run_untouched.)"""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for name, text in earlier.items():
        (run_dir / name).write_text(text)
    time.sleep(0.01)  # (the folder is older than the command)
    result = run_cli(["trainer.max_epochs=-1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert run_dir.is_dir()
    assert {p.name: p.read_text() for p in run_dir.iterdir()} == earlier  # no train.log, no lock file left


def test_a_run_continued_from_another_runs_checkpoint_locks_that_runs_folder(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier"
    train_tiny([], earlier)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(earlier)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: p.read_bytes() for p in (earlier / "checkpoints").iterdir()}
        result = run_cli([*TINY, f"ckpt_path={earlier / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    finally:
        holder.communicate("")
    assert result.returncode == 2, result.stderr
    assert f"The run folder {earlier} is in use by process {holder.pid} on " in result.stderr
    assert {p.name: p.read_bytes() for p in (earlier / "checkpoints").iterdir()} == before
    runs = tmp_path / "outputs" / "runs"  # the folder Hydra made for this run, left for the earlier one's
    assert not runs.exists() or not list(runs.iterdir())
