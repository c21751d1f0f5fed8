"""nnlab.analysis.adversarial (FGSM, PGD), adversarial training in the Supervised task, and the
nnlab-attack command: its outputs, metrics and refusals."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import CLI_TIMEOUT_S, Run, cli_env, compose_config, run_command, train_tiny
from nnlab.analysis.adversarial import adversarial_accuracy, fgsm, perturb, pgd
from nnlab.commands.attack import attack
from nnlab.errors import ConfigValueError, UserError
from nnlab.runs.restore import load_run
from nnlab.tasks.supervised import Supervised

EPS = (0.0, 0.05, 0.1, 0.3)
METHODS = ("fgsm", "pgd")


def compose_attack(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """The config `nnlab-attack <overrides>` hands to `main`."""
    return compose_config(overrides, run_dir, config_name="attack")


@pytest.fixture(scope="module")
def digits_pixels(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """An MLP trained 3 full epochs on digits in pixel units ([0, 1]): ~0.95 test accuracy."""
    overrides = ["data=digits", "data.normalize=none", "trainer.max_epochs=3", "trainer.limit_train_batches=null"]
    return train_tiny(overrides, tmp_path_factory.mktemp("digits_pixels"))


@pytest.fixture(scope="module")
def restored(digits_pixels: Run):
    run = load_run(digits_pixels.dir / "checkpoints" / "best.ckpt", device="cpu")
    x, y = next(run.data.eval_batches("test"))
    return run, x, y


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# -- the attacks ---------------------------------------------------------------------------------
def test_eps_zero_changes_nothing(restored) -> None:
    run, x, y = restored
    assert torch.equal(fgsm(run.model, x, y, 0.0), x)
    assert torch.equal(pgd(run.model, x, y, 0.0, steps=5), x)
    clean = run.task.evaluate(run.data.eval_batches("test"))["acc"]
    for method in METHODS:
        assert adversarial_accuracy(run.model, run.data.eval_batches("test"), method, 0.0) == clean


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("clamp", [None, (0.0, 1.0)])
def test_eps_bound_and_clamp_hold(restored, method: str, clamp) -> None:
    run, x, y = restored
    for eps in EPS:
        x_adv = perturb(method, run.model, x, y, eps, steps=5, clamp=clamp)
        assert x_adv.shape == x.shape
        assert (x_adv - x).abs().max().item() <= eps + 1e-6, (method, eps)
        if clamp is not None:
            assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
        elif eps > 0:  # unclamped, the blank (0) pixels of digits get pushed below 0
            assert x_adv.min().item() < 0.0


def test_attacks_lower_accuracy_and_pgd_is_stronger(restored) -> None:
    run, x, y = restored
    clean = accuracy(run.model, x, y)
    assert clean > 0.85
    for eps in (0.05, 0.1, 0.2):
        acc = {m: adversarial_accuracy(run.model, [(x, y)], m, eps, steps=10, clamp=(0, 1)) for m in METHODS}
        assert acc["fgsm"] <= clean and acc["pgd"] <= clean, (eps, acc, clean)
        assert acc["pgd"] <= acc["fgsm"] + 0.01, (eps, acc)  # slack: PGD's random start
    assert acc["pgd"] < clean - 0.2  # at eps=0.2 the attack does real damage


def test_attack_leaves_the_weights_gradients_alone(restored) -> None:
    run, x, y = restored
    for p in run.model.parameters():
        p.grad = None
    pgd(run.model, x, y, 0.1, steps=2)
    assert all(p.grad is None for p in run.model.parameters())


def test_attack_arguments_are_checked(restored) -> None:
    run, x, y = restored
    with pytest.raises(ConfigValueError, match=r"attack method='pgdd'.*Did you mean 'pgd'"):
        perturb("pgdd", run.model, x, y, 0.1)
    with pytest.raises(ConfigValueError, match="attack eps"):
        fgsm(run.model, x, y, -0.1)


# -- adversarial training ----------------------------------------------------------------------------
def supervised(model: torch.nn.Module, **kwargs) -> Supervised:
    return Supervised(model, optimizer=lambda params: torch.optim.SGD(params, lr=0.1), **kwargs)


def test_adversarial_batch_mixes_in_eval_mode(restored) -> None:
    run, x, y = restored
    model = copy.deepcopy(run.model).train()
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bn, "the default MLP has batch norm"
    before = bn[0].running_mean.clone()
    task = supervised(model, adversarial="pgd", adversarial_eps=0.1, adversarial_steps=3, adversarial_fraction=0.25)
    mixed = task.adversarial_batch(x[:64], y[:64])
    assert model.training  # restored after the attack
    assert torch.equal(bn[0].running_mean, before)  # no BN statistic updated by the attack
    assert not torch.equal(mixed[:16], x[:16]) and torch.equal(mixed[16:], x[16:64])
    assert (mixed - x[:64]).abs().max().item() <= 0.1 + 1e-6


def test_adversarial_training_changes_the_weights(tmp_path: Path) -> None:
    common = ["data=digits", "data.normalize=none", "trainer.limit_train_batches=3"]
    plain = train_tiny([*common, "task.adversarial=none"], tmp_path / "plain")
    robust = train_tiny([*common, "task.adversarial=pgd", "task.adversarial_steps=2"], tmp_path / "pgd")
    assert robust.metrics["test/acc"] > 0.2  # it trained
    w_plain, w_robust = plain.checkpoint()["model"], robust.checkpoint()["model"]
    assert w_plain.keys() == w_robust.keys()
    assert any(not torch.equal(w_plain[k], w_robust[k]) for k in w_plain)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adversarial": "pgdd"}, r"task.adversarial='pgdd'.*Did you mean 'pgd'"),
        ({"adversarial": "pgd", "adversarial_eps": 0.0}, r"task.adversarial_eps=0.0 is out of range"),
        ({"adversarial": "pgd", "adversarial_steps": 0}, r"task.adversarial_steps=0"),
        ({"adversarial": "fgsm", "adversarial_fraction": 0.0}, r"task.adversarial_fraction=0.0.*\(0.0, 1.0\]"),
        ({"adversarial": "pgd", "adversarial_fraction": 1.5}, r"task.adversarial_fraction=1.5"),
        ({"adversarial": "pgd", "adversarial_step_size": -1.0}, r"task.adversarial_step_size=-1.0"),
        ({"adversarial": "pgd", "kind": "regression"}, r"task.adversarial=pgd.*regression.*task.adversarial=none"),
    ],
)
def test_adversarial_training_refuses_bad_args(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        supervised(torch.nn.Linear(2, 2), **kwargs)


# -- nnlab-attack ---------------------------------------------------------------------------------------
def test_attack_cli_writes_table_plot_tensorboard_metrics(digits_pixels: Run, tmp_path: Path) -> None:
    out = tmp_path / "attack"
    ckpt = digits_pixels.dir / "checkpoints" / "best.ckpt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nnlab.commands.attack",
            f"ckpt_path={ckpt}",
            "attack.eps=[0,0.1]",
            f"hydra.run.dir={out}",
        ],
        cwd=tmp_path,
        env={**cli_env(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {"clean/acc", "fgsm/eps_0/acc", "fgsm/eps_0.1/acc", "pgd/eps_0/acc", "pgd/eps_0.1/acc"}
    assert set(metrics) == keys
    assert metrics["pgd/eps_0/acc"] == metrics["fgsm/eps_0/acc"] == metrics["clean/acc"]
    assert metrics["clean/acc"] == pytest.approx(digits_pixels.metrics["test/acc"])  # best.ckpt is the tested one
    assert metrics["pgd/eps_0.1/acc"] < metrics["clean/acc"]
    csv_lines = (out / "robustness.csv").read_text().splitlines()
    assert csv_lines[0] == "eps,clean,fgsm,pgd" and len(csv_lines) == 3
    assert "| eps | clean | fgsm | pgd |" in (out / "robustness.md").read_text()
    assert (out / "figures" / "accuracy_vs_eps.png").stat().st_size > 0
    assert (out / "figures" / "examples.png").stat().st_size > 0
    events = EventAccumulator(str(out), size_guidance={"scalars": 0})
    events.Reload()
    assert keys <= set(events.Tags()["scalars"])
    assert events.Scalars("pgd/eps_0.1/acc")[-1].value == pytest.approx(metrics["pgd/eps_0.1/acc"])
    assert {"accuracy_vs_eps", "examples"} <= set(events.Tags()["images"])


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_attack_refuses_a_regression_run(tmp_path: Path) -> None:
    run = train_tiny(["data=diabetes"], tmp_path / "run")
    result = run_command(
        "attack", [f"ckpt_path={run.dir / 'checkpoints' / 'last.ckpt'}"], tmp_path, env={"OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("Error: nnlab-attack attacks classifiers"), result.stderr
    assert "regression" in result.stderr and "Traceback" not in result.stderr


def test_attack_refuses_a_non_supervised_run(tmp_path: Path) -> None:
    run = train_tiny(["experiment=digits_autoencoder"], tmp_path / "run")
    cfg = compose_attack([f"ckpt_path={run.dir / 'checkpoints' / 'last.ckpt'}"], tmp_path / "attack")
    with pytest.raises(UserError, match="nnlab-attack attacks classifiers trained with task=supervised"):
        attack(cfg)


def test_attack_config_is_checked(digits_pixels: Run, tmp_path: Path) -> None:
    ckpt = digits_pixels.dir / "checkpoints" / "best.ckpt"
    with pytest.raises(ConfigValueError, match=r"attack.methods='cw'"):
        attack(compose_attack([f"ckpt_path={ckpt}", "attack.methods=[cw]"], tmp_path / "a"))
    with pytest.raises(ConfigValueError, match=r"attack.eps=-0.1"):
        attack(compose_attack([f"ckpt_path={ckpt}", "attack.eps=[-0.1]"], tmp_path / "b"))
    with pytest.raises(UserError, match=r"attack.clamp=.*\[lo, hi\]"):
        attack(compose_attack([f"ckpt_path={ckpt}", "attack.clamp=[1,0]"], tmp_path / "c"))
