"""The Environment: episode seeds, tickets and epochs, exact save and restore by replay, and the
deterministic evaluation episodes, checked against Gymnasium's own environments."""

from __future__ import annotations

import io
import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch

from helpers import assert_same
from nnlab.envs.environment import Environment, episode_seed
from nnlab.errors import ConfigValueError, OptionError, UserError


def lean(obs: np.ndarray) -> np.ndarray:
    """A fixed CartPole policy: push the way the pole leans (episodes of ~30-60 steps)."""
    return (obs[:, 2] > 0).astype(np.int64)


def random_actions(env: Environment, rng: np.random.Generator) -> np.ndarray:
    if env.continuous:
        return rng.uniform(-2.0, 2.0, size=(env.num_envs, env.num_actions)).astype(np.float32)
    return rng.integers(0, env.num_actions, size=env.num_envs)


def started(id: str = "CartPole-v1", **kwargs) -> Environment:
    env = Environment(id, **kwargs)
    env.setup(torch.device("cpu"))
    return env


def weights_only(state: dict) -> dict:
    """`state` through a file, as a checkpoint holds it (tensors and plain values only)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


# ---- episode seeds -------------------------------------------------------------------------------


def test_episode_seeds_are_a_pure_function_distinct_per_run_env_and_episode() -> None:
    grid = list(itertools.product(range(3), range(8), range(50)))  # (run seed, environment, episode)
    seeds = [episode_seed(*key) for key in grid]
    assert seeds == [episode_seed(*key) for key in grid]  # the same inputs, the same seed, every time
    assert len(set(seeds)) == len(grid)
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    # A negative or huge run seed is folded into SeedSequence's range rather than refused.
    assert episode_seed(-1, 0, 0) == episode_seed(2**32 - 1, 0, 0)


def test_every_episode_starts_from_its_own_seed() -> None:
    """Environment i's k-th episode is Gymnasium's reset(seed=episode_seed(seed, i, k)): its
    first observation is that reset's, before and after an episode ends."""
    env = started(num_envs=2, seed=5, max_episode_steps=4)
    reference = gym.make("CartPole-v1")
    for i in range(2):
        assert np.array_equal(env.obs[i], reference.reset(seed=episode_seed(5, i, 0))[0])
    for _ in range(4):  # the time limit ends every environment's first episode at step 4
        next_obs, _, terminated, truncated, final = env.step(np.zeros(2, dtype=np.int64))
    assert truncated.all() and not terminated.any()
    for i in range(2):
        assert np.array_equal(next_obs[i], reference.reset(seed=episode_seed(5, i, 1))[0])
        assert not np.array_equal(final[i], next_obs[i])  # the state the episode reached, not the new start
    assert env.recent_returns() == {"return_mean": 4.0, "return_min": 4.0, "return_max": 4.0, "episode_length": 4.0}
    env.close()


def test_the_final_observation_is_the_state_the_step_reached() -> None:
    """`final` is what a value function bootstraps from: the environment's own step result,
    where `next_obs` is already the next episode's first observation."""
    env = started(num_envs=1, seed=3, max_episode_steps=6)
    reference = gym.make("CartPole-v1", max_episode_steps=6)
    obs, _ = reference.reset(seed=episode_seed(3, 0, 0))
    actions = [1, 0, 1, 1, 0, 0]
    for a in actions:
        obs, reward, terminated, truncated, _ = reference.step(a)
        _, env_reward, env_terminated, env_truncated, final = env.step(np.array([a]))
        assert np.array_equal(final[0], obs) and env_reward[0] == reward
        assert (env_terminated[0], env_truncated[0]) == (terminated, truncated)
    assert truncated
    env.close()


# ---- tickets, epochs, evaluation seeds ------------------------------------------------------------


def test_an_epoch_is_whole_rollouts_and_its_tickets_count_env_steps() -> None:
    env = Environment("CartPole-v1", num_envs=3, epoch_steps=100, val_episodes=4, test_episodes=6)
    env.plan(16)  # a task's rollout: 16 steps of each environment, 48 environment steps a batch
    assert env.batch_env_steps == 48
    assert env.steps_per_epoch == 3  # 100 steps, rounded up to whole rollouts
    assert (env.size("train"), env.size("val"), env.size("test")) == (144, 4, 6)
    tickets = [t for (t,) in env.train_batches(1)]  # the second epoch's
    assert [(int(t[0]), int(t[-1]), len(t)) for t in tickets] == [(144, 191, 48), (192, 239, 48), (240, 287, 48)]
    env.plan(50)
    assert (env.steps_per_epoch, env.size("train")) == (1, 150)
    with pytest.raises(OptionError, match="rollout steps"):
        env.plan(0)


def test_evaluation_seeds_are_fixed_per_split_and_apart() -> None:
    env = Environment("CartPole-v1", val_episodes=5, test_episodes=7, seed=1)
    val = [int(b[0]) for (b,) in env.eval_batches("val")]
    test = [int(b[0]) for (b,) in env.eval_batches("test")]
    assert len(val) == len(set(val)) == 5 and len(test) == len(set(test)) == 7
    assert val == [int(b[0]) for (b,) in env.eval_batches("val")]  # every validation, the same starts
    assert not set(val) & set(test)
    assert val != [int(b[0]) for (b,) in Environment("CartPole-v1", val_episodes=5, seed=2).eval_batches("val")]


