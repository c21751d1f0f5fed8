"""REINFORCE: the policy gradient of the returns, with a learned baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnlab.envs.environment import Environment
from nnlab.errors import check_range
from nnlab.models.actor_critic import ActorCritic
from nnlab.tasks.rl.episodes import EpisodeTask
from nnlab.tasks.rl.rollout import check_policy_network, collect, gae


class Reinforce(EpisodeTask):
    """REINFORCE (Williams 1992) with a learned state-value baseline: one gradient step per
    rollout, on the rollout alone.

    Each training batch plays `n_steps` steps of every environment with the current policy.
    The return G_t = r_t + gamma r_t+1 + ... of each step is summed to the end of its episode;
    where the rollout or the time limit cuts an episode, the rest is estimated by the value
    network (`rollout.gae` with lambda = 1). Subtracting the baseline V(s_t) leaves the
    gradient's expectation unchanged and lowers its variance.

    Args:
        model: the policy network (the model zoo's, sized from the environment's spaces).
        critic: the baseline's value network, of the same architecture with one output.
        optimizer, scheduler: factories (Hydra partials); one optimizer trains both networks.
        env: the `nnlab.envs.environment.Environment` (env config group).
        n_steps: steps per environment in each rollout; a batch is n_steps x env.num_envs.
        gamma: discount factor.
        ent_coef: weight of the entropy bonus.
        vf_coef: weight of the baseline's regression loss.
        normalize_advantage: standardize each rollout's advantages (G_t - V(s_t)).
        log_std_init: the Gaussian's starting log standard deviation (continuous actions).
        ortho_init: orthogonal initialization of both networks (`ActorCritic`).
        gif_frames: frames of the test episode's GIF (0: none).
    """

    def __init__(
        self,
        model: nn.Module,
        critic: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        env: Environment,
        scheduler: Callable[..., Any] | None = None,
        n_steps: int = 256,
        gamma: float = 0.99,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        normalize_advantage: bool = True,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
        gif_frames: int = 100,
    ) -> None:
        check_range("task.n_steps", n_steps, 1)
        check_range("task.gamma", gamma, 0.0, 1.0)
        check_range("task.ent_coef", ent_coef, 0.0)
        check_range("task.vf_coef", vf_coef, 0.0)
        check_policy_network(model, "reinforce")
        self.setup_episodes(env, optimizer, scheduler, gif_frames)
        self.model = ActorCritic(model, critic, env.continuous, env.num_actions, log_std_init, ortho_init)
        env.plan(n_steps)
        self.updates_per_batch = 1
        self.n_steps, self.gamma = n_steps, gamma
        self.ent_coef, self.vf_coef, self.normalize_advantage = ent_coef, vf_coef, normalize_advantage

    def training_step(self, batch: Any, update: bool = True) -> dict[str, torch.Tensor]:
        rollout = collect(self.model, self.env, self.n_steps, self.gamma, self.device, self.precision)
        advantages, returns = gae(rollout, self.gamma, 1.0)  # G_t - V(s_t), and G_t
        obs, actions, advantages, returns = rollout.flat(rollout.obs, rollout.actions, advantages, returns)
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        with self.precision.autocast():
            dist = self.model.distribution(obs)
            values = self.model.value(obs).float()
        # The policy gradient: maximise E[log pi(a_t|s_t) (G_t - V(s_t))], the likelihood of each
        # action weighted by how much better than expected its return was. The baseline V is
        # fitted to G_t by least squares; the entropy bonus keeps some exploration.
        policy_loss = -(dist.log_prob(actions) * advantages).mean()
        value_loss = F.mse_loss(values, returns)
        entropy = dist.entropy().mean()
        self.optim.step(policy_loss + self.vf_coef * value_loss - self.ent_coef * entropy, update)
        return {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": entropy.detach()}
