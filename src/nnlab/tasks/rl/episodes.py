"""What every reinforcement-learning task shares: acting in the environment, deterministic
evaluation, return statistics, a rendered episode, and the state an exact resume needs.

A task here owns its algorithm's update (`training_step`: collect a rollout, then learn from
it); `EpisodeTask` gives the rest of the `nnlab.engine.task.Task` contract, the same for REINFORCE,
DQN and PPO.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from nnlab.engine.animation import Animation
from nnlab.engine.optim import Optimization, UpdateRules, build_scheduler
from nnlab.engine.precision import Precision
from nnlab.engine.task import TaskDefaults
from nnlab.envs.environment import Environment
from nnlab.errors import ConfigValueError, check_range
from nnlab.tasks.rl.rollout import to_env_actions


class EpisodeTask(TaskDefaults):
    """The shared half of an RL task: subclasses set `self.model`, `self.env` and implement
    `training_step` and `greedy` (the deterministic action of the evaluation).

    Metrics. Training (per epoch, over the last completed episodes): return_mean, return_min,
    return_max, episode_length, and env_steps and episodes so far. Validation and test: the
    deterministic policy's return over the split's episodes (return_mean, return_std,
    return_min, return_max, episode_length) and `solved`, 1 when return_mean reaches the
    environment's solved return.
    """

    supports_ddp = False  # acts in its own environments: ranks would need environments of their own
    supports_backbone_lr_scale = False
    own_optimizer_parts: tuple[str, ...] = ()
    prepare_when_restored = False

    model: nn.Module
    env: Environment
    updates_per_batch: int  # optimizer steps in one training batch (a schedule's length counts them)

    def setup_episodes(self, env: Environment, optimizer: Callable[..., Any], scheduler: Any, gif_frames: int) -> None:
        check_range("task.gif_frames", gif_frames, 0)
        if not isinstance(env, Environment):
            raise ConfigValueError(
                f"{type(self).__name__} learns by acting in an environment, but got {type(env).__name__}: "
                "choose one with env=cartpole (or acrobot, pendulum, mountain_car)."
            )
        self.env = env
        self.gif_frames = gif_frames
        self._optimizer_factory = optimizer
        self._scheduler_factory = scheduler
        self.optim: Optimization | None = None
        self.device = torch.device("cpu")
        self.total_batches = 1

    # ---- engine contract ----------------------------------------------------------------------
    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)
        self.precision = precision
        self.total_batches = max(total_steps, 1)  # rollouts in the whole run (annealing reads it)
        optimizer = self._optimizer_factory(params=self.model.parameters())
        # A per-update schedule (onecycle) spans every update of the run: several per batch here.
        scheduler = build_scheduler(self._scheduler_factory, optimizer, total_steps * self.updates_per_batch)
        self.optim = Optimization(optimizer, scheduler, precision.grad_scaler(), rules=rules)

    def single_optimizer(self) -> torch.optim.Optimizer | None:
        return self.optim.optimizer if self.optim is not None else None

    def evaluate(self, batches: Iterable[Any], detailed: bool = False) -> dict[str, float]:
        """The deterministic policy over one episode per batch (each batch holds its seed)."""
        seeds = [int(b[0].reshape(-1)[0]) for b in batches]
        self.model.eval()
        returns, lengths = self.env.run_episodes(self.greedy, seeds)
        self.model.train()
        metrics = {
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length": float(lengths.mean()),
        }
        if self.env.solved_return is not None:
            metrics["solved"] = float(returns.mean() >= self.env.solved_return)
        return metrics

    def epoch_metrics(self) -> dict[str, float]:
        return {
            **self.env.recent_returns(),
            "env_steps": float(self.env.total_steps),
            "episodes": float(self.env.episodes_done),
        }

    def episode_scalars(self) -> tuple[dict[str, float], int]:
        """The recent training episodes' statistics and the environment step they are at: what
        `nnlab.engine.callbacks.EpisodeLog` draws against environment steps."""
        return self.env.recent_returns(), self.env.total_steps

    def figures(self) -> dict[str, Any]:
        """One deterministic episode from the first test seed, as an animation (a GIF)."""
        if self.gif_frames == 0:
            return {}
        seed = int(next(iter(self.env.eval_batches("test")))[0][0])
        self.model.eval()
        frames = self.env.record_episode(self.greedy, seed, max_frames=self.gif_frames)
        self.model.train()
        return {"episode": Animation(frames, fps=25)} if len(frames) else {}

    def epoch_end(self, val_metrics: dict[str, float]) -> None:
        self.optim.epoch_end(val_metrics)

    def learning_rates(self) -> dict[str, float]:
        return {"lr": self.optim.lr}

    def state_dict(self) -> dict[str, Any]:
        return {"optim": self.optim.state_dict(), "env": self.env.state_dict(), **self.algorithm_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optim.load_state_dict(state["optim"])
        self.env.load_state_dict(state["env"])
        self.load_algorithm_state(state)

    def algorithm_state(self) -> dict[str, Any]:
        """What the algorithm keeps between batches besides the optimizer (a replay buffer)."""
        return {}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        return None

    # ---- acting ---------------------------------------------------------------------------------
    def observations(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of observations (evaluation, the GIF, predict)."""
        return to_env_actions(self.model.act_deterministic(self.observations(obs)), self.env)
