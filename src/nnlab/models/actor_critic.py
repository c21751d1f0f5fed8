"""A policy and, optionally, a value function: two networks of the model zoo, acting together.

The policy maps an observation to the parameters of an action distribution: logits of a
categorical one (discrete actions), or the means of a diagonal Gaussian whose log standard
deviations are free parameters, independent of the observation (continuous actions). The
critic maps an observation to one number, the state's value V(s).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, Normal


class ActorCritic(nn.Module):
    """`policy(obs)` -> logits or Gaussian means; `critic(obs)` -> V(s).

    `forward` is the policy alone, so exporting or predicting with the model acts.

    Args:
        policy: a network (B, *obs) -> (B, num_actions), e.g. `nnlab.models.mlp.MLP`.
        critic: a network (B, *obs) -> (B, 1), or None (DQN needs none; REINFORCE and PPO
            learn one as their baseline).
        continuous: Gaussian actions (True) or categorical ones.
        num_actions: actions (discrete) or action dimensions (continuous).
        log_std_init: the Gaussian's starting log standard deviation (0: std 1).
        ortho_init: re-draw every Linear layer orthogonally (Saxe et al. 2014) with gain sqrt 2,
            except the policy's output layer (gain 0.01: the first policy is near uniform, or
            near the Gaussian's centre, so early exploration is broad) and the critic's (gain
            1). The PPO implementations' start (Engstrom et al. 2020 measure it matters).
    """

    def __init__(
        self,
        policy: nn.Module,
        critic: nn.Module | None = None,
        continuous: bool = False,
        num_actions: int = 2,
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic
        self.continuous = continuous
        self.log_std = nn.Parameter(torch.full((num_actions,), float(log_std_init))) if continuous else None
        if ortho_init:
            orthogonal_init(policy, output_gain=0.01)
            if critic is not None:
                orthogonal_init(critic, output_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy(obs)  # (B, *obs) -> (B, num_actions): logits, or Gaussian means

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)  # (B, *obs) -> (B,)

    def distribution(self, obs: torch.Tensor) -> Distribution:
        """The policy's action distribution at each observation: Categorical over logits, or a
        diagonal Gaussian (log-probabilities summed over the action's dimensions)."""
        out = self.policy(obs)
        # (validate_args=False: the arguments are the network's own outputs; checking them costs
        # a few kernels per call, and a rollout makes one call per environment step)
        if not self.continuous:
            return Categorical(logits=out, validate_args=False)
        normal = Normal(out, self.log_std.exp().expand_as(out), validate_args=False)
        return Independent(normal, 1, validate_args=False)

    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The policy's most likely action: the argmax of the logits, or the Gaussian's mean."""
        out = self.policy(obs)
        return out if self.continuous else out.argmax(-1)


def orthogonal_init(network: nn.Module, output_gain: float) -> None:
    """Orthogonal weights and zero biases for every Linear layer of `network`: gain sqrt 2 for
    the hidden ones, `output_gain` for the last one (in module order: the output layer of an
    MLP)."""
    linears = [m for m in network.modules() if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, gain=output_gain if i == len(linears) - 1 else math.sqrt(2))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
