"""A Gymnasium environment as a run's data: what reinforcement-learning tasks act in.

The trainer treats an `Environment` like a data module. A training "batch" is a ticket for a
fixed number of environment steps (a rollout); the task collects them by acting in `step`, so
the trainer's loop, logging, checkpoints and callbacks run unchanged. An epoch is
`epoch_steps` environment steps, rounded up to whole rollouts. Validation and test are
deterministic episodes on environments of their own, each from a fixed seed, so every epoch's
validation plays the same starting states.

Exact resume. Every episode starts from `reset(seed=s)` with a seed drawn from (run seed,
environment index, episode number), never from a generator's running state, and classic-control
dynamics are deterministic given the actions. So an environment's state is (its episode's seed,
the actions taken since): `state_dict` holds those, and `load_state_dict` resets with the seed
and replays the actions, which restores the observation, the time limit's counter and the
episode's return bitwise, without pickling an environment.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from nnlab.errors import ConfigValueError, OptionError, UserError, check_choice, check_range

log = logging.getLogger(__name__)

# Completed training episodes the return statistics (mean, min, max) are taken over.
RECENT_EPISODES = 20


class Environment:
    """Vectorised Gymnasium environments, seeded per environment and per episode.

    Args:
        id: a registered Gymnasium id, e.g. CartPole-v1, Acrobot-v1, Pendulum-v1, MountainCar-v0.
        num_envs: environments stepped together (one batched forward of the policy per step).
        epoch_steps: environment steps (over all environments) per epoch; each epoch ends with a
            validation. Rounded up to whole rollouts of the task.
        val_episodes: deterministic episodes of each validation (the same seeds every epoch).
        test_episodes: deterministic episodes of the final test (other seeds than validation's).
        vectorization: "sync" steps the environments one after another in this process;
            "async" runs each in a process of its own (pays only for slow environments: for
            classic control the pipes cost more than the physics).
        max_episode_steps: time limit of an episode; null keeps the environment's own (500 for
            CartPole).
        solved_return: the return at which the environment counts as solved (null: the
            registry's reward threshold, 475 for CartPole); reported as val/solved.
        seed: the run's seed; episode seeds are drawn from it.
        kwargs: keyword arguments of `gymnasium.make`, e.g. {g: 9.81} for Pendulum.
    """

    kind = "reinforcement"
    class_names = None
    class_counts = None

    def __init__(
        self,
        id: str,
        num_envs: int = 8,
        epoch_steps: int = 10_000,
        val_episodes: int = 10,
        test_episodes: int = 20,
        vectorization: str = "sync",
        max_episode_steps: int | None = None,
        solved_return: float | None = None,
        seed: int = 0,
        kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_range("env.num_envs", num_envs, 1)
        check_range("env.epoch_steps", epoch_steps, 1)
        check_range("env.val_episodes", val_episodes, 1)
        check_range("env.test_episodes", test_episodes, 1)
        check_choice("env.vectorization", vectorization, ["sync", "async"])
        if max_episode_steps is not None:
            check_range("env.max_episode_steps", max_episode_steps, 1)
        gym = import_gymnasium()
        self.id = id
        self.num_envs = num_envs
        self.epoch_steps = epoch_steps
        self.episodes = {"val": val_episodes, "test": test_episodes}
        self.vectorization = vectorization
        self.max_episode_steps = max_episode_steps
        self.seed = seed
        self.kwargs = dict(kwargs or {})
        try:
            probe = gym.make(id, max_episode_steps=max_episode_steps, **self.kwargs)
        except gym.error.Error as e:
            classic = sorted(n for n, spec in gym.registry.items() if "classic_control" in str(spec.entry_point))
            raise OptionError(
                f"env.id={id!r} is not an environment Gymnasium can make here ({e}). The classic-control ones need "
                f"nothing else: {', '.join(classic)} (the env config group has cartpole, acrobot, pendulum and "
                "mountain_car); others may need their own package (pip install gymnasium[box2d], ...)."
            ) from None
        except TypeError as e:
            raise OptionError(f"env.kwargs={self.kwargs} do not fit {id}: {e}. Remove or rename them.") from None
        self.observation_space, self.action_space = probe.observation_space, probe.action_space
        self.time_limit = probe.spec.max_episode_steps
        threshold = solved_return if solved_return is not None else probe.spec.reward_threshold
        self.solved_return = None if threshold is None else float(threshold)
        probe.close()
        if not isinstance(self.observation_space, gym.spaces.Box):
            raise ConfigValueError(
                f"env.id={id}: its observations are {self.observation_space}, and the policies here read "
                "vectors (a Box space). Choose an environment with Box observations."
            )
        self.continuous = isinstance(self.action_space, gym.spaces.Box)
        if not self.continuous and not isinstance(self.action_space, gym.spaces.Discrete):
            raise ConfigValueError(
                f"env.id={id}: its actions are {self.action_space}; the tasks take Discrete or Box actions."
            )
        self.input_shape = tuple(self.observation_space.shape)
        self.num_actions = int(np.prod(self.action_space.shape)) if self.continuous else int(self.action_space.n)
        self.num_outputs = self.num_actions  # logits (discrete), Gaussian means or Q-values per action
        self.rollout_steps = 1  # vector steps per training batch: set by the task (`plan`)
        self.device = torch.device("cpu")
        self._vec: Any = None
        self._eval_envs: list[Any] = []
        self.obs: np.ndarray | None = None  # the environments' current observations (num_envs, *obs)

    # ---- the data-module interface the trainer reads ----------------------------------------
    def plan(self, rollout_steps: int) -> None:
        """Set the vector steps a training batch collects (the task's rollout length)."""
        check_range("rollout steps", rollout_steps, 1)
        self.rollout_steps = rollout_steps

    @property
    def batch_env_steps(self) -> int:
        """Environment steps in one training batch: rollout steps x environments."""
        return self.rollout_steps * self.num_envs

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.epoch_steps // self.batch_env_steps)

    def size(self, split: str) -> int:
        """Environment steps per epoch (train), or episodes (val, test)."""
        return self.steps_per_epoch * self.batch_env_steps if split == "train" else self.episodes[split]

    def shard(self, rank: int, world_size: int) -> None:  # (RL tasks refuse ddp before this is called)
        raise ConfigValueError("trainer.strategy=ddp: reinforcement learning runs in one process.")

    def setup(self, device: torch.device) -> None:
        """Make the environments and start every one on its first episode."""
        self.device = torch.device(device)
        if self._vec is not None:
            return
        gym = import_gymnasium()
        quiet_pygame()
        make = [self._maker() for _ in range(self.num_envs)]
        vector = gym.vector.SyncVectorEnv if self.vectorization == "sync" else gym.vector.AsyncVectorEnv
        self._vec = vector(make, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        self.episode_index = np.zeros(self.num_envs, dtype=np.int64)  # episodes started, per environment
        self.total_steps = 0  # environment steps taken (all environments)
        self.finished: deque[tuple[float, int]] = deque(maxlen=RECENT_EPISODES)  # (return, length)
        self.episodes_done = 0
        self._actions: list[list[Any]] = [[] for _ in range(self.num_envs)]  # each episode's, for replay
        self._returns = np.zeros(self.num_envs)  # each running episode's return and length so far
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._start(np.ones(self.num_envs, dtype=bool))

    @property
    def example_inputs(self) -> torch.Tensor:
        """Two (zero) observations, for the model summary's shapes."""
        return torch.zeros(2, *self.input_shape)

    def train_batches(self, epoch: int) -> Iterator[tuple[torch.Tensor]]:
        """Tickets for the epoch's rollouts: the numbers of the environment steps each will take
        (so the trainer counts environment steps per second). The task collects them."""
        n = self.batch_env_steps
        first = epoch * self.steps_per_epoch * n
        for i in range(self.steps_per_epoch):
            yield (torch.arange(first + i * n, first + (i + 1) * n),)

    def eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor]]:
        """One ticket per evaluation episode: its seed (fixed per split and episode)."""
        offset = {"val": 1, "test": 2}[split]
        for i in range(self.episodes[split]):
            yield (torch.tensor([episode_seed(self.seed, 10_000 * offset + i, 0)]),)

    # ---- acting ---------------------------------------------------------------------------------
    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every environment; start a new episode where one ended.

        Returns (next_obs, rewards, terminated, truncated, final_obs): next_obs is what the
        policy sees next (a new episode's first observation where one ended); final_obs is the
        observation each step reached (the last one of an ended episode), which a value
        function bootstraps from when the time limit truncated it."""
        obs, rewards, terminated, truncated, _ = self._vec.step(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        self.obs = obs
        self.total_steps += self.num_envs
        for i in range(self.num_envs):
            self._actions[i].append(actions[i])
        self._returns += rewards
        self._lengths += 1
        done = terminated | truncated
        final = obs
        if done.any():
            final = obs.copy()
            for i in np.flatnonzero(done):
                self.finished.append((float(self._returns[i]), int(self._lengths[i])))
                self.episodes_done += 1
            self._start(done)
        return self.obs, rewards, terminated, truncated, final

    def _start(self, mask: np.ndarray) -> None:
        """Reset the masked environments, each with its next episode's seed."""
        seeds = [
            episode_seed(self.seed, i, int(self.episode_index[i])) if mask[i] else None for i in range(self.num_envs)
        ]
        # (with a reset mask, the vector env returns every environment's observation: the reset
        # ones' first and the others' current)
        self.obs, _ = self._vec.reset(seed=seeds, options={"reset_mask": mask})
        for i in np.flatnonzero(mask):
            self._actions[i] = []
            self._returns[i] = 0.0
            self._lengths[i] = 0
            self.episode_index[i] += 1

    def recent_returns(self) -> dict[str, float]:
        """Return and length statistics of the last completed training episodes (empty before
        the first one ends)."""
        if not self.finished:
            return {}
        returns = np.array([r for r, _ in self.finished])
        lengths = np.array([n for _, n in self.finished])
        return {
            "return_mean": float(returns.mean()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length": float(lengths.mean()),
        }

    def run_episodes(self, act: Callable[[np.ndarray], np.ndarray], seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Play one episode from each seed, all at once (one batched `act` per step), on
        evaluation environments apart from the training ones; returns (returns, lengths)."""
        while len(self._eval_envs) < len(seeds):
            self._eval_envs.append(self._maker()())
        envs = self._eval_envs[: len(seeds)]
        obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])
        returns = np.zeros(len(seeds))
        lengths = np.zeros(len(seeds), dtype=np.int64)
        running = np.ones(len(seeds), dtype=bool)
        while running.any():
            index = np.flatnonzero(running)
            actions = act(obs[index])
            for k, i in enumerate(index):
                o, r, terminated, truncated, _ = envs[i].step(actions[k])
                obs[i] = o
                returns[i] += r
                lengths[i] += 1
                if terminated or truncated:
                    running[i] = False
        return returns, lengths

    def record_episode(self, act: Callable[[np.ndarray], np.ndarray], seed: int, max_frames: int = 100) -> np.ndarray:
        """Frames (T, H, W, 3) uint8 of one deterministic episode, rendered off-screen, at most
        `max_frames` of them (every k-th step of a longer episode). Empty when the environment
        cannot render without a display."""
        gym = import_gymnasium()
        quiet_pygame()
        try:
            env = gym.make(self.id, render_mode="rgb_array", max_episode_steps=self.max_episode_steps, **self.kwargs)
            obs, _ = env.reset(seed=int(seed))
            frames = [env.render()]
        except Exception as e:  # noqa: BLE001 - no renderer here (pygame missing, no display): no GIF
            log.warning("%s cannot render off-screen here (%s): no episode GIF.", self.id, e)
            return np.zeros((0, 1, 1, 3), dtype=np.uint8)
        done = False
        while not done:
            action = act(obs[None])[0]
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
            frames.append(env.render())
        env.close()
        every = max(1, -(-len(frames) // max_frames))
        return np.stack(frames[::every]).astype(np.uint8)

    # ---- exact resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Each environment's episode (number, actions so far) and the return statistics: tensors
        and plain values, for `torch.load(weights_only=True)`."""
        return {
            "episode_index": torch.from_numpy(self.episode_index.copy()),
            "actions": [torch.as_tensor(np.array(a)) if a else None for a in self._actions],
            "total_steps": self.total_steps,
            "episodes_done": self.episodes_done,
            "finished": [[r, n] for r, n in self.finished],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay each environment's episode from its seed: the state it was saved in, bitwise."""
        if self.vectorization == "async":  # (its environments live in other processes)
            raise UserError(
                "Resuming a run with env.vectorization=async is not supported: resume it with env.vectorization=sync "
                "(the same environments, stepped in this process)."
            )
        index = state["episode_index"].numpy().astype(np.int64)
        if index.shape != (self.num_envs,):
            raise UserError(
                f"The checkpoint was taken with {index.shape[0]} environments and env.num_envs={self.num_envs}: "
                "resume with the run's own env.num_envs."
            )
        self.episode_index = index - 1  # `_start` counts the episode it starts
        self._start(np.ones(self.num_envs, dtype=bool))
        for i, actions in enumerate(state["actions"]):
            if actions is None:
                continue
            env = self._vec.envs[i]
            for a in actions.numpy():
                obs, reward, *_ = env.step(a)
                self.obs[i] = obs
                self._returns[i] += reward
                self._lengths[i] += 1
                self._actions[i].append(a)
        self.total_steps = int(state["total_steps"])
        self.episodes_done = int(state["episodes_done"])
        self.finished = deque(((float(r), int(n)) for r, n in state["finished"]), maxlen=RECENT_EPISODES)

    def close(self) -> None:
        if self._vec is not None:
            self._vec.close()
            self._vec = None
        for env in self._eval_envs:
            env.close()
        self._eval_envs = []

    def _maker(self) -> Callable[[], Any]:
        gym = import_gymnasium()
        id, limit, kwargs = self.id, self.max_episode_steps, self.kwargs
        return lambda: gym.make(id, max_episode_steps=limit, **kwargs)


def episode_seed(seed: int, env_index: int, episode: int) -> int:
    """The reset seed of an environment's episode: a function of (run seed, environment,
    episode) alone, so any episode can be replayed on its own."""
    return int(np.random.SeedSequence([seed % 2**32, env_index, episode]).generate_state(1)[0])


def import_gymnasium() -> Any:
    try:
        import gymnasium
    except ImportError:
        raise UserError(
            "Reinforcement learning (env=..., task=reinforce|dqn|ppo) needs Gymnasium: "
            'pip install "nnlab[rl]" (Gymnasium with its classic-control environments).'
        ) from None
    return gymnasium


def quiet_pygame() -> None:
    """Classic control renders with pygame off-screen: no window, no audio device, no banner."""
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
