"""Ctrl-C during training: exit 130, with a loadable last.ckpt and readable TensorBoard logs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import cli_env

WAIT_FOR_CHECKPOINT_S = 120


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_saves_state_and_exits_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = ["trainer.max_epochs=100000", "trainer.device=cpu", "data=digits", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnlab.train", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT_FOR_CHECKPOINT_S
        while not last.exists():  # written at the end of the first epoch
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr
    assert "Stopped by Ctrl-C" in stdout + stderr

    state = torch.load(last, weights_only=True)
    assert state["epoch"] >= 1
    assert state["global_step"] >= 20  # digits: 20 steps an epoch
    # Where the run would resume: completed epochs plus the steps taken into the current one.
    assert state["global_step"] == 20 * state["epoch"] + state["epoch_step"]
    assert not list(last.parent.glob("*.tmp"))  # no half-written file left behind
    assert not (run_dir / "metrics.json").exists()  # the run did not finish

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert "train/loss" in events.Tags()["scalars"]  # the first epoch's scalars were flushed
    assert events.Scalars("train/loss")[0].step == 1
