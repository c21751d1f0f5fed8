"""The training toolkit's update rules: L1/L2 penalties, max-norm, EMA, gradient clipping and
gradient accumulation (nnlab.engine.optim, nnlab.engine.regularization), and the options'
checks: ranges, and tasks that learn without gradients refusing them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

import nnlab.runs.pipeline
from helpers import TINY, Run, compose_config, run_cli, train_tiny
from nnlab.cli.app import user_error_message
from nnlab.engine.optim import Optimization, UpdateRules
from nnlab.engine.precision import Precision
from nnlab.engine.regularization import Regularization

CPU = torch.device("cpu")

# A plain MLP on digits: no batch norm (its parameters would be exempt from penalties anyway, but
# its buffers change on every forward), no dropout, so the state dict holds only weights.
PLAIN = (
    "trainer.device=cpu",
    "model.hidden_sizes=[32]",
    "model.batch_norm=false",
    "model.dropout=0",
    "callbacks.health=null",
    "logger=none",
    "trainer.summary=false",
)
PLAIN_SGD = (*PLAIN, "optimizer=sgd", "optimizer.momentum=0")  # no momentum: each update is -lr * grad


def synthetic(n: int = 256, features: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g, dtype=torch.float64)
    return x, torch.randint(0, classes, (n,), generator=g)


def bias_free(seed: int = 0) -> nn.Module:
    """Only weight matrices, so a penalty on ndim >= 2 covers every parameter (as weight_decay does)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16, bias=False), nn.Tanh(), nn.Linear(16, 3, bias=False)).double()


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3)).double()


