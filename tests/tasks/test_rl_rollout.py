"""On-policy rollouts: generalized advantage estimation against its definitions, and what
`collect` records, with the time limit's bootstrap, checked step by step against the
environment's own results."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from nnlab.engine.precision import Precision
from nnlab.envs.environment import Environment, episode_seed
from nnlab.errors import ConfigValueError
from nnlab.models.actor_critic import ActorCritic
from nnlab.models.mlp import MLP
from nnlab.tasks.rl.rollout import Rollout, check_policy_network, collect, gae, to_env_actions

GAMMA = 0.9

# A rollout of T = 5 steps of N = 2 environments: the first ends an episode after steps 1 and 3,
# the second after its last step (so the value after the rollout must not be used for it).
REWARDS = [[1.0, 0.5], [2.0, -1.0], [0.0, 3.0], [1.5, 0.25], [-0.5, 2.0]]
VALUES = [[0.3, 1.0], [0.7, -0.2], [1.1, 0.4], [-0.6, 0.9], [0.2, 1.3]]
DONES = [[0, 0], [1, 0], [0, 0], [1, 0], [0, 1]]
LAST_VALUE = [0.8, -5.0]


def rollout() -> Rollout:
    t = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731
    zeros = torch.zeros(5, 2, dtype=torch.float64)
    return Rollout(zeros[..., None], zeros, zeros, t(VALUES), t(REWARDS), t(DONES), t(LAST_VALUE))


def discounted_returns() -> list[list[float]]:
    """G_t = r_t + gamma r_t+1 + ... to the end of the episode, or to the rollout's end plus
    gamma^k V(s_T): summed term by term, without any recursion."""
    T, N = len(REWARDS), len(REWARDS[0])
    returns = [[0.0] * N for _ in range(T)]
    for i in range(N):
        for t in range(T):
            total, k = 0.0, 0
            while True:
                total += GAMMA**k * REWARDS[t + k][i]
                if DONES[t + k][i]:
                    break
                if t + k == T - 1:
                    total += GAMMA ** (k + 1) * LAST_VALUE[i]
                    break
                k += 1
            returns[t][i] = total
    return returns


def td_errors() -> list[list[float]]:
    """delta_t = r_t + gamma V(s_t+1) - V(s_t), with no V(s_t+1) after an episode's last step."""
    T, N = len(REWARDS), len(REWARDS[0])
    following = VALUES[1:] + [LAST_VALUE]
    return [
        [REWARDS[t][i] + GAMMA * following[t][i] * (1 - DONES[t][i]) - VALUES[t][i] for i in range(N)] for t in range(T)
    ]


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value() -> None:
    advantages, returns = gae(rollout(), GAMMA, 1.0)
    want = torch.tensor(discounted_returns(), dtype=torch.float64)
    torch.testing.assert_close(returns, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(advantages, want - torch.tensor(VALUES, dtype=torch.float64), rtol=0, atol=1e-12)
    # e.g. the first environment's first step: its episode is steps 0 and 1.
    assert returns[0, 0].item() == pytest.approx(1.0 + GAMMA * 2.0, abs=1e-12)


def test_gae_with_lambda_zero_is_the_td_error() -> None:
    advantages, returns = gae(rollout(), GAMMA, 0.0)
    want = torch.tensor(td_errors(), dtype=torch.float64)
    torch.testing.assert_close(advantages, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(returns, want + torch.tensor(VALUES, dtype=torch.float64), rtol=0, atol=1e-12)


def test_gae_is_the_exponentially_weighted_sum_of_td_errors_within_each_episode() -> None:
    """A_t = sum_k (gamma lambda)^k delta_t+k, the sum stopping at the episode's last step."""
    lam = 0.7
    deltas = td_errors()
    want = torch.zeros(5, 2, dtype=torch.float64)
    for i in range(2):
        for t in range(5):
            for k in range(5 - t):
                want[t, i] += (GAMMA * lam) ** k * deltas[t + k][i]
                if DONES[t + k][i]:
                    break
    advantages, _ = gae(rollout(), GAMMA, lam)
    torch.testing.assert_close(advantages, want, rtol=0, atol=1e-12)


# ---- collect ---------------------------------------------------------------------------------------


class Fixed(nn.Module):
    """A policy (logits of CartPole's two actions) that is a fixed function of the observation."""

    def __init__(self, logits) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.logits(obs)


def push_right(obs: torch.Tensor) -> torch.Tensor:  # always action 1: the pole falls within ~10 steps
    return torch.tensor([-50.0, 50.0]).expand(len(obs), 2)


def lean(obs: torch.Tensor) -> torch.Tensor:  # push the way the pole leans: episodes of 30-60 steps
    side = torch.where(obs[:, 2] > 0, 50.0, -50.0)
    return torch.stack([-side, side], 1)


def agent(logits) -> ActorCritic:
    """A fixed policy and the critic V(s) = w.s + 10 (never near 0, so a bootstrap shows)."""
    critic = nn.Linear(4, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5]]))
        critic.bias.fill_(10.0)
    return ActorCritic(Fixed(logits), critic, continuous=False, num_actions=2, ortho_init=False)


