"""Tiny reinforcement-learning runs end to end: the metrics each epoch reports, the return curves
drawn against environment steps, the episode GIF, a goal that stops training, and (slow) PPO
solving CartPole as its experiment is configured."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import Run, compose_config, epoch_curve, train_tiny
from nnlab.runs.pipeline import train

# 2 epochs of 4 rollouts of 16 steps x 2 CartPole environments (32 environment steps a batch).
TINY_PPO = (
    "env=cartpole",
    "task=ppo",
    "model=policy",
    "model.hidden_sizes=[16]",
    "env.num_envs=2",
    "task.n_steps=16",
    "task.batch_size=32",
    "task.n_epochs=2",
    "env.epoch_steps=128",
    "env.val_episodes=3",
    "env.test_episodes=2",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=null",
    "task.gif_frames=0",
)
BATCH_ENV_STEPS = 32


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return train_tiny([*TINY_PPO, "trainer.log_every_n_steps=2"], tmp_path_factory.mktemp("ppo"))


def test_a_run_reports_returns_on_every_split(ppo_run: Run) -> None:
    m = ppo_run.metrics
    assert m["train/env_steps"] == 2 * 4 * BATCH_ENV_STEPS
    assert m["train/episodes"] >= 1 and m["train/return_mean"] > 0
    assert m["train/return_min"] <= m["train/return_mean"] <= m["train/return_max"] <= 500
    for split in ("val", "test"):
        assert m[f"{split}/return_min"] <= m[f"{split}/return_mean"] <= m[f"{split}/return_max"] <= 500
        assert m[f"{split}/episode_length"] == m[f"{split}/return_mean"]  # CartPole: +1 a step
        assert m[f"{split}/solved"] == float(m[f"{split}/return_mean"] >= 475)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance"):
        assert math.isfinite(m[f"train/{key}"]), key
    assert 0 < m["train/entropy"] <= math.log(2) + 1e-6  # a distribution over CartPole's two actions
    # The clip range anneals to 0 over the run's 8 rollouts: the last epoch's mean is over rollouts 5-8.
    assert m["train/clip_range"] == pytest.approx(0.2 * np.mean([1 - k / 8 for k in range(5, 9)]), rel=1e-6)
    # Validation is a curve per epoch, on the same seeds each time; the environment group makes its
    # return what the run optimizes, so best.ckpt holds the epoch with the highest.
    val = [e.value for e in epoch_curve(ppo_run.dir, "val/return_mean")]
    assert len(val) == 2
    assert (ppo_run.cfg.optimized_metric, ppo_run.cfg.optimized_mode) == ("val/return_mean", "max")
    assert ppo_run.checkpoint("best")["epoch"] == 1 + int(np.argmax(val))


def test_episode_returns_are_drawn_against_environment_steps(ppo_run: Run) -> None:
    """EpisodeLog: rollout/* every log_every_n_steps=2 batches, at step = environment steps
    (2 x 32 per point), the last point the run's final training return."""
    accumulator = events(ppo_run.dir)
    tags = set(accumulator.Tags()["scalars"])
    assert {"rollout/return_mean", "rollout/return_min", "rollout/return_max", "rollout/episode_length"} <= tags
    curve = accumulator.Scalars("rollout/return_mean")
    steps = [e.step for e in curve]
    # From the first batch pair after which an episode had ended (none may have in the first 64
    # steps), every second batch's environment steps, to the run's 256.
    assert steps[0] in (64, 128) and steps == list(range(steps[0], 257, 2 * BATCH_ENV_STEPS))
    assert curve[-1].value == pytest.approx(ppo_run.metrics["train/return_mean"], rel=1e-6)
    lengths = accumulator.Scalars("rollout/episode_length")
    assert [e.value for e in lengths] == pytest.approx([e.value for e in curve], rel=1e-6)  # CartPole: +1 a step
    # (the step scalars of the loop stay on the batch axis)
    assert [e.step for e in accumulator.Scalars("train/policy_loss_step")] == [2, 4, 6, 8]


def test_the_test_episode_is_a_gif_in_the_run_folder_and_in_tensorboard(tmp_path: Path) -> None:
    run = train_tiny([*TINY_PPO, "trainer.max_epochs=1", "task.gif_frames=12"], tmp_path)
    gif = run.dir / "figures" / "episode.gif"
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames > 1 and image.n_frames <= 12
        assert image.size[0] <= 300  # scaled down from the 600-pixel render
        size = image.size
    (image_event,) = events(run.dir).Images("test/episode")
    assert image_event.encoded_image_string.startswith(b"GIF8")
    assert image_event.encoded_image_string == gif.read_bytes()
    assert (image_event.width, image_event.height) == size
    with Image.open(io.BytesIO(image_event.encoded_image_string)) as shown:
        assert shown.n_frames > 1


def test_async_environments_make_the_same_run(ppo_run: Run, tmp_path: Path) -> None:
    """env.vectorization=async steps each environment in a process of its own: the same
    episodes, so the same run, to the last bit of its weights."""
    run = train_tiny([*TINY_PPO, "trainer.log_every_n_steps=2", "env.vectorization=async"], tmp_path)
    assert run.metrics == ppo_run.metrics
    want, got = ppo_run.checkpoint("last")["model"], run.checkpoint("last")["model"]
    assert all(torch.equal(want[name], got[name]) for name in want)


def test_no_gif_when_gif_frames_is_0(ppo_run: Run) -> None:
    assert not (ppo_run.dir / "figures" / "episode.gif").exists()
    assert "test/episode" not in events(ppo_run.dir).Tags()["images"]


@pytest.mark.parametrize(
    ("mode", "monitor", "threshold", "epochs"),
    [
        ("max", "val/return_mean", 5.0, 1),  # every CartPole episode lasts at least 8 steps: reached at once
        ("max", "val/return_mean", 1e9, 3),  # never reached: the run goes on to max_epochs
        ("min", "val/episode_length", 1000.0, 1),  # mode min: at or below the goal
        ("min", "val/episode_length", 1.0, 3),
    ],
)
def test_a_goal_stops_training_once_reached_and_not_before(
    mode: str, monitor: str, threshold: float, epochs: int, tmp_path: Path
) -> None:
    run = train_tiny(
        [
            *TINY_PPO,
            "trainer.max_epochs=3",
            "callbacks=early_stopping",
            "callbacks.early_stopping.patience=10",
            f"callbacks.early_stopping.stopping_threshold={threshold}",
            f"optimized_metric={monitor}",
            f"optimized_mode={mode}",
        ],
        tmp_path,
    )
    last = run.checkpoint("last")
    assert last["epoch"] == epochs and last["global_step"] == 4 * epochs
    assert last["should_stop"] is (epochs < 3)
    if epochs < 3:
        assert last["stop_reason"].startswith(f"{monitor} = ")
        assert last["stop_reason"].endswith(f"reached callbacks.early_stopping.stopping_threshold={threshold:g}")
    assert "test/return_mean" in run.metrics  # stopped early, still tested


@pytest.mark.slow
def test_ppo_solves_cartpole_as_configured(tmp_path: Path) -> None:
    """experiment=cartpole_ppo (the RL Zoo's settings): every one of the 20 test episodes lasts
    (about) the full 500 steps, within its 97,280 environment steps."""
    cfg = compose_config(["experiment=cartpole_ppo", "trainer.device=cpu", "callbacks.progress=null"], tmp_path)
    metrics = train(cfg)
    assert metrics["test/return_mean"] >= 475
    assert metrics["test/solved"] == 1.0
    assert metrics["train/env_steps"] <= 19 * 5120
