"""A replay buffer: the last `capacity` transitions, sampled uniformly (DQN)."""

from __future__ import annotations

from typing import Any

import torch


class ReplayBuffer:
    """A ring of transitions (s, a, r, s', terminated), kept as preallocated tensors.

    `terminated` is 1 only where the environment ended the episode; a time-limit truncation
    stores 0 with the state it reached as s', so the target still bootstraps from it.
    """

    def __init__(
        self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...], action_dtype: torch.dtype
    ) -> None:
        self.capacity = capacity
        self.obs = torch.zeros(capacity, *obs_shape)
        self.next_obs = torch.zeros(capacity, *obs_shape)
        self.actions = torch.zeros(capacity, *action_shape, dtype=action_dtype)
        self.rewards = torch.zeros(capacity)
        self.terminated = torch.zeros(capacity)
        self.position = 0  # where the next transition goes
        self.size = 0

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Append a batch of transitions (one per environment), overwriting the oldest."""
        n = obs.shape[0]
        if n > self.capacity:  # only the newest fit: writing to a repeated index is undefined in torch
            skip = n - self.capacity
            obs, actions, rewards, next_obs, terminated = (
                t[skip:] for t in (obs, actions, rewards, next_obs, terminated)
            )
            self.position = (self.position + skip) % self.capacity
            n = self.capacity
        index = (self.position + torch.arange(n)) % self.capacity
        self.obs[index] = obs
        self.actions[index] = actions
        self.rewards[index] = rewards
        self.next_obs[index] = next_obs
        self.terminated[index] = terminated
        self.position = int((self.position + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """`batch_size` transitions drawn uniformly with replacement (torch's generator)."""
        index = torch.randint(0, self.size, (batch_size,))
        return tuple(
            t[index].to(device) for t in (self.obs, self.actions, self.rewards, self.next_obs, self.terminated)
        )

    def state_dict(self) -> dict[str, Any]:
        n = self.size
        return {
            "obs": self.obs[:n].clone(),
            "next_obs": self.next_obs[:n].clone(),
            "actions": self.actions[:n].clone(),
            "rewards": self.rewards[:n].clone(),
            "terminated": self.terminated[:n].clone(),
            "position": self.position,
            "size": n,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.position, self.size = int(state["position"]), n