def train_steps(model: nn.Module, optim: Optimization, steps: int, batch: int = 64, scale: float = 1.0) -> None:
    x, y = synthetic()
    for i in range(steps):
        rows = slice((i * batch) % len(x), (i * batch) % len(x) + batch)
        optim.step(scale * F.cross_entropy(model(x[rows]), y[rows]))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class RecordingSGD(torch.optim.SGD):
    """SGD that records, at each step, the global L2 norm and the largest entry of the gradients
    it is about to apply: what clipping left of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[float, float]] = []

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        norm = float(torch.nn.utils.get_total_norm(grads))
        self.seen.append((norm, max(float(g.abs().max()) for g in grads)))
        return super().step(closure)


def first_layer_zero_fraction(run: Run) -> float:
    w = run.checkpoint()["model"]["net.1.weight"]  # net.0 is the Flatten
    return float((w.abs() < 1e-3).float().mean())


# --- penalties ------------------------------------------------------------------------------------


def test_l1_drives_many_more_first_layer_weights_to_zero_than_l2(tmp_path: Path) -> None:
    """200 plain-SGD steps (10 epochs of 20) at the same strength. L1's pull lr * l1 = 3e-4 per
    step does not shrink with the weight, so weights of uninformative pixels reach zero and then
    hover within 3e-4 of it; L2's pull lr * l2 * w shrinks w by only 0.03% a step.
    Observed fractions of |w| < 1e-3: L1 0.257, L2 0.007, no penalty 0.004 (0.368, 0.006 and
    0.005 after 300 steps)."""
    common = [*PLAIN_SGD, "optimizer.lr=0.1", "trainer.max_epochs=10", "trainer.limit_train_batches=null"]
    fraction = {
        name: first_layer_zero_fraction(train_tiny([*common, override], tmp_path / name))
        for name, override in (
            ("none", "regularization.l1=0"),
            ("l1", "regularization.l1=3e-3"),
            ("l2", "regularization.l2=3e-3"),
        )
    }
    assert fraction["l1"] > 0.15, fraction
    assert fraction["l1"] > 10 * fraction["l2"], fraction
    assert fraction["l1"] > 10 * fraction["none"], fraction
    assert fraction["l2"] < 0.05 and fraction["none"] < 0.05, fraction


def test_penalty_values_skip_biases() -> None:
    model = mlp()
    w1, b1, w2, b2 = model.parameters()
    with torch.no_grad():  # (the parameters still require grad: frozen ones are skipped)
        l1 = Regularization(l1=0.1).penalty(model.parameters())
        l2 = Regularization(l2=0.1).penalty(model.parameters())
        both = Regularization(l1=0.1, l2=0.1).penalty(model.parameters())
        sum_abs, sum_squares = float(w1.abs().sum() + w2.abs().sum()), float(w1.pow(2).sum() + w2.pow(2).sum())
    assert float(l1) == pytest.approx(0.1 * sum_abs)
    assert float(l2) == pytest.approx(0.05 * sum_squares)
    assert float(both) == pytest.approx(float(l1) + float(l2))
    assert Regularization().penalty(model.parameters()) == 0.0  # off: no graph at all
    model[0].weight.requires_grad_(False)  # a frozen layer is not penalized
    with torch.no_grad():
        frozen = Regularization(l1=0.1).penalty(model.parameters())
        assert float(frozen) == pytest.approx(0.1 * float(w2.abs().sum()))


def test_l2_penalty_with_plain_sgd_equals_weight_decay() -> None:
    lam = 0.05
    decayed, penalized = bias_free(), bias_free()
    train_steps(decayed, Optimization(torch.optim.SGD(decayed.parameters(), lr=0.3, weight_decay=lam)), steps=12)
    rules = UpdateRules(regularization=Regularization(l2=lam))
    train_steps(penalized, Optimization(torch.optim.SGD(penalized.parameters(), lr=0.3), rules=rules), steps=12)
    start = weights(bias_free())
    for a, b, w0 in zip(decayed.parameters(), penalized.parameters(), start):
        assert not torch.allclose(a, w0, atol=1e-3)  # the runs moved ...
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)  # ... along the same path


def test_l2_penalty_in_adam_is_coupled_decay_not_adamw() -> None:
    """With Adam the penalty's gradient is rescaled like any other: it equals Adam's own (coupled)
    weight_decay, and differs from AdamW's decoupled decay at the same strength."""
    lam, lr = 0.1, 0.01
    penalized, coupled, decoupled = bias_free(), bias_free(), bias_free()
    rules = UpdateRules(regularization=Regularization(l2=lam))
    train_steps(penalized, Optimization(torch.optim.Adam(penalized.parameters(), lr=lr), rules=rules), steps=20)
    train_steps(coupled, Optimization(torch.optim.Adam(coupled.parameters(), lr=lr, weight_decay=lam)), steps=20)
    train_steps(decoupled, Optimization(torch.optim.AdamW(decoupled.parameters(), lr=lr, weight_decay=lam)), steps=20)
    for p, c, d in zip(penalized.parameters(), coupled.parameters(), decoupled.parameters()):
        torch.testing.assert_close(p, c, rtol=1e-10, atol=1e-10)
        assert (p - d).abs().max() > 1e-3  # distinct options, visibly different weights


# --- gradient clipping ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm, val", [("norm", 1.0), ("value", 0.01)])
def test_clipping_bounds_the_gradients_the_optimizer_applies(algorithm: str, val: float) -> None:
    model = mlp()
    optimizer = RecordingSGD(model.parameters(), lr=1e-3)
    rules = UpdateRules(gradient_clip_val=val, gradient_clip_algorithm=algorithm)
    train_steps(model, Optimization(optimizer, rules=rules), steps=3, scale=1e4)  # a huge loss
    free_model = mlp()
    free = RecordingSGD(free_model.parameters(), lr=1e-3)
    train_steps(free_model, Optimization(free), steps=1, scale=1e4)
    free_norm, free_largest = free.seen[0]
    assert free_norm > 100 * val and free_largest > 100 * val  # clipping had work to do
    assert len(optimizer.seen) == 3
    for norm, largest in optimizer.seen:
        if algorithm == "norm":
            assert norm == pytest.approx(val, rel=1e-5)  # rescaled to the threshold, not below
        else:
            assert largest == pytest.approx(val)  # the largest entries are clamped to +-val


