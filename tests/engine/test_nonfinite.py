"""NaN/inf in training: the run stops with a message that says where (trainer.nonfinite=stop) or
skips the update (nonfinite=skip); no update with NaN/inf is applied, checkpoints are kept."""

from __future__ import annotations

import logging
import random
import re
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import nnlab.runs.pipeline
from helpers import epoch_curve, run_cli, train_tiny, with_parts
from nnlab.engine.checkpoint import load_checkpoint
from nnlab.engine.nonfinite import TrainingDiverged, locate_nonfinite
from nnlab.engine.optim import NonFiniteStep, Optimization, UpdateRules
from nnlab.engine.precision import Precision
from nnlab.errors import UserError

FP32 = Precision("32", torch.device("cpu"))
QUIET = ("trainer.device=cpu", "callbacks.progress=null", "callbacks.health=null", "trainer.summary=false")


class Blowup(nn.Module):
    """Multiplies by 1e39, beyond float32's largest value (3.4e38): inf (or NaN where 0 * inf)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1e39


class _InfGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


class InfGrad(nn.Module):
    """The identity going forward; an infinite gradient going back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _InfGrad.apply(x)


def nan_loss_at(steps: set[int] | None) -> Callable[[nnlab.runs.pipeline.Parts], None]:
    """Make the training loss NaN at the given global steps (1-based; None: at every step)."""

    def change(parts: nnlab.runs.pipeline.Parts) -> None:
        task, trainer = parts.task, parts.trainer
        loss = task.loss

        def poisoned(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            value = loss(out, y)
            if task.model.training and (steps is None or trainer.global_step + 1 in steps):
                return value * float("nan")
            return value

        task.loss = poisoned

    return change


# --- nonfinite=stop -----------------------------------------------------------------------------------


def test_divergence_on_the_command_line_says_where_and_what_to_do(tmp_path: Path) -> None:
    """SGD with lr 1000 and no batch norm diverges within the first epoch of digits."""
    run_dir = tmp_path / "run"
    args = [
        "optimizer=sgd",
        "optimizer.lr=1000",
        "model.batch_norm=false",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=null",
        *QUIET,
        f"hydra.run.dir={run_dir}",
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("Error: Training stopped: at step "), message
    step = int(re.search(r"at step (\d+) of epoch 1 ", message).group(1))
    assert 1 <= step <= 20  # within the first epoch
    assert re.search(r"output of layer net\.\d+ \(Linear\)", message), message
    assert "No checkpoint was written" in message
    for remedy in ("optimizer.lr", "trainer.gradient_clip_val=1.0", "init=", "model.batch_norm=true", "nonfinite=skip"):
        assert remedy in message, remedy
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "metrics.json").exists()


def test_divergence_after_a_good_epoch_keeps_its_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The weights turn NaN after the first epoch's checkpoints were written: the run stops at the
    first step of epoch 2 and the checkpoints of epoch 1 stay as they were, loadable and finite."""
    saved: dict[str, bytes] = {}

    class PoisonAfterEpoch1:  # runs after ModelCheckpoint (callbacks are called in order)
        def on_epoch_end(self, trainer, metrics) -> None:
            folder = Path(trainer.output_dir) / "checkpoints"
            for cb in trainer.callbacks:  # the files are written on a background thread
                if hasattr(cb, "writer"):
                    cb.writer.wait()
            saved.update({name: (folder / name).read_bytes() for name in ("last.ckpt", "best.ckpt")})
            with torch.no_grad():
                trainer.task.model.net[1].weight[0, 0] = float("nan")

    with_parts(monkeypatch, lambda parts: parts.trainer.callbacks.append(PoisonAfterEpoch1()))
    with pytest.raises(TrainingDiverged) as info:
        train_tiny([*QUIET, "trainer.max_epochs=3", "callbacks.model_checkpoint.save_interval_s=0"], tmp_path)
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith("Training stopped: at step 3 of epoch 2 the loss became non-finite;"), message
    assert "the weights of net.1.weight are already non-finite" in message
    assert f"The checkpoints written before it are kept ({tmp_path / 'checkpoints'})" in message
    for name, content in saved.items():
        path = tmp_path / "checkpoints" / name
        assert path.read_bytes() == content, name
        state = load_checkpoint(path)
        assert state["epoch"] == 1 and state["global_step"] == 2
        assert all(torch.isfinite(w).all() for w in state["model"].values() if w.is_floating_point())
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / "metrics.json").exists()


# --- nonfinite=skip ---------------------------------------------------------------------------------


def test_skip_leaves_the_weights_of_skipped_steps_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    snapshots: dict[int, list[torch.Tensor]] = {}

    class Snapshot:
        def on_train_batch_end(self, trainer) -> None:
            snapshots[trainer.global_step] = [p.detach().clone() for p in trainer.task.model.parameters()]

    def change(parts: nnlab.runs.pipeline.Parts) -> None:
        nan_loss_at({3, 5})(parts)
        parts.trainer.callbacks.append(Snapshot())

    with_parts(monkeypatch, change)
    overrides = [*QUIET, "trainer.nonfinite=skip", "trainer.limit_train_batches=6", "model.batch_norm=false"]
    with caplog.at_level(logging.WARNING, logger="nnlab"):
        run = train_tiny(overrides, tmp_path)

    assert run.metrics["train/skipped_steps"] == 2.0
    assert all(np.isfinite(v) for v in run.metrics.values())
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert [(e.step, e.value) for e in epoch_curve(tmp_path, "train/skipped_steps")] == [(1, 2.0)]

    def same(a: int, b: int) -> bool:
        return all(torch.equal(x, y) for x, y in zip(snapshots[a], snapshots[b]))

    assert same(2, 3) and same(4, 5)  # the skipped updates changed nothing ...
    assert not same(1, 2) and not same(3, 4) and not same(5, 6)  # ... the others did
    state = run.checkpoint()
    assert state["skipped_steps"] == 2 and state["consecutive_skips"] == 0
    assert int(state["task"]["optim"]["optimizer"]["state"][0]["step"]) == 4  # Adam: 6 batches - 2 skipped
    assert all(torch.isfinite(w).all() for w in state["model"].values())
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Skipped the update")]
    assert [re.search(r"step (\d+) of epoch 1", w).group(1) for w in warnings] == ["3", "5"]
    assert all("the loss is not finite" in w and "the loss computation itself" in w for w in warnings)


def test_skip_gives_up_after_max_consecutive_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_parts(monkeypatch, nan_loss_at(None))
    overrides = [*QUIET, "trainer.nonfinite=skip", "trainer.max_consecutive_skips=3", "trainer.limit_train_batches=6"]
    with pytest.raises(TrainingDiverged) as info:
        train_tiny(overrides, tmp_path)
    message = str(info.value)
    assert message.startswith(
        "Training stopped: 3 updates in a row had a non-finite loss (the last at step 3 of epoch 1);"
    ), message
    assert "No checkpoint was written" in message
    assert "nonfinite=skip to skip" not in message  # (it is already on)
    assert not (tmp_path / "checkpoints").exists()


# --- where it came from -------------------------------------------------------------------------------


def test_a_layer_that_overflows_is_named() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(stem=nn.Linear(4, 8), body=nn.Sequential(nn.Tanh(), Blowup()), head=nn.Linear(8, 2))
    )
    x = torch.randn(5, 4)
    where = locate_nonfinite(model, (x, torch.zeros(5)), NonFiniteStep(loss_finite=False, bad_grads=[]), FP32)
    assert where == "it first appeared in the output of layer body.1 (Blowup)"


def test_the_third_layer_of_a_sequential_is_named() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), Blowup(), nn.Linear(8, 2))
    where = locate_nonfinite(model, (torch.randn(5, 4),), NonFiniteStep(False, []), FP32)
    assert where == "it first appeared in the output of layer 2 (Blowup)"


def test_a_nan_in_the_input_is_reported_as_the_input() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    x = torch.randn(5, 4)
    x[3, 1] = float("nan")
    where = locate_nonfinite(model, (x, torch.zeros(5)), NonFiniteStep(False, []), FP32)
    assert where.startswith("the input batch itself holds NaN/inf values")


def test_non_finite_weights_are_reported_first() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        model[2].weight[1, 1] = float("inf")
    x = torch.randn(5, 4)
    x[0, 0] = float("nan")  # a non-finite input too: the weights are the older cause
    where = locate_nonfinite(model, (x,), NonFiniteStep(False, []), FP32)
    assert where == "the weights of 2.weight are already non-finite"


def test_a_finite_forward_with_a_non_finite_loss_blames_the_loss() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    where = locate_nonfinite(model, (torch.randn(5, 4),), NonFiniteStep(False, []), FP32)
    assert where == "every layer's output is finite, so the loss computation itself produced it"


def test_an_infinite_gradient_with_a_finite_loss_names_the_parameter() -> None:
    """The update is refused by Optimization (weights untouched, gradients cleared) and the
    gradient of the layer before the bad backward is named; the layer after it is not."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), InfGrad(), nn.Tanh(), nn.Linear(8, 2))
    optim = Optimization(torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    loss = F.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    with pytest.raises(NonFiniteStep) as info:
        optim.step(loss)
    error = info.value
    assert error.loss_finite is True and str(error) == "non-finite gradient"
    assert [p is q for p, q in zip(error.bad_grads, [model[0].weight, model[0].bias])] == [True, True]
    assert len(error.bad_grads) == 2  # not the parameters of layer 3, after the bad backward
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())
    where = locate_nonfinite(model, (x, y), error, FP32)
    assert where.startswith("it first appeared in the gradient of 0.bias (the non-finite layer nearest the loss; ")
    assert "2 parameter tensor(s) affected" in where


@pytest.mark.parametrize("fused", [False, True])
def test_adam_takes_no_step_on_an_infinite_gradient_fused_or_not(fused: bool) -> None:
    """optimizer.fused=true swaps Adam's update kernel, not the check before it: the update is
    refused, the weights are untouched and Adam's state (its step count, its moments) is not
    started; the next finite step then updates as the first one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), InfGrad(), nn.Tanh(), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=fused)
    assert optimizer.defaults["fused"] is fused
    optim = Optimization(optimizer)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    with pytest.raises(NonFiniteStep):
        optim.step(F.cross_entropy(model(x), y))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert len(optimizer.state) == 0
    optim.step(F.cross_entropy(model[2:](model[0](x)), y))  # around the bad layer: finite
    assert {int(s["step"]) for s in optimizer.state.values()} == {1}
    assert not torch.equal(model[0].weight, before[0])


def test_locating_leaves_no_trace_on_random_generators_and_batch_norm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), Blowup(), nn.Linear(8, 2)).train()
    model(torch.randn(16, 4))  # running statistics away from their initial values
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    random.seed(1)
    np.random.seed(1)
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()

    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))  # (not from the global generator)
    where = locate_nonfinite(model, (x,), NonFiniteStep(False, []), FP32)

    assert where == "it first appeared in the output of layer 3 (Blowup)"  # dropout ran: RNG was used
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1]) and after[2:] == np_state[2:]
    for key, b in model.named_buffers():
        assert torch.equal(b, buffers[key]), key
    assert int(buffers["1.num_batches_tracked"]) == 1
    assert model.training  # still in training mode


def test_finite_gradients_whose_norm_overflows_are_an_explosion_under_norm_clipping() -> None:
    """Gradients of 1e30 are finite, but their L2 norm (sqrt of a sum of 1e60 squares)
    overflows float32, and norm clipping would divide by it: the update is refused and the
    largest gradient is named."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 1, bias=False))
    optim = Optimization(torch.optim.SGD(model.parameters(), lr=0.1), rules=UpdateRules(gradient_clip_val=1.0))
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(torch.ones(2, 4)).sum() * 1e30
    with pytest.raises(NonFiniteStep) as caught:
        optim.step(loss)
    error = caught.value
    assert error.loss_finite and error.bad_grads == []
    assert error.largest_grad is not None
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters()))  # no update applied
    where = locate_nonfinite(model, (torch.ones(2, 4),), error, Precision("32", torch.device("cpu")))
    assert "total norm overflows" in where and re.search(r"largest in [01]\.weight", where)


