"""ActorCritic: the orthogonal start of PPO's networks, and the action distributions the policy's
outputs define (categorical logits, or a diagonal Gaussian with a free log std)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.distributions import Normal

from nnlab.models.actor_critic import ActorCritic
from nnlab.models.mlp import MLP


def linears(network: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in network.modules() if isinstance(m, torch.nn.Linear)]


def mlp(outputs: int, inputs: int = 4) -> MLP:
    return MLP(input_shape=(inputs,), num_outputs=outputs, hidden_sizes=[64, 64], activation="tanh")


def assert_orthogonal(weight: torch.Tensor, gain: float) -> None:
    """Orthonormal rows (a wide matrix) or columns (a tall one), scaled by `gain`."""
    w = weight.detach().double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    torch.testing.assert_close(gram, gain**2 * torch.eye(len(gram), dtype=torch.float64), rtol=0, atol=1e-5)


def test_orthogonal_init_gains_and_zero_biases() -> None:
    torch.manual_seed(0)
    agent = ActorCritic(mlp(2), mlp(1), continuous=False, num_actions=2)
    *hidden, out = linears(agent.policy)
    for layer in hidden:
        assert_orthogonal(layer.weight, math.sqrt(2))
    assert_orthogonal(out.weight, 0.01)  # a near-uniform first policy
    *critic_hidden, critic_out = linears(agent.critic)
    for layer in critic_hidden:
        assert_orthogonal(layer.weight, math.sqrt(2))
    assert_orthogonal(critic_out.weight, 1.0)
    assert all((layer.bias == 0).all() for layer in linears(agent))
    probs = agent.distribution(torch.randn(32, 4)).probs
    assert ((probs - 0.5).abs() < 0.05).all()  # so every action is tried at first


def test_without_ortho_init_the_networks_are_left_as_given() -> None:
    policy, critic = mlp(2), mlp(1)
    before = copy.deepcopy((policy.state_dict(), critic.state_dict()))
    agent = ActorCritic(policy, critic, continuous=False, num_actions=2, ortho_init=False)
    for given, kept in zip(before, (agent.policy.state_dict(), agent.critic.state_dict())):
        assert all(torch.equal(given[k], kept[k]) for k in given)


def test_a_discrete_policy_is_categorical_over_its_logits() -> None:
    agent = ActorCritic(mlp(3), mlp(1), continuous=False, num_actions=3)
    obs = torch.randn(5, 4)
    logits = agent(obs)
    assert logits.shape == (5, 3) and agent.value(obs).shape == (5,)
    dist = agent.distribution(obs)
    actions = torch.tensor([0, 1, 2, 1, 0])
    torch.testing.assert_close(dist.log_prob(actions), torch.log_softmax(logits, -1)[torch.arange(5), actions])
    assert torch.equal(agent.act_deterministic(obs), logits.argmax(-1))
    assert agent.log_std is None


@pytest.mark.parametrize("log_std_init", [0.0, -0.5])
def test_a_continuous_policy_is_a_diagonal_gaussian_with_a_free_log_std(log_std_init: float) -> None:
    agent = ActorCritic(mlp(2, inputs=3), mlp(1, inputs=3), continuous=True, num_actions=2, log_std_init=log_std_init)
    assert torch.equal(agent.log_std.detach(), torch.full((2,), log_std_init))
    assert agent.log_std in set(agent.parameters())  # learned with the networks
    obs = torch.randn(6, 3)
    means = agent(obs)
    dist = agent.distribution(obs)
    actions = torch.randn(6, 2)
    std = math.exp(log_std_init)
    # The log-probability of an action vector is the sum over its dimensions (independent).
    torch.testing.assert_close(dist.log_prob(actions), Normal(means, std).log_prob(actions).sum(-1))
    torch.testing.assert_close(dist.entropy(), Normal(means, std).entropy().sum(-1))
    assert torch.equal(agent.act_deterministic(obs), means)
