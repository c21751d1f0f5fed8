"""One-epoch CPU runs through `train(cfg)`: every dataset, optimizer, scheduler and experiment.

Most runs are tiny (two batches), so they check wiring and numbers, not learning; the learning
checks are at the end: each experiment run as configured (seconds each on a CPU).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from datafiles import offline_data
from helpers import TINY, assert_finite_metrics, one_in, options
from nnlab.checks.untrusted import read_tokenizer
from nnlab.runs.pipeline import train

DATA = options("data")
# Text: token ids, which an MLP cannot read (test_text_models_on_every_text_dataset).
TEXT_DATA = {"python_docs", "text", "text_csv", "word_language"}


def test_the_catalogue_has_the_documented_choices() -> None:
    assert {"digits", "iris", "wine", "breast_cancer", "diabetes", "moons", "circles", "spirals"} <= set(DATA)
    assert {"sgd", "adam", "adamw", "rmsprop", "adagrad"} <= set(options("optimizer"))
    assert {"none", "step", "cosine", "plateau", "onecycle"} <= set(options("scheduler"))


def linear_weights(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The 2-D weights of a model state dict, input layer first (state dicts keep module order)."""
    return [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]


@pytest.mark.parametrize("data", sorted(TEXT_DATA))
def test_text_models_on_every_text_dataset(data: str, train_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Each text dataset trains the model family it is for (sized from its vocabulary), with its
    baseline beside it: the GPT on the language-modelling ones, the Transformer on the labelled."""
    assert TEXT_DATA <= set(DATA)
    files = offline_data(data, tmp_path / "data", monkeypatch)
    lm = data in ("python_docs", "text")
    model = ["model=gpt", "task=language_model", "task.sample_tokens=5"] if lm else ["model=transformer"]
    tiny = ["model.d_model=16", "model.num_heads=2", "model.num_layers=1"]
    run = train_run([f"data={data}", *model, *tiny, *files], tmp_path / "run")
    assert all(math.isfinite(v) for v in run.metrics.values()), run.metrics
    vocab = read_tokenizer(run.dir / "tokenizer.json").vocab_size
    assert run.checkpoint()["model"]["wte.weight" if lm else "embed.weight"].shape[0] == vocab
    assert ("test/baseline_bpc" if lm else "test/baseline_acc") in run.metrics


@pytest.mark.parametrize("data", [d for d in DATA if d not in TEXT_DATA])
def test_mlp_on_every_dataset(data: str, train_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = offline_data(data, tmp_path / "data", monkeypatch)  # stand-ins for sets a test machine lacks
    run = train_run([f"data={data}", "model=mlp", *files], tmp_path / "run")
    dataset = instantiate(run.cfg.data.dataset)
    assert_finite_metrics(run.metrics, dataset.kind)

    # The model was sized from the data: one input per feature, one output per class (or target).
    weights = linear_weights(run.checkpoint()["model"])
    assert weights[0].shape[1] == math.prod(dataset.x.shape[1:])
    if dataset.kind == "classification":
        expected_outputs = len(np.unique(dataset.y))
    else:  # one output per target: (N,) -> 1, (N, horizon) -> horizon
        expected_outputs = 1 if dataset.y.ndim == 1 else dataset.y.shape[1]
    assert weights[-1].shape[0] == expected_outputs


def test_regression_metrics(train_run, tmp_path: Path) -> None:
    """diabetes with its target left in raw units."""
    run = train_run(["data=diabetes", "data.standardize_target=false"], tmp_path)
    assert_finite_metrics(run.metrics, "regression")
    for split in ("val", "test"):
        assert run.metrics[f"{split}/loss"] == pytest.approx(run.metrics[f"{split}/mse"], rel=1e-6)  # loss is MSE
        assert run.metrics[f"{split}/mae"] ** 2 <= run.metrics[f"{split}/mse"] * (1 + 1e-6)  # Jensen
        # An untrained net predicting ~0 for targets around 150 has a hugely negative R^2.
        assert run.metrics[f"{split}/r2"] < 0


@pytest.mark.parametrize("optimizer", options("optimizer"))
def test_every_optimizer(optimizer: str, train_run, tmp_path: Path) -> None:
    run = train_run(["data=iris", f"optimizer={optimizer}"], tmp_path)
    assert_finite_metrics(run.metrics, "classification")
    state = run.checkpoint()["task"]["optim"]["optimizer"]
    group = state["param_groups"][0]
    for key, value in run.cfg.optimizer.items():
        if not key.startswith("_"):  # the configured hyperparameters reached the torch optimizer
            expected = tuple(value) if isinstance(group[key], tuple) else value
            assert group[key] == expected, key
    # Two updates happened: optimizers with per-parameter state hold it for every parameter.
    if state["state"]:
        assert len(state["state"]) == len(group["params"])
        step = state["state"][0].get("step")
        if step is not None:
            assert float(step) == 2


# Two epochs of two steps, optimizer=adam (lr 0.001): the lr each schedule must end the run at,
# and `last_epoch`, which tells per-epoch (2) from per-step (4) schedules.
LR = 0.001
SCHEDULES = {
    "none": ([], LR, None),
    "step": (["scheduler.step_size=1"], LR * 0.5**2, 2),
    "cosine": ([], 0.0, 2),  # T_max defaults to trainer.max_epochs: anneals to eta_min=0 at the end
    # A relative threshold of 1e9 means no epoch ever counts as an improvement, so with
    # patience 0 every epoch halves the lr. (That the monitored val/loss is read is in test_optim.)
    "plateau": (["scheduler.patience=0", "+scheduler.threshold=1e9"], LR * 0.5**2, 2),
    "onecycle": ([], None, 4),  # the final lr is checked below
    "multistep": (["scheduler.milestones=[1]"], LR * 0.1, 2),
    "exponential": ([], LR * 0.9**2, 2),
    "cosine_warmup": (["scheduler.warmup_steps=1"], 0.0, 4),  # per step: 2 epochs x 2 steps
}


def test_every_scheduler_has_an_expectation() -> None:
    assert set(SCHEDULES) == set(options("scheduler"))


@pytest.mark.parametrize("scheduler", options("scheduler"))
def test_every_scheduler(scheduler: str, train_run, tmp_path: Path) -> None:
    extra, final_lr, last_epoch = SCHEDULES[scheduler]
    overrides = ["data=iris", "optimizer=adam", f"scheduler={scheduler}", "trainer.max_epochs=2", *extra]
    run = train_run(overrides, tmp_path)
    assert_finite_metrics(run.metrics, "classification")
    optim = run.checkpoint()["task"]["optim"]
    lr = optim["optimizer"]["param_groups"][0]["lr"]
    if final_lr is not None:
        assert lr == pytest.approx(final_lr, abs=1e-12)
    if last_epoch is None:
        assert optim["scheduler"] is None
    else:
        assert optim["scheduler"]["last_epoch"] == last_epoch
    if scheduler == "cosine":
        assert optim["scheduler"]["T_max"] == 2  # ${trainer.max_epochs} resolved
    if scheduler == "onecycle":
        # total_steps filled in by nnlab from the run (2 epochs x 2 steps); the cycle starts at
        # max_lr / div_factor and has left that starting value.
        assert optim["scheduler"]["total_steps"] == 4
        assert optim["scheduler"]["base_lrs"] == [pytest.approx(LR / 25)]
        assert lr != pytest.approx(LR / 25)


def rl_tiny(cfg: DictConfig) -> list[str]:
    """A reinforcement-learning experiment's TINY: its two batches made short rollouts (16 steps
    per environment) and its evaluation a few short episodes (at most 50 steps)."""
    rollout = "task.train_freq" if "train_freq" in cfg.task else "task.n_steps"
    return [f"{rollout}=16", "env.val_episodes=2", "env.test_episodes=2", "env.max_episode_steps=50"]


@pytest.mark.parametrize("experiment", one_in(2, options("experiment")))
def test_every_experiment_runs_tiny(experiment: str, compose_cfg, tmp_path: Path) -> None:
    overrides = [*TINY, f"experiment={experiment}"]
    cfg = compose_cfg(overrides, tmp_path)
    if cfg.get("env"):
        cfg = compose_cfg([*overrides, *rl_tiny(cfg)], tmp_path)
    metrics = train(cfg)
    if cfg.task._target_ == "nnlab.tasks.supervised.Supervised":
        assert_finite_metrics(metrics, instantiate(cfg.data.dataset).kind)
    else:  # reconstruction, GAN, SOM, language model, RL: their own metrics on every split (and a baseline's), finite
        assert {key.split("/")[0] for key in metrics} - {"baseline"} == {"train", "val", "test"}
        assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    if cfg.get("env"):  # two batches of 16 steps per environment, then 2 episodes of at most 50 steps per split
        assert metrics["train/env_steps"] == 2 * 16 * cfg.env.num_envs
        for split in ("val", "test"):
            assert 1 <= metrics[f"{split}/episode_length"] <= 50
            assert metrics[f"{split}/return_min"] <= metrics[f"{split}/return_mean"] <= metrics[f"{split}/return_max"]
    assert cfg.optimized_metric in metrics


def test_debug_default_runs_and_prints_the_config(compose_cfg, tmp_path: Path, capsys) -> None:
    cfg = compose_cfg(["debug=default", "callbacks.progress=null"], tmp_path)
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches, cfg.trainer.device) == (1, 3, "cpu")
    metrics = train(cfg)
    assert_finite_metrics(metrics, "classification")
    out = capsys.readouterr().out
    assert "detect_anomaly: true" in out  # print_config: true printed the resolved tree


def test_debug_overfit_drives_the_loss_down(compose_cfg, tmp_path: Path) -> None:
    """debug=overfit trains on one fixed batch for 100 epochs: a working model, loss and optimizer
    memorize it."""
    cfg = compose_cfg(["debug=overfit", "callbacks.progress=null"], tmp_path)
    metrics = train(cfg)
    assert metrics["train/loss"] < 0.05
    assert metrics["train/acc"] == 1.0


# Full runs of the experiments as configured, with a floor on what each should reach.
# (Seeds 0-2 reach: digits_mlp 0.98, iris_mlp 0.90-1.0 on 30 test rows, spirals_mlp 1.0, and
# diabetes_mlp, with its data bug patched, R^2 0.44-0.55.)
QUALITY = {
    "digits_mlp": ("test/acc", 0.95),
    "iris_mlp": ("test/acc", 0.85),
    "spirals_mlp": ("test/acc", 0.9),
    "diabetes_mlp": ("test/r2", 0.3),
}


@pytest.mark.parametrize("experiment", sorted(QUALITY))
def test_experiment_learns(experiment: str, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg([f"experiment={experiment}", "trainer.device=cpu", "callbacks.progress=null"], tmp_path)
    metric, floor = QUALITY[experiment]
    assert train(cfg)[metric] >= floor