def test_clipping_by_norm_keeps_the_direction_and_changes_only_large_updates() -> None:
    def one_update(clip: float | None) -> list[torch.Tensor]:
        model = mlp()
        before = weights(model)
        rules = UpdateRules(gradient_clip_val=clip)
        train_steps(model, Optimization(torch.optim.SGD(model.parameters(), lr=0.1), rules=rules), steps=1, scale=100.0)
        return [w - w0 for w, w0 in zip(weights(model), before)]

    free = one_update(None)
    grad_norm = float(torch.nn.utils.get_total_norm(free)) / 0.1  # the update is -lr * grad
    untouched = one_update(2 * grad_norm)  # a threshold above the norm: bit-identical update
    assert all(torch.equal(a, b) for a, b in zip(free, untouched))
    clipped = one_update(grad_norm / 4)  # a quarter of the norm: a quarter as long, same direction
    for a, b in zip(free, clipped):
        torch.testing.assert_close(b, a / 4, rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_through_the_config_bounds_a_real_update(algorithm: str, tmp_path: Path) -> None:
    """Digits, SGD with lr 1: the update of step 2 (last.ckpt minus the step-1 snapshot) is the
    clipped gradient itself, so its global norm (or every entry) is at most the threshold."""
    common = [*PLAIN_SGD, "optimizer.lr=1.0", "callbacks.model_checkpoint.every_n_train_steps=1"]

    def step2_update(run: Run) -> list[torch.Tensor]:
        first, last = run.checkpoint("step-000001"), run.checkpoint("last")
        assert last["global_step"] == 2
        return [last["model"][k] - first["model"][k] for k in last["model"]]

    free = step2_update(train_tiny(common, tmp_path / "free"))
    clip = 1e-3 if algorithm == "norm" else 1e-4
    clipped = step2_update(
        train_tiny(
            [*common, f"trainer.gradient_clip_val={clip}", f"trainer.gradient_clip_algorithm={algorithm}"],
            tmp_path / algorithm,
        )
    )
    if algorithm == "norm":
        assert float(torch.nn.utils.get_total_norm(free)) > 100 * clip
        assert float(torch.nn.utils.get_total_norm(clipped)) == pytest.approx(clip, rel=1e-3)
    else:
        assert max(float(d.abs().max()) for d in free) > 100 * clip
        assert max(float(d.abs().max()) for d in clipped) == pytest.approx(clip, rel=1e-3)


# --- max-norm -------------------------------------------------------------------------------------


def test_max_norm_caps_every_row_of_every_linear_weight(tmp_path: Path) -> None:
    """PyTorch's default init gives the first layer's rows norms of about sqrt(64 / 3) / 8 = 0.58;
    two updates with lr 1 push them further. With max_norm 0.5 none may end above it."""
    common = [*PLAIN_SGD, "model.hidden_sizes=[32,16]", "optimizer.lr=1.0"]
    capped = train_tiny([*common, "regularization.max_norm=0.5"], tmp_path / "capped").checkpoint()["model"]
    free = train_tiny(common, tmp_path / "free").checkpoint()["model"]
    matrices = [k for k, w in capped.items() if w.ndim == 2]
    assert matrices == ["net.1.weight", "net.3.weight", "net.5.weight"]
    for key in matrices:
        rows = capped[key].norm(dim=1)
        assert float(rows.max()) <= 0.5 + 1e-6, key
    assert float(capped["net.1.weight"].norm(dim=1).max()) == pytest.approx(0.5, rel=1e-5)  # reached it
    assert float(free["net.1.weight"].norm(dim=1).max()) > 0.6  # and without the cap it is exceeded


def test_max_norm_renorms_rows_and_leaves_biases_alone() -> None:
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0, 0, 0], [0.3, 0.4, 0, 0], [0, 0, 0, 12.0]]))
        layer.bias.fill_(10.0)
    Regularization(max_norm=2.0).constrain(layer.parameters())
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.tensor([2.0, 0.5, 2.0]))
    torch.testing.assert_close(layer.weight[0], torch.tensor([1.2, 1.6, 0, 0]), rtol=1e-5, atol=1e-6)  # direction kept
    assert torch.equal(layer.bias, torch.full((3,), 10.0))


