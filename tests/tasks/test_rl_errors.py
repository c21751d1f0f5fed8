"""Reinforcement-learning choices that do not fit together end in one clear paragraph (exit 2,
`Error: ...`, no traceback) naming the keys and the fix, before any training; and a stored run
whose environment id would make Gymnasium import a module is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from helpers import TINY, compose_config, run_command, train_tiny
from nnlab.checks.untrusted import UntrustedConfigError
from nnlab.commands.train import main
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.runs.restore import load_run

PPO = ("env=cartpole", "task=ppo", "model=policy")
DQN = ("env=cartpole", "task=dqn", "model=policy")

MISMATCHES = [
    # (overrides, words the one message must hold)
    (["task=ppo", "model=policy"], ["rl.ppo.PPO learns by acting in an environment", "env=cartpole", "cartpole_ppo"]),
    (["task=dqn"], ["nnlab.tasks.rl.dqn.DQN learns by acting in an environment", "env=cartpole"]),
    (["env=cartpole"], ["env=cartpole is an environment to act in", "task=supervised", "task=ppo", "drop env="]),
    (["env=cartpole", "task=reconstruction", "model=autoencoder"], ["env=cartpole", "task=reconstruction", "task=ppo"]),
    (["env=pendulum", "task=dqn", "model=policy"], ["task=dqn", "discrete actions", "Pendulum-v1", "task=ppo"]),
    # model=mlp has batch norm and dropout; REINFORCE's policy is checked too.
    (["env=cartpole", "task=ppo", "model=mlp"], ["task=ppo:", "has BatchNorm1d, Dropout", "model=policy"]),
    (["env=cartpole", "task=reinforce", "model=mlp", "model.batch_norm=false"], ["task=reinforce", "has Dropout"]),
    ([*PPO, "trainer.accumulate_grad_batches=2"], ["trainer.accumulate_grad_batches=2", "task=ppo", "task.batch_size"]),
    ([*DQN, "trainer.accumulate_grad_batches=2"], ["trainer.accumulate_grad_batches=2", "task=dqn", "task.batch_size"]),
    ([*PPO, "env.num_envs=0"], ["env.num_envs=0", ">= 1"]),
    ([*PPO, "env.id=CartPole-v0.5"], ["env.id='CartPole-v0.5'", "CartPole-v1"]),
    # The task's orthogonal init would overwrite the init group's silently.
    ([*PPO, "init=xavier_uniform"], ["init=xavier_uniform and task.ortho_init=true", "task.ortho_init=false"]),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "words"), MISMATCHES, ids=[" ".join(m[0]) for m in MISMATCHES])
def test_a_mismatch_is_one_clear_error_before_training(
    overrides: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = compose_config([*TINY, *overrides], tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(cfg)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err
    assert not (tmp_path / "checkpoints").exists()  # nothing trained


# ---- a stored environment id that would import a module -------------------------------------------


@pytest.fixture(scope="module")
def rl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    run = train_tiny(
        [*PPO, "task.n_steps=8", "env.num_envs=2", "env.val_episodes=1", "env.test_episodes=1", "task.gif_frames=0"],
        tmp_path_factory.mktemp("rl_run"),
    )  # fmt: skip
    return load_checkpoint(run.dir / "checkpoints" / "last.ckpt")


def with_env_id(state: dict, env_id: str, folder: Path) -> Path:
    """The checkpoint with its stored config's env.id replaced (only plain values: weights_only loads it)."""
    cfg = OmegaConf.create(state["config"])
    cfg.env.id = env_id
    path = folder / "doctored.ckpt"
    torch.save({**state, "config": OmegaConf.to_yaml(cfg)}, path)
    return path


def test_an_environment_id_naming_a_module_is_refused_by_the_gate(rl_checkpoint: dict, tmp_path: Path) -> None:
    with pytest.raises(UntrustedConfigError) as caught:
        load_run(with_env_id(rl_checkpoint, "os:Foo-v0", tmp_path), device="cpu")
    message = str(caught.value)
    assert "'os:Foo-v0'" in message and "env.id" in message and "imports the module" in message
    assert "trust_config=true" in message
    # The untouched checkpoint builds (the gate refuses the id, not RL checkpoints).
    assert load_run(with_env_id(rl_checkpoint, "CartPole-v1", tmp_path), device="cpu").data.id == "CartPole-v1"


def test_nnlab_eval_refuses_it_and_imports_nothing(rl_checkpoint: dict, tmp_path: Path) -> None:
    """A module in the command's working folder (on its path) that leaves a marker if imported:
    Gymnasium would import it to make `pwned_env:Evil-v0`, so the refusal must come first."""
    marker = tmp_path / "pwned"
    (tmp_path / "pwned_env.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    path = with_env_id(rl_checkpoint, "pwned_env:Evil-v0", tmp_path)
    result = run_command("eval", [f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'out'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: Refused to build") and "pwned_env:Evil-v0" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not marker.exists()
