"""Concept lab, gradients: the gradient check (backprop is the chain rule), the residual MLP and the
health monitor's first/last gradient-norm ratio (vanishing gradients), and the exploding-gradients
experiment's two trials."""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from nnlab.data.datamodule import DataModule
from nnlab.data.sklearn import digits
from nnlab.engine.gradcheck import GradientCheck, check_gradients
from nnlab.engine.health import HealthMonitor
from nnlab.engine.nonfinite import TrainingDiverged
from nnlab.engine.tensorboard import TensorBoardLogger
from nnlab.engine.trainer import Trainer
from nnlab.errors import ConfigValueError, OptionError
from nnlab.models.mlp import MLP
from nnlab.runs.pipeline import train
from nnlab.tasks.supervised import Supervised


@functools.cache
def digits_data() -> Any:
    return digits()


def digits_batch(rows: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    data = digits_data()
    x = torch.tensor(data.x[:rows], dtype=torch.float32) / 16.0
    return x, torch.tensor(data.y[:rows])


def events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return accumulator


# ---- the gradient check -------------------------------------------------------------------------
class WrongWeightGrad(torch.autograd.Function):
    """y = x W^T + b whose backward doubles the weight's gradient (the input's and bias's are right)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x, weight = ctx.saved_tensors
        return grad @ weight, 2 * grad.T @ x, grad.sum(0)  # the bug: 2 *


class BuggyLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return WrongWeightGrad.apply(x, self.weight, self.bias)


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_correct_gradients_agree_with_finite_differences(activation: str, batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = MLP((1, 8, 8), 10, [32, 16], activation, dropout=0.3, batch_norm=batch_norm)
    x, y = digits_batch()
    results = check_gradients(model, F.cross_entropy, x, y, generator=torch.Generator().manual_seed(0))
    assert [r.name for r in results] == [name for name, _ in model.named_parameters()]
    assert all(r.entries == min(20, p.numel()) for r, p in zip(results, model.parameters()))
    errors = {r.name: r.rel_error for r in results}
    assert max(errors.values()) < 1e-5, errors  # 1e-9 to 3e-6 measured: float64 rounding
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the check used a copy


def test_a_wrong_backward_is_caught_and_named(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("flat", nn.Flatten())
    model.add_module("hidden", nn.Linear(64, 16))
    model.add_module("act", nn.Tanh())
    model.add_module("bad", BuggyLinear(16, 16))
    model.add_module("act2", nn.Tanh())
    model.add_module("out", nn.Linear(16, 10))
    task = SimpleNamespace(loss=F.cross_entropy)
    trainer = SimpleNamespace(task=task, module=model, logger=None, global_step=0, output_dir=str(tmp_path))
    check = GradientCheck()
    with caplog.at_level(logging.INFO, logger="nnlab.engine.gradcheck"):
        results = check.run(trainer, digits_batch(16))
    errors = {r.name: r.rel_error for r in results}
    # Only the buggy weight is off (autograd gives 2x the slope: relative error 1/2); every other
    # tensor, the layers before it included (its input gradient is right), passes.
    assert [r.name for r in check.failed] == ["bad.weight"]
    assert errors["bad.weight"] == pytest.approx(0.5, rel=1e-4)
    assert max(v for k, v in errors.items() if k != "bad.weight") < 1e-6
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("GRADIENT CHECK FAILED for bad.weight (BuggyLinear)")
    assert "callbacks.gradient_check.tolerance=0.0001" in warning
    record = json.loads((tmp_path / "gradcheck.json").read_text())
    assert record["passed"] is False and record["max_rel_error"] == pytest.approx(0.5, rel=1e-4)


def test_the_callback_checks_the_first_batch_and_leaves_training_as_it_was(tmp_path: Path) -> None:
    """Before the first update, on that batch; the run's weights, random draws and metrics are
    those of the same run without the check, and the task's own training_step is back."""

    def fit(callbacks: list[Any], folder: Path) -> tuple[Supervised, dict[str, float]]:
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, [32, 16], "relu", dropout=0.2, batch_norm=True)
        data = DataModule(digits_data(), batch_size=64, seed=0)
        task = Supervised(model, functools.partial(torch.optim.Adam, lr=1e-3), class_names=data.class_names)
        logger = TensorBoardLogger(str(folder / "tb"))
        trainer = Trainer(
            max_epochs=1,
            device="cpu",
            limit_train_batches=3,
            callbacks=callbacks,
            logger=logger,
            output_dir=str(folder),
        )
        try:
            return task, trainer.fit(task, data)
        finally:
            logger.close()

    check = GradientCheck(max_entries=5)
    task, metrics = fit([check], tmp_path / "checked")
    _, plain = fit([], tmp_path / "plain")
    assert metrics == plain
    assert "training_step" not in vars(task)
    assert len(check.results) == 8 and not check.failed  # 3 Linear weights, 2 BatchNorm pairs, the output bias
    tags = events(tmp_path / "checked" / "tb").Tags()["scalars"]
    assert {f"gradcheck/rel_error/{r.name}" for r in check.results} <= set(tags)
    assert json.loads((tmp_path / "checked" / "gradcheck.json").read_text())["passed"] is True


