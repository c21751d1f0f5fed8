"""DQN's replay buffer: a ring that overwrites its oldest transitions, samples only what it holds,
and saves and restores exactly."""

from __future__ import annotations

import io

import torch

from nnlab.tasks.rl.replay import ReplayBuffer


def transitions(first: int, n: int) -> tuple[torch.Tensor, ...]:
    """n transitions numbered first, first+1, ...: every field carries the number."""
    k = torch.arange(first, first + n)
    obs = k[:, None].float().expand(n, 3).clone()
    return obs, k, k.float() / 10, obs + 0.5, (k % 2).float()


def numbers(buffer: ReplayBuffer) -> list[int]:
    return buffer.actions[: buffer.size].tolist()


def test_the_ring_keeps_the_last_capacity_transitions_in_their_slots() -> None:
    buffer = ReplayBuffer(5, (3,), (), torch.int64)
    buffer.add(*transitions(0, 2))
    assert (buffer.size, buffer.position, numbers(buffer)) == (2, 2, [0, 1])
    buffer.add(*transitions(2, 2))
    buffer.add(*transitions(4, 2))  # the sixth transition overwrites the first
    assert (buffer.size, buffer.position, numbers(buffer)) == (5, 1, [5, 1, 2, 3, 4])
    buffer.add(*transitions(6, 2))
    assert (buffer.size, buffer.position, numbers(buffer)) == (5, 3, [5, 6, 7, 3, 4])
    # Every field of a slot is the same transition's.
    k = torch.tensor([5, 6, 7, 3, 4])
    assert torch.equal(buffer.obs, k[:, None].float().expand(5, 3))
    assert torch.equal(buffer.next_obs, buffer.obs + 0.5)
    assert torch.equal(buffer.rewards, k.float() / 10) and torch.equal(buffer.terminated, (k % 2).float())


def test_a_batch_larger_than_the_room_left_wraps_around() -> None:
    buffer = ReplayBuffer(4, (3,), (), torch.int64)
    buffer.add(*transitions(0, 3))
    buffer.add(*transitions(3, 3))
    assert (buffer.size, buffer.position, numbers(buffer)) == (4, 2, [4, 5, 2, 3])


def test_samples_come_from_the_filled_slots_only() -> None:
    buffer = ReplayBuffer(100, (3,), (), torch.int64)
    buffer.add(*transitions(7, 3))
    torch.manual_seed(0)
    obs, actions, rewards, next_obs, terminated = buffer.sample(500, torch.device("cpu"))
    assert set(actions.tolist()) == {7, 8, 9}  # never an empty (zero) slot
    assert torch.equal(obs[:, 0], actions.float()) and torch.equal(rewards, actions.float() / 10)
    assert torch.equal(next_obs, obs + 0.5) and torch.equal(terminated, (actions % 2).float())


def test_a_restored_buffer_holds_and_samples_the_same_transitions() -> None:
    a = ReplayBuffer(5, (3,), (), torch.int64)
    for first in range(0, 14, 2):  # wrapped around more than once
        a.add(*transitions(first, 2))
    file = io.BytesIO()
    torch.save(a.state_dict(), file)
    file.seek(0)
    b = ReplayBuffer(5, (3,), (), torch.int64)
    b.load_state_dict(torch.load(file, weights_only=True))
    assert (b.size, b.position) == (a.size, a.position) == (5, 4)
    assert numbers(b) == [10, 11, 12, 13, 9]
    for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    a.add(*transitions(14, 3))  # and they go on alike
    b.add(*transitions(14, 3))
    assert numbers(a) == numbers(b) == [15, 16, 12, 13, 14]
    torch.manual_seed(1)
    drawn_a = a.sample(64, torch.device("cpu"))
    torch.manual_seed(1)
    drawn_b = b.sample(64, torch.device("cpu"))
    assert all(torch.equal(x, y) for x, y in zip(drawn_a, drawn_b))


def test_a_partly_filled_buffer_saves_only_what_it_holds() -> None:
    buffer = ReplayBuffer(1000, (3,), (), torch.int64)
    buffer.add(*transitions(0, 3))
    state = buffer.state_dict()
    assert state["obs"].shape == (3, 3) and state["actions"].tolist() == [0, 1, 2]
    restored = ReplayBuffer(1000, (3,), (), torch.int64)
    restored.load_state_dict(state)
    assert (restored.size, restored.position, numbers(restored)) == (3, 3, [0, 1, 2])


def test_a_batch_larger_than_the_whole_buffer_leaves_its_last_transitions() -> None:
    """More environments than buffer slots (task.buffer_size < env.num_envs): the newest
    `capacity` transitions stay, in their ring slots."""
    buffer = ReplayBuffer(3, (3,), (), torch.int64)
    buffer.add(*transitions(0, 5))  # slots 0, 1, 2, 0, 1
    assert (buffer.size, buffer.position, numbers(buffer)) == (3, 2, [3, 4, 2])
    assert torch.equal(buffer.obs[:, 0], torch.tensor([3.0, 4.0, 2.0]))