# --- gradient accumulation ------------------------------------------------------------------------


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    """Mean-reduced loss, no batch norm: two backward passes on 32 rows, each loss halved, give the
    gradient of the 64 rows together; Adam then takes the same steps, half as many times."""
    x, y = synthetic()
    full, halves = mlp(), mlp()
    full_optim = Optimization(torch.optim.Adam(full.parameters(), lr=0.01))
    rules = UpdateRules(accumulate_grad_batches=2)
    half_optim = Optimization(torch.optim.Adam(halves.parameters(), lr=0.01), rules=rules)
    for i in range(4):
        rows = slice(64 * i, 64 * i + 64)
        full_optim.step(F.cross_entropy(full(x[rows]), y[rows]))
    for i in range(8):
        rows = slice(32 * i, 32 * i + 32)
        update = i % 2 == 1
        half_optim.step(F.cross_entropy(halves(x[rows]), y[rows]), update)
        if not update:
            assert all(p.grad is not None for p in halves.parameters())  # held for the next batch
    for a, b in zip(full.parameters(), halves.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    first = halves.parameters().__next__()
    assert int(half_optim.optimizer.state[first]["step"]) == 4  # 8 batches, 4 updates


def adam_steps(run: Run) -> int:
    state = run.checkpoint()["task"]["optim"]["optimizer"]["state"]
    return int(state[0]["step"])


def test_trainer_updates_every_k_batches_and_on_the_last_odd_batch(tmp_path: Path) -> None:
    """3 batches an epoch with k = 2: the window [1, 2] updates, and so does the lone batch 3 at the
    epoch's end (no gradient is carried into the next epoch): 2 updates an epoch, 4 in 2 epochs.
    The per-step OneCycle schedule is sized to those 4 updates and steps once per update."""
    common = [*PLAIN, "trainer.max_epochs=2", "trainer.limit_train_batches=3"]  # Adam
    accumulated = train_tiny([*common, "scheduler=onecycle", "trainer.accumulate_grad_batches=2"], tmp_path / "k2")
    every_batch = train_tiny(common, tmp_path / "k1")
    assert adam_steps(accumulated) == 4
    assert adam_steps(every_batch) == 6
    scheduler = accumulated.checkpoint()["task"]["optim"]["scheduler"]
    assert scheduler["total_steps"] == 4 and scheduler["last_epoch"] == 4
    assert accumulated.checkpoint()["global_step"] == 6  # steps still count batches


# --- EMA ------------------------------------------------------------------------------------------


def evaluate_with(run: Run, state: dict[str, torch.Tensor], split: str = "val") -> dict[str, float]:
    """Score `split` of the run's data with the model weights `state`, outside the run."""
    cfg = run.cfg.copy()
    cfg.logger = None  # no second TensorBoard writer in the run's folder
    parts = nnlab.runs.pipeline.build(cfg)
    parts.data.setup(CPU)
    parts.task.configure(CPU, Precision("32", CPU), total_steps=1)
    parts.task.model.load_state_dict(state)
    return parts.task.evaluate(parts.data.eval_batches(split))


def test_ema_is_checkpointed_and_used_for_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two updates with decay 0.5: the EMA is 0.5 * w1 + 0.5 * w2 (the first update copies w1).
    Validation scores the EMA weights, and the model holds the raw weights after the run."""
    built: list[nnlab.runs.pipeline.Parts] = []
    build = nnlab.runs.pipeline.build

    def keep_parts(cfg):
        built.append(build(cfg))
        return built[-1]

    monkeypatch.setattr(nnlab.runs.pipeline, "build", keep_parts)
    run = train_tiny(
        ["trainer.device=cpu", "regularization.ema_decay=0.5", "callbacks.model_checkpoint.every_n_train_steps=1"],
        tmp_path / "run",
    )
    monkeypatch.setattr(nnlab.runs.pipeline, "build", build)
    w1, last = run.checkpoint("step-000001")["model"], run.checkpoint("last")
    w2, ema = last["model"], last["ema"]
    assert int(ema["n_averaged"]) == 2
    averaged = {k[len("module.") :]: v for k, v in ema.items() if k.startswith("module.")}
    assert averaged.keys() == w2.keys()
    params = [k for k in w2 if k.endswith(("weight", "bias"))]
    for key in params:
        torch.testing.assert_close(averaged[key], 0.5 * w1[key] + 0.5 * w2[key])
    assert any(not torch.equal(averaged[k], w2[k]) for k in params)

    with_ema = evaluate_with(run, averaged)["loss"]
    with_raw = evaluate_with(run, w2)["loss"]
    assert run.metrics["val/loss"] == pytest.approx(with_ema, rel=1e-6)
    assert with_raw != pytest.approx(with_ema, rel=1e-4)
    model_after = built[0].task.model.state_dict()
    assert all(torch.equal(model_after[k], w2[k]) for k in w2)  # the raw weights are back


# --- tasks without gradients ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, key, task",
    [
        (["experiment=digits_som", "trainer.gradient_clip_val=1"], "trainer.gradient_clip_val", "som"),
        (["experiment=digits_som", "regularization.max_norm=2"], "regularization.max_norm", "som"),
        (["model=perceptron", "regularization.l1=0.1"], "regularization.l1", "perceptron"),
        (["model=perceptron", "regularization.l2=0.1"], "regularization.l2", "perceptron"),
        (["model=perceptron", "trainer.accumulate_grad_batches=2"], "trainer.accumulate_grad_batches", "perceptron"),
    ],
)
def test_gradient_free_tasks_refuse_gradient_options(overrides: list[str], key: str, task: str, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        train_tiny(["trainer.device=cpu", "logger=none", *overrides], tmp_path)
    message = user_error_message(info.value)
    assert message is not None, info.value  # a user error, not a crash
    assert key in message and f"task={task}" in message
    assert "without gradients" in message


@pytest.mark.parametrize("overrides", [["model=perceptron"], ["experiment=digits_som"]])
def test_gradient_free_tasks_accept_ema(overrides: list[str], tmp_path: Path) -> None:
    run = train_tiny(["trainer.device=cpu", "logger=none", "regularization.ema_decay=0.5", *overrides], tmp_path)
    state = run.checkpoint()
    assert state["ema"] is not None and int(state["ema"]["n_averaged"]) >= 1
    assert state["ema"].keys() - {"n_averaged"} == {f"module.{k}" for k in state["model"]}


# --- bad values ------------------------------------------------------------------------------------

BAD_VALUES = [
    ("regularization.l1=-1", "regularization.l1", ">= 0"),
    ("regularization.l2=-0.5", "regularization.l2", ">= 0"),
    ("regularization.ema_decay=1.0", "regularization.ema_decay", "(0.0, 1.0)"),
    ("regularization.max_norm=0", "regularization.max_norm", "> 0"),
    ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val", "> 0"),
    ("trainer.gradient_clip_algorithm=clamp", "trainer.gradient_clip_algorithm", "Choose one of: norm, value"),
    ("trainer.gradient_clip_algorithm=nrom", "trainer.gradient_clip_algorithm", "Did you mean 'norm'?"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches", ">= 1"),
    ("trainer.nonfinite=skp", "trainer.nonfinite", "Did you mean 'skip'?"),
    ("trainer.max_consecutive_skips=0", "trainer.max_consecutive_skips", ">= 1"),
]


@pytest.mark.parametrize("override, key, hint", BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_bad_value_names_the_key(override: str, key: str, hint: str, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        train_tiny(["trainer.device=cpu", "logger=none", override], tmp_path)
    message = user_error_message(info.value)
    assert message is not None, info.value
    assert message.startswith(key) and hint in message, message


def test_bad_value_on_the_command_line(tmp_path: Path) -> None:
    result = run_cli([*TINY, "trainer.gradient_clip_algorithm=clamp", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: trainer.gradient_clip_algorithm='clamp'"), result.stderr
    assert "norm, value" in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_regularization_defaults_are_all_off(tmp_path: Path) -> None:
    """The group's defaults are all off, so a run without overrides has no regularizer at work."""
    cfg = compose_config([], tmp_path)
    regularization = instantiate(cfg.regularization)
    assert (regularization.l1, regularization.l2, regularization.max_norm, regularization.ema_decay) == (
        0.0,
        0.0,
        None,
        None,
    )
    assert regularization.gradient_options() == []
