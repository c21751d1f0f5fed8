"""Exact resume of reinforcement learning: a PPO or DQN run stopped mid-epoch, with its
environments mid-episode (and DQN's replay buffer full and wrapped, past learning_starts),
continues from its last.ckpt to the same final weights, optimizer, environment and buffer
state, and the same metrics, as the run never stopped.

Two ways in, as for supervised runs (tests/engine/test_resume.py): SIGTERM's path (the trainer
stops at a step boundary and writes last.ckpt), then `trainer.resume=auto` in the same folder;
and a step snapshot (`every_n_train_steps`) of the uninterrupted run, continued with `ckpt_path`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import Run, assert_same, cli_env, compose_config, run_cli, train_tiny, with_parts
from nnlab.errors import Stopped
from nnlab.runs.pipeline import train

# 2 epochs of 4 batches; 2 CartPole environments; evaluation on 2 episodes per split.
COMMON = (
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=null",
    "trainer.device=cpu",
    "env=cartpole",
    "model=policy",
    "model.hidden_sizes=[16]",
    "env.num_envs=2",
    "env.val_episodes=2",
    "env.test_episodes=2",
    "callbacks.health=null",
    "callbacks.model_checkpoint.every_n_train_steps=3",
)
ALGORITHMS = {
    # Rollouts of 16 steps x 2 environments, 2 epochs of minibatches of 16, lr and clip annealed.
    "ppo": (
        "task=ppo", "task.n_steps=16", "task.batch_size=16", "task.n_epochs=2", "env.epoch_steps=128",
        "task.gif_frames=0",
    ),
    # One policy-gradient step a rollout of 16 x 2 steps (no state besides the environment's).
    "reinforce": ("task=reinforce", "task.n_steps=16", "env.epoch_steps=128", "task.gif_frames=0"),
    # 64 environment steps a batch (32 x 2), learning from the second batch on, 4 updates a batch;
    # a buffer of 200 transitions, overwritten from the fourth batch on; epsilon-greedy acting.
    "dqn": (
        "task=dqn", "task.train_freq=32", "task.learning_starts=64", "task.gradient_steps=4", "task.batch_size=16",
        "task.buffer_size=200", "task.target_update_interval=64", "env.epoch_steps=256", "task.gif_frames=0",
    ),
}  # fmt: skip
STEPS_PER_EPOCH = 4
STOP_AT = 6  # the second batch of the second epoch


def overrides(algorithm: str) -> list[str]:
    return [*COMMON, *ALGORITHMS[algorithm]]


@pytest.fixture(scope="module", params=sorted(ALGORITHMS))
def whole(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Run]:
    """The uninterrupted run of each algorithm (with a snapshot every 3 steps)."""
    algorithm = request.param
    return algorithm, train_tiny(overrides(algorithm), tmp_path_factory.mktemp(f"whole_{algorithm}"))


def assert_mid_episode_and_mid_epoch(state: dict[str, Any], algorithm: str) -> None:
    """The checkpoint was taken inside an epoch, inside episodes, after episodes had ended (and
    for DQN with a replay buffer that is learning and has wrapped around)."""
    assert 0 < state["epoch_step"] < STEPS_PER_EPOCH
    env = state["task"]["env"]
    assert all(actions is not None and len(actions) > 0 for actions in env["actions"]), env["actions"]
    batch_env_steps = {"ppo": 16 * 2, "reinforce": 16 * 2, "dqn": 32 * 2}[algorithm]
    assert env["episodes_done"] > 0 and env["total_steps"] == state["global_step"] * batch_env_steps
    if algorithm == "dqn":
        buffer = state["task"]["buffer"]
        assert buffer["size"] == 200 and buffer["position"] == env["total_steps"] % 200  # full, wrapped
        assert env["total_steps"] > 64  # past learning_starts: the optimizer holds Adam's moments
        assert state["task"]["optim"]["optimizer"]["state"]


def assert_same_run(want: Run, got: Run) -> None:
    a, b = want.checkpoint("last"), got.checkpoint("last")
    assert b["global_step"] == a["global_step"] == 2 * STEPS_PER_EPOCH
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():  # the final weights, bitwise
        assert torch.equal(tensor, b["model"][name]), name
    # The optimizer, the environments (episodes, actions, returns) and the algorithm's own state
    # (PPO's update count; DQN's target network and replay buffer), and every generator.
    assert_same(a["task"], b["task"], "task")
    assert_same(a["rng"], b["rng"], "rng")
    assert got.metrics == want.metrics
    for key in ("train/return_mean", "val/return_mean", "test/return_mean"):
        assert key in got.metrics


def test_a_run_stopped_by_sigterm_resumes_to_the_same_end(whole: tuple[str, Run], tmp_path: Path, monkeypatch) -> None:
    algorithm, reference = whole
    run_dir = tmp_path / "interrupted"

    class StopAt:  # what SIGTERM does, at a known step
        def on_train_batch_end(self, trainer) -> None:
            if trainer.global_step == STOP_AT:
                trainer.stop_signals.requested = signal.SIGTERM

    cfg = compose_config([*overrides(algorithm), "callbacks.progress=null"], run_dir)
    with monkeypatch.context() as patch:
        with_parts(patch, lambda parts: parts.trainer.callbacks.append(StopAt()))
        with pytest.raises(Stopped) as stopped:
            train(cfg)
    assert stopped.value.cause == "SIGTERM"
    assert not (run_dir / "metrics.json").exists()
    interrupted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["global_step"] == STOP_AT
    assert_mid_episode_and_mid_epoch(interrupted, algorithm)

    resumed = train_tiny([*overrides(algorithm), "trainer.resume=auto"], run_dir)
    assert_same_run(reference, resumed)


def test_a_step_snapshot_resumes_to_the_same_end(whole: tuple[str, Run], tmp_path: Path) -> None:
    algorithm, reference = whole
    snapshot = reference.dir / "checkpoints" / "step-000006.ckpt"
    state = torch.load(snapshot, weights_only=True)
    assert state["global_step"] == STOP_AT
    assert_mid_episode_and_mid_epoch(state, algorithm)

    run_dir = tmp_path / "from_snapshot"
    run_dir.mkdir()
    shutil.copy(snapshot, run_dir / "start.ckpt")
    resumed = train_tiny([*overrides(algorithm), f"ckpt_path='{run_dir / 'start.ckpt'}'"], run_dir)
    assert_same_run(reference, resumed)


def test_the_runs_differ_without_the_environment_state(whole: tuple[str, Run], tmp_path: Path, monkeypatch) -> None:
    """The check above can fail: resumed with its environments started afresh instead of
    replayed (the weights, optimizer and generators restored), the run ends elsewhere."""
    from nnlab.envs.environment import Environment

    algorithm, reference = whole
    run_dir = tmp_path / "no_env_state"
    run_dir.mkdir()
    shutil.copy(reference.dir / "checkpoints" / "step-000006.ckpt", run_dir / "start.ckpt")
    monkeypatch.setattr(Environment, "load_state_dict", lambda self, state: None)
    resumed = train_tiny([*overrides(algorithm), f"ckpt_path='{run_dir / 'start.ckpt'}'"], run_dir)
    a, b = reference.checkpoint("last")["model"], resumed.checkpoint("last")["model"]
    assert not all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.skipif(sys.platform == "win32", reason="signals to a child process are POSIX")
def test_a_real_sigterm_then_a_new_process_resumes_to_the_same_end(tmp_path: Path) -> None:
    """The same through the command line: a real SIGTERM to `nnlab-train` at whatever step it
    has reached after its first epoch, then `trainer.resume=auto` in a new process, ends where
    the uninterrupted run (in-process) ends."""
    long = [*overrides("ppo"), "trainer.max_epochs=6", "callbacks.progress=null"]
    reference = train_tiny(long, tmp_path / "whole")
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nnlab.commands.train", *long, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        log = run_dir / "train.log"
        while not (log.exists() and "epoch 1/6" in log.read_text()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch within the time limit"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, stderr
    stopped = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert STEPS_PER_EPOCH <= stopped["global_step"] < 6 * STEPS_PER_EPOCH

    resumed = run_cli([*long, "trainer.resume=auto", f"hydra.run.dir={run_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    want, got = reference.checkpoint("last"), torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["global_step"] == 6 * STEPS_PER_EPOCH
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert_same(want["task"], got["task"], "task")
    assert json.loads((run_dir / "metrics.json").read_text()) == reference.metrics