def test_finite_gradients_whose_norm_overflows_are_applied_without_clipping() -> None:
    """Without norm clipping nothing divides by the norm: finite gradients, however large, are
    a finite update, and the check (NaN/inf in the losses and gradients) lets it through."""
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 1, bias=False))
    optim = Optimization(torch.optim.SGD(model.parameters(), lr=1e-30))
    before = [p.detach().clone() for p in model.parameters()]
    grads_seen = []
    model[0].weight.register_hook(lambda g: grads_seen.append(g.clone()))
    optim.step(model(torch.ones(2, 4)).sum() * 1e30)
    (grad,) = grads_seen
    assert torch.isfinite(grad).all() and torch.isinf(torch.nn.utils.get_total_norm([grad]))  # the norm overflows
    after = list(model.parameters())
    assert all(torch.isfinite(p).all() for p in after)
    assert torch.allclose(after[0], before[0] - 1e-30 * grad)  # the update was applied as is


def test_the_check_finds_a_nan_among_tensors_of_several_dtypes_and_resets() -> None:
    """One check over tensors of mixed dtypes (a float64 loss beside float32 and bfloat16
    gradients) finds the one NaN, leaves the values as they are, and starts clean next time."""
    from nnlab.engine.optim import any_nonfinite

    tensors = [
        torch.ones(3),
        torch.full((2,), 1e300, dtype=torch.float64),
        torch.tensor([1.0, float("nan")]).bfloat16(),
    ]
    assert any_nonfinite(tensors)
    assert tensors[1][0].item() == 1e300 and torch.isnan(tensors[2][1])  # (checked with a scale of 1: unchanged)
    assert not any_nonfinite(tensors[:2])  # the flag was cleared
    assert any_nonfinite([torch.tensor([float("-inf")], dtype=torch.float16)])
