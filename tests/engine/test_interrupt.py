"""Ctrl-C (SIGINT) and a scheduler's SIGTERM during training: the run stops after the current
step, writes a loadable last.ckpt and readable TensorBoard logs, and exits with 128 + the signal."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import cli_env, epoch_curve

WAIT_FOR_EPOCH_S = 120


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child process are POSIX")
@pytest.mark.parametrize(
    ("signum", "code", "cause"), [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")], ids=["int", "term"]
)
def test_a_stop_signal_saves_state_and_exits(signum: int, code: int, cause: str, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    # The default save_interval_s (10 s) writes no last.ckpt in the first epochs: the one found
    # afterwards was written because of the signal.
    args = ["trainer.max_epochs=100000", "trainer.device=cpu", "data=digits", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnlab.commands.train", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + WAIT_FOR_EPOCH_S
        log = run_dir / "train.log"
        while not (log.exists() and "epoch 1/100000" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch within the time limit"
            time.sleep(0.05)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    assert proc.returncode == code, stderr
    assert "Traceback" not in stdout + stderr
    assert f"Stopped by {cause}. The last checkpoint and the TensorBoard logs are in" in stdout + stderr
    assert f"{cause}: stopping after this step and saving last.ckpt" in stdout + stderr
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"

    state = torch.load(last, weights_only=True)
    assert state["epoch"] >= 1
    assert state["global_step"] >= 20  # digits: 20 steps an epoch
    # Where the run would resume: completed epochs plus the steps taken into the current one.
    assert state["global_step"] == 20 * state["epoch"] + state["epoch_step"]
    assert not list(last.parent.glob("*.tmp"))  # no half-written file left behind
    assert not (run_dir / "metrics.json").exists()  # the run did not finish

    assert epoch_curve(run_dir, "train/loss")[0].step == 1  # the first epoch's scalars were flushed