def recorded_collect(model: ActorCritic, env: Environment, steps: int) -> tuple[Rollout, list[tuple]]:
    """`collect`, and what each `env.step` it made returned."""
    record, step = [], env.step

    def recording(actions):
        out = step(actions)
        record.append(out)
        return out

    env.step = recording
    cpu = torch.device("cpu")
    return collect(model, env, steps, GAMMA, cpu, Precision("32", cpu)), record


def assert_rollout_matches_the_steps(model: ActorCritic, rollout: Rollout, record: list, env: Environment) -> None:
    """Each reward is the environment's, plus gamma V(final observation) exactly where the time
    limit cut an episode the environment did not end; `dones` mark every episode's end."""
    for t, (next_obs, reward, terminated, truncated, final) in enumerate(record):
        cut = torch.as_tensor(truncated & ~terminated)
        with torch.no_grad():
            bootstrap = GAMMA * model.value(torch.as_tensor(final, dtype=torch.float32))
        want = torch.as_tensor(reward, dtype=torch.float32) + torch.where(cut, bootstrap, torch.zeros(()))
        torch.testing.assert_close(rollout.rewards[t], want, rtol=0, atol=1e-6)
        assert torch.equal(rollout.dones[t], torch.as_tensor(terminated | truncated, dtype=torch.float32))
        if t + 1 < len(record):  # what the policy saw next is the step's next observation
            assert torch.equal(rollout.obs[t + 1], torch.as_tensor(next_obs, dtype=torch.float32))
    with torch.no_grad():
        assert torch.equal(rollout.last_value, model.value(torch.as_tensor(env.obs, dtype=torch.float32)))


def test_collect_bootstraps_episodes_the_time_limit_cut() -> None:
    env = Environment("CartPole-v1", num_envs=2, seed=0, max_episode_steps=12)
    env.setup(torch.device("cpu"))
    model = agent(lean)
    rollout, record = recorded_collect(model, env, 30)
    assert rollout.rewards.shape == rollout.dones.shape == rollout.log_probs.shape == (30, 2)
    assert rollout.obs.shape == (30, 2, 4) and rollout.actions.shape == (30, 2)
    cut = np.array([r[3] & ~r[2] for r in record])
    assert cut.sum() >= 4  # each environment's 12-step episodes were cut, at steps 12 and 24
    assert (rollout.rewards[torch.as_tensor(cut)] > 5).all()  # 1 + 0.9 V(s), V near 10
    assert_rollout_matches_the_steps(model, rollout, record, env)


def test_collect_does_not_bootstrap_episodes_the_environment_ended() -> None:
    env = Environment("CartPole-v1", num_envs=2, seed=0)
    env.setup(torch.device("cpu"))
    model = agent(push_right)
    rollout, record = recorded_collect(model, env, 30)
    ended = np.array([r[2] for r in record])
    assert ended.sum() >= 4 and not np.array([r[3] for r in record]).any()
    assert torch.equal(rollout.rewards, torch.ones(30, 2))  # CartPole's +1 a step, nothing added
    assert_rollout_matches_the_steps(model, rollout, record, env)


def test_an_episode_ended_by_the_environment_at_the_time_limit_is_not_bootstrapped() -> None:
    """Terminated and truncated on the same step: the episode really ended, so no V is added."""
    reference = gym.make("CartPole-v1")
    reference.reset(seed=episode_seed(0, 0, 0))
    k, terminated = 0, False
    while not terminated:
        terminated = reference.step(1)[2]
        k += 1
    env = Environment("CartPole-v1", num_envs=1, seed=0, max_episode_steps=k)  # the limit at the fall's step
    env.setup(torch.device("cpu"))
    model = agent(push_right)
    rollout, record = recorded_collect(model, env, k)
    assert record[-1][2][0] and record[-1][3][0]  # both at once
    assert torch.equal(rollout.rewards, torch.ones(k, 1))
    assert rollout.dones[:, 0].tolist() == [0.0] * (k - 1) + [1.0]


def test_actions_reach_the_environment_as_it_takes_them() -> None:
    pendulum = Environment("Pendulum-v1")
    actions = to_env_actions(torch.tensor([[-5.0], [0.5], [3.0]], dtype=torch.float64), pendulum)
    assert actions.dtype == np.float32 and actions.tolist() == [[-2.0], [0.5], [2.0]]  # clipped to [-2, 2]
    cartpole = Environment("CartPole-v1")
    assert to_env_actions(torch.tensor([1, 0, 1]), cartpole).dtype == np.int64


@pytest.mark.parametrize(("option", "layer"), [({"batch_norm": True}, "BatchNorm1d"), ({"dropout": 0.2}, "Dropout")])
def test_a_policy_network_with_batch_statistics_or_dropout_is_refused(option: dict, layer: str) -> None:
    network = MLP(input_shape=(4,), num_outputs=2, hidden_sizes=[8], **option)
    with pytest.raises(ConfigValueError) as caught:
        check_policy_network(network, "ppo")
    message = str(caught.value)
    assert message.startswith(f"task=ppo: the policy network has {layer}")
    assert "model=policy" in message
    check_policy_network(MLP(input_shape=(4,), num_outputs=2, hidden_sizes=[8]), "ppo")  # the plain MLP is fine