def test_run_episodes_is_deterministic_and_plays_gymnasiums_episodes() -> None:
    env = started(num_envs=2, seed=0)
    training_obs = env.obs.copy()
    seeds = [11, 12, 13, 14]
    returns, lengths = env.run_episodes(lean, seeds)
    again = env.run_episodes(lean, seeds)
    assert np.array_equal(returns, again[0]) and np.array_equal(lengths, again[1])
    for seed, ret, length in zip(seeds, returns, lengths):  # each one, played alone by Gymnasium
        reference = gym.make("CartPole-v1")
        obs, _ = reference.reset(seed=seed)
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = reference.step(int(lean(obs[None])[0]))
            total, steps, done = total + reward, steps + 1, terminated or truncated
        assert (ret, length) == (total, steps)
    assert len(set(returns.tolist())) > 1  # other seeds, other episodes
    assert np.array_equal(env.obs, training_obs) and env.total_steps == 0  # the training envs were not touched
    env.close()


# ---- exact save and restore ------------------------------------------------------------------------


# Discrete actions, episodes ended by the pole; continuous actions, episodes ended by the time limit.
@pytest.mark.parametrize(("id", "limit"), [("CartPole-v1", None), ("Pendulum-v1", 15)])
def test_a_restored_environment_is_bitwise_the_saved_one_and_steps_on_identically(id: str, limit: int | None) -> None:
    rng = np.random.default_rng(0)
    a = started(id, num_envs=3, seed=7, max_episode_steps=limit)
    for _ in range(40):
        a.step(random_actions(a, rng))
    while not all(a._actions):  # (until no environment has just started an episode)
        a.step(random_actions(a, rng))
    state = weights_only(a.state_dict())
    assert a.episodes_done >= 3  # episodes ended before the save ...
    assert all(actions is not None for actions in state["actions"])  # ... and each environment is mid-episode

    b = started(id, num_envs=3, seed=7, max_episode_steps=limit)
    b.load_state_dict(state)
    assert a.obs.tobytes() == b.obs.tobytes()
    assert a._returns.tobytes() == b._returns.tobytes() and np.array_equal(a._lengths, b._lengths)
    assert (b.total_steps, b.episodes_done, b.recent_returns()) == (a.total_steps, a.episodes_done, a.recent_returns())

    ended_after = 0
    for _ in range(40):  # the same actions give the same steps, across episode ends
        actions = random_actions(a, rng)
        for x, y in zip(a.step(actions), b.step(actions), strict=True):
            assert x.tobytes() == y.tobytes()
        ended_after = a.episodes_done - int(state["episodes_done"])
    assert ended_after >= 3  # episodes begun before the save ended after it
    assert a.recent_returns() == b.recent_returns()
    assert_same(a.state_dict(), b.state_dict())
    a.close()
    b.close()


def test_a_fresh_environment_saves_and_restores_too() -> None:
    """Saved before any step (a checkpoint at step 0): no actions to replay."""
    a = started(num_envs=2, seed=4)
    state = weights_only(a.state_dict())
    assert state["actions"] == [None, None]
    b = started(num_envs=2, seed=4)
    b.load_state_dict(state)
    assert a.obs.tobytes() == b.obs.tobytes() and b.total_steps == 0


def test_restoring_with_other_num_envs_or_async_vectorization_is_refused() -> None:
    a = started(num_envs=2)
    a.step(np.array([0, 1]))
    state = a.state_dict()
    with pytest.raises(UserError, match=r"2 environments and env.num_envs=3: resume with the run's own env.num_envs"):
        started(num_envs=3).load_state_dict(state)
    # (refused before its worker processes would be asked for anything: no setup needed)
    with pytest.raises(UserError, match=r"vectorization=async is not supported: resume it with env.vectorization=sync"):
        Environment("CartPole-v1", num_envs=2, vectorization="async").load_state_dict(state)


# ---- options --------------------------------------------------------------------------------------------


def test_an_unknown_environment_id_names_the_key_and_the_choices() -> None:
    with pytest.raises(OptionError) as caught:
        Environment("CartPol-v1")
    message = str(caught.value)
    assert message.startswith("env.id='CartPol-v1' is not an environment Gymnasium can make")
    assert "CartPole-v1" in message  # a registered id to choose instead ...
    # ... and the env group's choices
    assert all(name in message for name in ("cartpole", "acrobot", "pendulum", "mountain_car"))


def test_keyword_arguments_the_environment_does_not_take_name_env_kwargs() -> None:
    with pytest.raises(OptionError, match=r"env.kwargs=\{'gravity': 3.0\} do not fit CartPole-v1"):
        Environment("CartPole-v1", kwargs={"gravity": 3.0})
    assert Environment("Pendulum-v1", kwargs={"g": 3.0}).kwargs == {"g": 3.0}  # Pendulum's own option passes


@pytest.mark.parametrize(
    ("option", "value", "wanted"),
    [
        ("num_envs", 0, "env.num_envs=0"),
        ("epoch_steps", 0, "env.epoch_steps=0"),
        ("val_episodes", 0, "env.val_episodes=0"),
        ("max_episode_steps", 0, "env.max_episode_steps=0"),
        ("vectorization", "threads", "env.vectorization='threads' is not a valid choice"),
    ],
)
def test_bad_options_are_option_errors_naming_the_key(option: str, value: object, wanted: str) -> None:
    with pytest.raises(OptionError) as caught:
        Environment("CartPole-v1", **{option: value})
    assert str(caught.value).startswith(wanted)


def test_observations_that_are_not_vectors_are_refused() -> None:
    with pytest.raises(ConfigValueError, match=r"env.id=FrozenLake-v1: its observations are Discrete\(16\).*Box"):
        Environment("FrozenLake-v1")
