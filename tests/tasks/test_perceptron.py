"""The perceptron learning rule: its update, convergence on separable data, failure on circles."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import epoch_curve, run_cli, train_tiny
from nnlab.engine.precision import Precision
from nnlab.errors import ConfigValueError
from nnlab.models.perceptron import Perceptron
from nnlab.tasks.perceptron import PerceptronRule

CPU = torch.device("cpu")
FULL = ["trainer.limit_train_batches=null", "callbacks.progress=null", "model=perceptron"]


def rule(model: Perceptron, lr: float = 1.0) -> PerceptronRule:
    task = PerceptronRule(model, kind="classification", lr=lr)
    task.configure(CPU, Precision("32", CPU), total_steps=1)
    return task


def test_update_only_on_mistakes() -> None:
    model = Perceptron((2,), 2)
    task = rule(model, lr=0.5)
    # From zero weights the score is 0, which counts as a mistake (t * s <= 0): for a sample of
    # class 0 (t = -1) the rule moves w by -lr * x and b by -lr.
    out = task.training_step((torch.tensor([[1.0, 2.0]]), torch.tensor([0])))
    assert torch.equal(model.weight, torch.tensor([[-0.5, -1.0]]))
    assert torch.equal(model.bias, torch.tensor([-0.5]))
    assert out["acc"].item() == 1.0  # now classified correctly
    # A correctly classified sample changes nothing.
    task.training_step((torch.tensor([[2.0, 2.0]]), torch.tensor([0])))
    assert torch.equal(model.weight, torch.tensor([[-0.5, -1.0]]))
    assert task.epoch_metrics() == {"mistakes": 1.0}
    assert task.epoch_metrics() == {"mistakes": 0.0}  # reset after reading


def test_one_vs_rest_units_for_multiclass() -> None:
    model = Perceptron((4,), 3)
    assert model.weight.shape == (3, 4)
    assert model(torch.zeros(5, 4)).shape == (5, 3)
    assert Perceptron((4,), 2).weight.shape == (1, 4)  # binary: a single unit
    assert Perceptron((4,), 2)(torch.zeros(5, 4)).shape == (5, 2)


@pytest.mark.parametrize("classes", [2, 3])
def test_converges_on_separable_data(classes: int, tmp_path: Path) -> None:
    run = train_tiny([*FULL, "data=blobs", f"data.dataset.num_classes={classes}", "trainer.max_epochs=15"], tmp_path)
    assert run.metrics["train/mistakes"] == 0.0  # a whole epoch without a mistake: converged
    assert run.metrics["train/acc"] == 1.0 and run.metrics["test/acc"] == 1.0
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    mistakes = [e.value for e in epoch_curve(tmp_path, "train/mistakes")]
    assert mistakes[0] > 0 and mistakes[-1] == 0  # logged per epoch, falling to 0


def test_fails_on_circles(tmp_path: Path) -> None:
    run = train_tiny([*FULL, "data=circles", "trainer.max_epochs=15"], tmp_path)
    train_rows = 700  # 1000 samples, 10% val, 20% test
    assert run.metrics["train/mistakes"] > 0.25 * train_rows  # never settles
    assert run.metrics["test/acc"] < 0.7  # no line separates a circle from its surrounding ring


def test_rejects_regression_data() -> None:
    with pytest.raises(ConfigValueError, match="classification data"):
        PerceptronRule(Perceptron((3,), 2), kind="regression")
    with pytest.raises(ConfigValueError, match="model=perceptron"):
        PerceptronRule(torch.nn.Linear(3, 2), partial(torch.optim.SGD, lr=0.1))


def test_cli_perceptron_on_regression_data_is_one_message(tmp_path: Path) -> None:
    result = run_cli(["model=perceptron", "data=diabetes", "trainer.max_epochs=1"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "perceptron" in result.stderr and "regression" in result.stderr
