"""The commands on reinforcement-learning runs: nnlab-eval replays the run's own test episodes,
nnlab-predict gives the policy's actions for observations, and a Hydra sweep (basic and
Optuna's) over an RL hyperparameter runs its trials to the end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from helpers import compose_config, run_cli, run_command, train_tiny
from nnlab.commands.eval import evaluate
from nnlab.commands.predict import predict
from nnlab.errors import UserError
from nnlab.runs.restore import load_run

RL = ("model=policy", "model.hidden_sizes=[16]")
CARTPOLE = (
    "env=cartpole", "task=ppo", *RL, "env.num_envs=2", "task.n_steps=16", "task.batch_size=32", "task.n_epochs=2",
    "env.epoch_steps=64", "env.val_episodes=3", "env.test_episodes=3", "trainer.max_epochs=2",
    "trainer.limit_train_batches=null", "task.gif_frames=8",
)  # fmt: skip


@pytest.fixture(scope="module")
def cartpole_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.ckpt of a tiny CartPole PPO run, its metrics.json two folders up."""
    return train_tiny(CARTPOLE, tmp_path_factory.mktemp("cartpole")).dir / "checkpoints" / "best.ckpt"


def run_metrics(ckpt: Path) -> dict[str, float]:
    return json.loads((ckpt.parent.parent / "metrics.json").read_text())


