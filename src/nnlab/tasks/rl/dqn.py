"""Deep Q-learning: a Q-network fitted to bootstrapped targets from a replay buffer."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nnlab.engine.optim import UpdateRules
from nnlab.engine.precision import Precision
from nnlab.envs.environment import Environment
from nnlab.errors import ConfigValueError, check_range
from nnlab.tasks.rl.episodes import EpisodeTask
from nnlab.tasks.rl.replay import ReplayBuffer
from nnlab.tasks.rl.rollout import check_policy_network


class DQN(EpisodeTask):
    """DQN (Mnih et al. 2015), optionally Double DQN (van Hasselt et al. 2016), for discrete
    actions.

    Each training batch acts `train_freq` steps of every environment epsilon-greedily (a random
    action with probability epsilon, else argmax Q), storing each transition in the replay
    buffer, then takes `gradient_steps` updates on minibatches drawn from the buffer. Sampling
    old transitions breaks the correlation of consecutive steps; the target network, a copy of
    the Q-network refreshed every `target_update_interval` environment steps, keeps the
    regression target from moving with every update. Epsilon falls linearly from
    `exploration_initial_eps` to `exploration_final_eps` over the first `exploration_fraction`
    of the run's environment steps; before `learning_starts` steps every action is random.

    Args:
        model: the Q-network (B, *obs) -> (B, actions), from the model zoo.
        optimizer, scheduler: factories (Hydra partials).
        env: the `nnlab.envs.environment.Environment` (env config group); discrete actions.
        train_freq: steps per environment between two rounds of updates (a training batch).
        gradient_steps: updates per round.
        batch_size: transitions per update.
        buffer_size: transitions the replay buffer keeps.
        learning_starts: environment steps of random play before the first update.
        gamma: discount factor.
        target_update_interval: environment steps between copies of the Q-network into the
            target network, checked after each round of updates (so at most one copy per round).
        exploration_fraction, exploration_initial_eps, exploration_final_eps: the epsilon schedule.
        double: Double DQN: the online network picks the next action, the target network scores
            it, which removes the max operator's overestimation.
        gif_frames: frames of the test episode's GIF (0: none).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        env: Environment,
        scheduler: Callable[..., Any] | None = None,
        train_freq: int = 256,
        gradient_steps: int = 128,
        batch_size: int = 64,
        buffer_size: int = 100_000,
        learning_starts: int = 1000,
        gamma: float = 0.99,
        target_update_interval: int = 10,
        exploration_fraction: float = 0.16,
        exploration_initial_eps: float = 1.0,
        exploration_final_eps: float = 0.04,
        double: bool = False,
        gif_frames: int = 100,
    ) -> None:
        check_range("task.train_freq", train_freq, 1)
        check_range("task.gradient_steps", gradient_steps, 1)
        check_range("task.batch_size", batch_size, 1)
        check_range("task.buffer_size", buffer_size, 1)
        check_range("task.learning_starts", learning_starts, 0)
        check_range("task.gamma", gamma, 0.0, 1.0)
        check_range("task.target_update_interval", target_update_interval, 1)
        check_range("task.exploration_fraction", exploration_fraction, 0.0, 1.0)
        check_range("task.exploration_initial_eps", exploration_initial_eps, 0.0, 1.0)
        check_range("task.exploration_final_eps", exploration_final_eps, 0.0, 1.0)
        self.setup_episodes(env, optimizer, scheduler, gif_frames)
        if env.continuous:
            raise ConfigValueError(
                "task=dqn picks the action with the largest Q-value, so it needs discrete actions, and "
                f"env.id={env.id} has continuous ones. Use task=ppo or task=reinforce (a Gaussian policy), or a "
                "discrete environment."
            )
        check_policy_network(model, "dqn")
        self.model = model
        self.target = copy.deepcopy(model).requires_grad_(False)
        env.plan(train_freq)
        self.updates_per_batch = gradient_steps
        self.gradient_steps, self.batch_size, self.learning_starts = gradient_steps, batch_size, learning_starts
        self.gamma, self.target_update_interval, self.double = gamma, target_update_interval, double
        self.eps_fraction, self.eps_start, self.eps_end = (
            exploration_fraction,
            exploration_initial_eps,
            exploration_final_eps,
        )
        self.buffer = ReplayBuffer(buffer_size, env.input_shape, (), torch.int64)
        self.last_sync = 0  # environment step of the last target update

    def configure(
        self, device: torch.device, precision: Precision, total_steps: int, rules: UpdateRules | None = None
    ) -> None:
        if rules is not None and rules.accumulate_grad_batches > 1:
            raise ConfigValueError(
                f"trainer.accumulate_grad_batches={rules.accumulate_grad_batches}: task=dqn takes task.gradient_steps "
                "updates per batch of environment steps; raise task.batch_size for larger updates instead."
            )
        super().configure(device, precision, total_steps, rules)
        self.target.to(self.device)

    @property
    def epsilon(self) -> float:
        """The exploration rate at the current environment step."""
        total = self.total_batches * self.env.batch_env_steps
        progress = self.env.total_steps / max(self.eps_fraction * total, 1e-9)
        return self.eps_start + min(progress, 1.0) * (self.eps_end - self.eps_start)

    @torch.no_grad()
    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return self.model(self.observations(obs)).argmax(-1).cpu().numpy().astype(np.int64)

    def training_step(self, batch: Any, update: bool = True) -> dict[str, torch.Tensor]:
        env = self.env
        n = env.num_envs
        for _ in range(env.rollout_steps):
            obs = torch.as_tensor(env.obs, dtype=torch.float32)
            explore = torch.rand(n) < (1.0 if env.total_steps < self.learning_starts else self.epsilon)
            actions = torch.randint(0, env.num_actions, (n,))
            if not explore.all():  # (no forward pass while every action is random, as before learning_starts)
                with torch.no_grad():
                    greedy = self.model(obs.to(self.device)).argmax(-1).cpu()
                actions = torch.where(explore, actions, greedy)
            _, rewards, terminated, _, final = env.step(actions.numpy())
            next_obs = torch.as_tensor(final, dtype=torch.float32)
            self.buffer.add(
                obs,
                actions,
                torch.as_tensor(rewards, dtype=torch.float32),
                next_obs,
                torch.as_tensor(terminated, dtype=torch.float32),
            )
        if env.total_steps < self.learning_starts:
            return {"epsilon": torch.tensor(1.0)}
        losses = torch.zeros(2, device=self.device)
        for _ in range(self.gradient_steps):
            s, a, r, s_next, term = self.buffer.sample(self.batch_size, self.device)
            # The regression target: y = r + gamma (1 - terminated) max_a' Q_target(s', a'); Double
            # DQN evaluates the online network's argmax with the target network instead.
            with torch.no_grad(), self.precision.autocast():
                if self.double:
                    best = self.model(s_next).argmax(1, keepdim=True)
                    next_q = self.target(s_next).gather(1, best).squeeze(1)
                else:
                    next_q = self.target(s_next).max(1).values
                y = r + self.gamma * (1 - term) * next_q.float()
            with self.precision.autocast():
                q = self.model(s).gather(1, a.unsqueeze(1)).squeeze(1).float()
            loss = F.smooth_l1_loss(q, y)  # Huber: a squared error near 0, linear for large TD errors
            self.optim.step(loss)
            losses += torch.stack([loss.detach(), q.detach().mean()])
        if env.total_steps - self.last_sync >= self.target_update_interval:
            self.target.load_state_dict(self.model.state_dict())
            self.last_sync = env.total_steps
        loss, q_mean = (losses / self.gradient_steps).unbind()
        return {"loss": loss, "q_mean": q_mean, "epsilon": torch.tensor(self.epsilon)}

    def algorithm_state(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "buffer": self.buffer.state_dict(), "last_sync": self.last_sync}

    def load_algorithm_state(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.buffer.load_state_dict(state["buffer"])
        self.last_sync = int(state["last_sync"])
