"""On-policy rollouts and the returns computed from them (REINFORCE and PPO)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from nnlab.engine.precision import Precision
from nnlab.envs.environment import Environment
from nnlab.errors import ConfigValueError
from nnlab.models.actor_critic import ActorCritic


@dataclass
class Rollout:
    """T steps of N environments, each (T, N, ...): what the policy saw, did and got.

    `rewards` already include gamma V(s_T) where the time limit truncated an episode at the
    state s_T (the episode did not end there; cutting it short is not the environment's
    doing), and `dones` mark the steps after which a new episode starts."""

    obs: torch.Tensor  # (T, N, *obs)
    actions: torch.Tensor  # (T, N) indices or (T, N, A) vectors
    log_probs: torch.Tensor  # (T, N) log pi(a|s) when acting
    values: torch.Tensor  # (T, N) V(s) when acting
    rewards: torch.Tensor  # (T, N)
    dones: torch.Tensor  # (T, N) 1.0 where the episode ended with this step
    last_value: torch.Tensor  # (N,) V of the observation after the last step

    def flat(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """(T, N, ...) -> (T * N, ...) for each tensor."""
        return [t.reshape(-1, *t.shape[2:]) for t in tensors]


@torch.no_grad()
def collect(
    model: ActorCritic, env: Environment, steps: int, gamma: float, device: torch.device, precision: Precision
) -> Rollout:
    """Act with the stochastic policy for `steps` steps of every environment (the forward passes
    under the run's autocast, as the updates' are)."""
    obs, actions, log_probs, values, rewards, dones = [], [], [], [], [], []
    for _ in range(steps):
        o = torch.as_tensor(env.obs, dtype=torch.float32, device=device)
        with precision.autocast():
            dist = model.distribution(o)
            v = model.value(o).float()
        a = dist.sample()
        _, r, terminated, truncated, final = env.step(to_env_actions(a, env))
        r = torch.as_tensor(r, dtype=torch.float32, device=device)
        cut = truncated & ~terminated
        if cut.any():  # bootstrap a truncated episode from the value of the state it reached
            index = torch.as_tensor(np.flatnonzero(cut), device=device)
            final_obs = torch.as_tensor(final[cut], dtype=torch.float32, device=device)
            with precision.autocast():
                r[index] += gamma * model.value(final_obs).float()
        obs.append(o)
        actions.append(a)
        log_probs.append(dist.log_prob(a))
        values.append(v)
        rewards.append(r)
        dones.append(torch.as_tensor(terminated | truncated, dtype=torch.float32, device=device))
    with precision.autocast():
        last_value = model.value(torch.as_tensor(env.obs, dtype=torch.float32, device=device)).float()
    stack = torch.stack
    return Rollout(
        stack(obs), stack(actions), stack(log_probs), stack(values), stack(rewards), stack(dones), last_value
    )


def to_env_actions(actions: torch.Tensor, env: Environment) -> np.ndarray:
    """Sampled actions as the environment takes them: int64 indices, or float32 vectors clipped
    to the action space's bounds (the Gaussian is unbounded; its samples are kept as drawn for
    the log-probabilities)."""
    a = actions.cpu().numpy()
    if not env.continuous:
        return a.astype(np.int64)
    return np.clip(a, env.action_space.low, env.action_space.high).astype(np.float32)


def gae(rollout: Rollout, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016): advantages and value targets.

        delta_t = r_t + gamma V(s_t+1) (1 - done_t) - V(s_t)
        A_t     = delta_t + gamma lam (1 - done_t) A_t+1

    lam = 1 gives the Monte Carlo return minus V (REINFORCE with a baseline, bootstrapped only
    where the rollout or the time limit cut an episode); lam = 0 the one-step TD error. The
    value targets are A_t + V(s_t)."""
    T = rollout.rewards.shape[0]
    advantages = torch.zeros_like(rollout.rewards)
    next_adv = torch.zeros_like(rollout.last_value)
    next_value = rollout.last_value
    for t in reversed(range(T)):
        keep = 1.0 - rollout.dones[t]
        delta = rollout.rewards[t] + gamma * next_value * keep - rollout.values[t]
        next_adv = delta + gamma * lam * keep * next_adv
        advantages[t] = next_adv
        next_value = rollout.values[t]
    return advantages, advantages + rollout.values


def check_policy_network(model: nn.Module, task: str) -> None:
    """A policy acts on a batch of a few environments and is scored on log-probabilities of
    the actions it took: batch statistics and dropout would change both between acting and
    learning. Refuse them, naming the fix."""
    found = [type(m).__name__ for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))]
    if found:
        raise ConfigValueError(
            f"task={task}: the policy network has {', '.join(sorted(set(found)))}, which would make the policy "
            "that acted differ from the one that learns (batch statistics of a few environments, random units "
            "dropped). Use model=policy (an MLP without them), or set model.batch_norm=false model.dropout=0."
        )