def read_actions(path: Path) -> tuple[list[str], list[list[float]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, [[float(v) for v in row] for row in rows]


# ---- nnlab-eval -------------------------------------------------------------------------------------


def test_eval_replays_the_runs_test_episodes(cartpole_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = run_command("eval", [f"ckpt_path={cartpole_ckpt}", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    trained = run_metrics(cartpole_ckpt)
    for key in ("return_mean", "return_std", "return_min", "return_max", "episode_length", "solved"):
        assert metrics[f"test/{key}"] == trained[f"test/{key}"], key  # the same seeds, the same policy: exactly
    with Image.open(out / "figures" / "test_episode.gif") as gif:
        assert gif.n_frames > 1
    assert json.loads((out / "status.json").read_text())["status"] == "completed"


def test_eval_plays_as_many_episodes_as_asked_on_the_splits_seeds(cartpole_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose_config([f"ckpt_path={cartpole_ckpt}", "split=val", "episodes=2", "device=cpu"], tmp_path, "eval")
    metrics = evaluate(cfg)
    run = load_run(cartpole_ckpt, device="cpu")
    seeds = [int(b[0]) for (b,) in run.data.eval_batches("val")][:2]  # the first two validation seeds
    returns, _ = run.data.run_episodes(run.task.greedy, seeds)
    assert metrics["val/return_mean"] == float(returns.mean())
    assert metrics["val/return_min"] == float(returns.min())


REFUSED = [("split=train", ["split=train", "split=test"]), ("episodes=0", ["episodes=0"])]


@pytest.mark.parametrize(("override", "words"), REFUSED)
def test_eval_refuses_what_an_rl_run_cannot_score(override: str, words: list, cartpole_ckpt: Path, tmp_path) -> None:
    cfg = compose_config([f"ckpt_path={cartpole_ckpt}", override, "device=cpu"], tmp_path, "eval")
    with pytest.raises(UserError) as caught:
        evaluate(cfg)
    assert all(word in str(caught.value) for word in words), str(caught.value)


# ---- nnlab-predict -------------------------------------------------------------------------------------


def test_predict_writes_the_policys_action_for_each_observation(cartpole_ckpt: Path, tmp_path: Path) -> None:
    observations = np.random.default_rng(0).normal(scale=[1.0, 1.0, 0.1, 1.0], size=(7, 4))
    rows = tmp_path / "obs.csv"
    rows.write_text("x,v,theta,omega\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in observations) + "\n")
    cfg = compose_config([f"ckpt_path={cartpole_ckpt}", f"input={rows}", "device=cpu"], tmp_path / "out", "predict")
    summary = predict(cfg)

    header, table = read_actions(tmp_path / "out" / "actions.csv")
    assert header == ["row", "action", "output_0", "output_1"]
    assert [r[0] for r in table] == list(range(7))  # one row per observation, in order
    actions = [int(r[1]) for r in table]
    assert set(actions) <= {0, 1}
    assert actions == [int(np.argmax(r[2:])) for r in table]  # the deterministic action: the larger logit
    run = load_run(cartpole_ckpt, device="cpu")
    with torch.no_grad():
        logits = run.model(torch.tensor(np.round(observations, 6), dtype=torch.float32)).numpy()
    np.testing.assert_allclose([r[2:] for r in table], logits, rtol=1e-4, atol=1e-6)
    assert summary["rows"] == 7 and summary["action/0"] + summary["action/1"] == 7


def test_predict_without_input_names_what_to_give(cartpole_ckpt: Path, tmp_path: Path) -> None:
    cfg = compose_config([f"ckpt_path={cartpole_ckpt}", "device=cpu"], tmp_path, "predict")
    with pytest.raises(UserError, match=r"input is not set.*\(4 values per row\)"):
        predict(cfg)


def test_predict_on_a_continuous_policy_keeps_actions_within_the_bounds(tmp_path: Path) -> None:
    """Pendulum's torque is in [-2, 2]: the Gaussian's mean, clipped. The policy's output layer is
    scaled up in the checkpoint so that most means fall outside the bounds."""
    run = train_tiny(
        ["env=pendulum", "task=ppo", *RL, "env.num_envs=2", "task.n_steps=8", "task.batch_size=16", "task.n_epochs=1",
         "env.epoch_steps=16", "env.val_episodes=1", "env.test_episodes=1", "env.max_episode_steps=20",
         "task.gif_frames=0"],
        tmp_path / "run",
    )  # fmt: skip
    state = run.checkpoint("last")
    output_layer = max(k for k in state["model"] if k.startswith("policy.") and k.endswith(".weight"))
    state["model"][output_layer] = state["model"][output_layer] * 1e4
    ckpt = tmp_path / "scaled.ckpt"
    torch.save(state, ckpt)
    observations = np.random.default_rng(1).uniform(-1.0, 1.0, size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "obs.npy", observations)

    given = [f"ckpt_path={ckpt}", f"input={tmp_path / 'obs.npy'}", "device=cpu"]
    cfg = compose_config(given, tmp_path / "out", "predict")
    predict(cfg)
    header, table = read_actions(tmp_path / "out" / "actions.csv")
    assert header == ["row", "action", "output_0"] and len(table) == 50
    actions, means = np.array([r[1] for r in table]), np.array([r[2] for r in table])
    assert ((-2.0 <= actions) & (actions <= 2.0)).all()
    np.testing.assert_allclose(actions, np.clip(means, -2.0, 2.0), rtol=1e-5)
    assert (np.abs(means) > 2).sum() >= 10  # (the bounds were tested, not just met)


# ---- sweeps ----------------------------------------------------------------------------------------


SWEEP_TRIAL = (
    "env=cartpole", "task=ppo", *RL, "env.num_envs=2", "task.n_steps=16", "task.batch_size=32", "task.n_epochs=2",
    "env.epoch_steps=128", "env.val_episodes=2", "env.test_episodes=2", "trainer.max_epochs=1",
    "task.gif_frames=0", "callbacks.progress=null", "trainer.summary=false",
)  # fmt: skip


def test_a_multirun_over_an_rl_hyperparameter_runs_every_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *SWEEP_TRIAL, "task.clip_range=0.1,0.2", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    clip_ranges = []
    for trial, clip in (("0", 0.1), ("1", 0.2)):
        folder = sweep / trial
        assert f"task.clip_range={clip}" in yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {"val/return_mean", "test/return_mean", "train/env_steps"} <= set(metrics)
        assert metrics["train/env_steps"] == 4 * 32
        clip_ranges.append(metrics["train/clip_range"])
        assert json.loads((folder / "status.json").read_text())["status"] == "completed"
    # Each trial ran with its own value: the (annealed) clip range of trial 0 is half trial 1's.
    assert clip_ranges[0] == pytest.approx(clip_ranges[1] / 2, rel=1e-6)


def test_the_ppo_optuna_search_scores_trials_by_their_return(tmp_path: Path) -> None:
    optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
    sweep = tmp_path / "sweep"
    args = [
        "-m", "experiment=cartpole_ppo", "hparams_search=ppo_optuna", "hydra.sweeper.n_trials=2",
        f"hydra.sweep.dir={sweep}", "env.epoch_steps=256", "trainer.max_epochs=1", "env.val_episodes=2",
        "env.test_episodes=2", "task.gif_frames=0", "callbacks.progress=null", "trainer.summary=false",
    ]  # fmt: skip
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    trials = optuna.load_study(study_name="ppo_optuna", storage=f"sqlite:///{sweep}/optuna.db").get_trials()
    assert len(trials) == 2
    for trial in trials:
        metrics = json.loads((sweep / str(trial.number) / "metrics.json").read_text())
        assert trial.value == metrics["val/return_mean"]  # maximised: a return
        overrides = yaml.safe_load((sweep / str(trial.number) / ".hydra" / "overrides.yaml").read_text())
        assert f"task.clip_range={trial.params['task.clip_range']}" in overrides