def test_gradient_check_options_and_tasks_are_checked() -> None:
    with pytest.raises(OptionError, match="callbacks.gradient_check.eps"):
        GradientCheck(eps=0.0)
    with pytest.raises(OptionError, match="callbacks.gradient_check.rows"):
        GradientCheck(rows=0)
    trainer = SimpleNamespace(task=SimpleNamespace(training_step=lambda batch: {}))  # a task without loss()
    with pytest.raises(ConfigValueError, match=r"task=supervised.*callbacks.gradient_check=null"):
        GradientCheck().on_fit_start(trainer)


# ---- the residual MLP ---------------------------------------------------------------------------
def test_residual_mlp_adds_each_hidden_block_to_its_input() -> None:
    torch.manual_seed(0)
    plain = MLP((64,), 10, [32, 32, 32], "sigmoid")
    residual = MLP((64,), 10, [32, 32, 32], "sigmoid", residual=True)
    # Same tensors, renamed: the first block (64 -> 32) stays flat, blocks 2-3 are wrapped.
    names = [name for name, _ in residual.named_parameters()]
    assert names == [
        "net.1.weight", "net.1.bias", "net.3.block.0.weight", "net.3.block.0.bias",
        "net.4.block.0.weight", "net.4.block.0.bias", "net.5.weight", "net.5.bias",
    ]  # fmt: skip
    assert [name for name, _ in plain.named_parameters()][:2] == ["net.1.weight", "net.1.bias"]
    x = torch.randn(5, 64)
    with torch.no_grad():
        h = torch.sigmoid(residual.net[1](x))  # (5, 32)
        h = h + residual.net[3].block(h)  # block = Linear -> Sigmoid
        h = h + residual.net[4].block(h)
        assert torch.allclose(residual(x), residual.net[5](h))


def test_residual_mlp_needs_equal_widths() -> None:
    with pytest.raises(OptionError) as info:
        MLP((64,), 10, [64, 32], residual=True)
    message = str(info.value)
    assert "model.residual=true" in message and "model.hidden_sizes=[64, 32]" in message
    assert "model.hidden_sizes=[64,64]" in message and "model.residual=false" in message
    MLP((64,), 10, [64, 32], residual=False)  # unequal widths are fine without skips


def test_residual_connections_carry_the_gradient_to_the_first_layer(tmp_path: Path) -> None:
    """12 sigmoid layers: the first layer's gradient is ~1e-7 of the last one's without skips and
    within a factor ~10 with them; the health monitor logs that ratio as health/grad_norm_ratio."""
    ratios = {}
    for residual in (False, True):
        torch.manual_seed(0)
        model = MLP((1, 8, 8), 10, [32] * 12, "sigmoid", residual=residual)
        data = DataModule(digits_data(), batch_size=64, seed=0)
        task = Supervised(model, functools.partial(torch.optim.SGD, lr=0.01), class_names=data.class_names)
        folder = tmp_path / str(residual)
        logger = TensorBoardLogger(str(folder))
        monitor = HealthMonitor(every_n_steps=1, histograms=False)
        trainer = Trainer(max_epochs=1, device="cpu", limit_train_batches=2, callbacks=[monitor], logger=logger)
        try:
            trainer.fit(task, data)
        finally:
            logger.close()
        ev = events(folder)
        weights = [name for name, p in model.named_parameters() if p.ndim == 2]
        first, last = (ev.Scalars(f"health/grad_norm/{w}") for w in (weights[0], weights[-1]))
        logged = ev.Scalars("health/grad_norm_ratio")
        assert [e.step for e in logged] == [1, 2]
        for a, b, r in zip(first, last, logged):
            assert r.value == pytest.approx(a.value / b.value, rel=1e-5)
        ratios[residual] = logged[0].value
    assert ratios[False] < 1e-6
    assert ratios[True] > 1e-2


# ---- the exploding-gradients experiment -----------------------------------------------------------
def test_exploding_gradients_diverges_unclipped_and_trains_clipped(compose_cfg, tmp_path: Path) -> None:
    """The experiment's two trials over its first 12 steps: without clipping the loss overflows and
    the run stops with the non-finite message; clipped at norm 1, the same steps are all finite."""
    steps = ["trainer.max_epochs=1", "trainer.limit_train_batches=12", "callbacks.progress=null", "logger=none"]
    unclipped = compose_cfg(
        ["experiment=exploding_gradients", "trainer.gradient_clip_val=null", *steps], tmp_path / "a"
    )
    with pytest.raises(TrainingDiverged, match=r"Training stopped: at step \d+ of epoch 1 the .* became non-finite"):
        train(unclipped)
    clipped = compose_cfg(["experiment=exploding_gradients", *steps], tmp_path / "b")
    assert clipped.trainer.gradient_clip_val == 1.0
    metrics = train(clipped)
    assert metrics["train/loss"] < 100 and metrics["val/acc"] > 0.1
