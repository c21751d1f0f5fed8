"""The training-health monitor on real fits (digits, CPU), and the model summary.

Each fit is one to three epochs of digits (20 steps of 64 rows each) with a check every 5 steps,
so a condition held from the first check warns at step 15 (patience 3).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.optim.optimizer import _global_optimizer_pre_hooks

from helpers import compose_config
from nnlab.data.datamodule import DataModule
from nnlab.data.sklearn import digits
from nnlab.engine.health import HISTOGRAM_VALUES, HealthMonitor
from nnlab.engine.rng import seed_everything
from nnlab.engine.summary import model_summary
from nnlab.engine.tensorboard import TensorBoardLogger
from nnlab.engine.trainer import Trainer
from nnlab.errors import ConfigValueError
from nnlab.models.mlp import MLP
from nnlab.runs.build import build
from nnlab.tasks.supervised import Supervised

EVERY = 5
DIGITS_SHAPE = (1, 8, 8)


@functools.cache
def digits_data() -> Any:
    return digits()


def fit(
    model: nn.Module,
    tmp_path: Path,
    optimizer: Any = None,
    epochs: int = 1,
    extra_callbacks: tuple[Any, ...] = (),
    **monitor_args: Any,
) -> tuple[HealthMonitor, Trainer]:
    """Train `model` on digits (Adam 1e-3 unless `optimizer` is given) with a HealthMonitor
    checking every 5 steps, logging to tmp_path/tb."""
    monitor = HealthMonitor(every_n_steps=EVERY, **monitor_args)
    logger = TensorBoardLogger(str(tmp_path / "tb"))
    data = DataModule(digits_data(), batch_size=64, seed=0)
    optimizer = optimizer or functools.partial(torch.optim.Adam, lr=1e-3)
    task = Supervised(model, optimizer, class_names=data.class_names)
    trainer = Trainer(
        max_epochs=epochs,
        device="cpu",
        callbacks=[monitor, *extra_callbacks],
        logger=logger,
        output_dir=str(tmp_path),
    )
    try:
        trainer.fit(task, data)
    finally:
        logger.close()
    return monitor, trainer


def events(tmp_path: Path, folder: str = "tb") -> EventAccumulator:
    """The event files of a fit, read back the way TensorBoard reads them (every point kept)."""
    accumulator = EventAccumulator(str(tmp_path / folder), size_guidance={"scalars": 0, "histograms": 0})
    accumulator.Reload()
    return accumulator


def weight_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.ndim >= 2]


# ---- the warnings -----------------------------------------------------------------------------
def test_a_deep_sigmoid_mlp_warns_of_vanishing_gradients(tmp_path: Path) -> None:
    """12 sigmoid layers: each multiplies the backward signal by sigmoid' <= 1/4 times a weight
    of size ~1/sqrt(fan_in), so the input layer's gradient is ~1e-10 of the output layer's."""
    torch.manual_seed(0)
    model = MLP(DIGITS_SHAPE, 10, hidden_sizes=[32] * 12, activation="sigmoid")
    monitor, _ = fit(model, tmp_path)
    assert len(monitor.warnings) == 1  # once, though the condition holds at every check
    (message,) = monitor.warnings
    first, last = weight_names(model)[0], weight_names(model)[-1]
    assert message.startswith("Vanishing gradients (step 15)")
    assert f"({first}:" in message and f"({last}:" in message
    assert "init=kaiming_normal" in message and "model.batch_norm=true" in message

    grads = events(tmp_path)
    ratios = [
        a.value / b.value
        for a, b in zip(grads.Scalars(f"health/grad_norm/{first}"), grads.Scalars(f"health/grad_norm/{last}"))
    ]
    assert len(ratios) == 4 and all(r < 1e-6 for r in ratios)


def test_a_deep_mlp_with_a_large_init_warns_of_exploding_gradients(tmp_path: Path) -> None:
    """8 ReLU layers drawn with 3x He's standard deviation: the signal grows 3x per layer, the
    logits reach ~1e4 and the gradients ~5e4. A tiny learning rate keeps it from diverging."""
    torch.manual_seed(0)
    model = MLP(DIGITS_SHAPE, 10, hidden_sizes=[64] * 8)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=3 * math.sqrt(2 / module.in_features))
    monitor, _ = fit(model, tmp_path, optimizer=functools.partial(torch.optim.SGD, lr=1e-7))
    assert len(monitor.warnings) == 1
    (message,) = monitor.warnings
    assert message.startswith("Exploding gradients (step 15)")
    assert "explode_norm=1000" in message
    assert "trainer.gradient_clip_val=1.0" in message and "optimizer.lr=1e-08" in message
    largest = message.split("Largest: ")[1].split(". ")[0]
    assert all(name in weight_names(model) for name in [item.split()[0] for item in largest.split(", ")])
    totals = [e.value for e in events(tmp_path).Scalars("health/grad_norm_total")]
    assert len(totals) == 4 and all(t > 1e4 for t in totals)


def test_the_default_experiment_is_healthy(tmp_path: Path) -> None:
    """MLP [256, 128], relu, batch norm, dropout 0.2, Adam 1e-3 on digits, built from the default
    config (whose `callbacks.health` node builds the monitor): no warning over 3 epochs, and every
    signal in its healthy range."""
    cfg = compose_config(
        [
            "trainer.max_epochs=3",
            "trainer.device=cpu",
            "callbacks.progress=null",
            f"callbacks.health.every_n_steps={EVERY}",
        ],
        tmp_path,
    )
    seed_everything(cfg.seed)
    parts = build(cfg)
    monitor = parts.callbacks["health"]
    assert isinstance(monitor, HealthMonitor)
    try:
        parts.trainer.fit(parts.task, parts.data)
    finally:
        parts.logger.close()
    assert monitor.warnings == []

    ev = events(tmp_path, ".")  # the run folder holds its event files
    scalars, histograms = set(ev.Tags()["scalars"]), set(ev.Tags()["histograms"])
    weights = weight_names(parts.model)
    checks = list(range(EVERY, 3 * 20 + 1, EVERY))  # 5, 10, ..., 60
    assert [e.step for e in ev.Scalars("health/grad_norm_total")] == checks
    assert all(0.1 < e.value < 10 for e in ev.Scalars("health/grad_norm_total"))
    for name in weights:
        assert [e.step for e in ev.Scalars(f"health/grad_norm/{name}")] == checks
        ratios = [e.value for e in ev.Scalars(f"health/update_ratio/{name}")]
        assert len(ratios) == len(checks)
        assert all(math.isfinite(r) and 1e-5 < r < 1e-1 for r in ratios), (name, ratios)
        assert {f"hist/weight/{name}", f"hist/grad/{name}"} <= histograms
    relus = [name for name, m in parts.model.named_modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 2
    for name in relus:
        assert f"hist/activation/{name}" in histograms
        fractions = [e.value for e in ev.Scalars(f"health/dead_relu/{name}")]
        assert len(fractions) == len(checks) and all(0.0 <= f <= 1.0 for f in fractions)
    # Only weight matrices get per-layer entries: not the batch-norm scales and shifts.
    assert not any(tag.startswith("health/grad_norm/") and not tag.endswith(tuple(weights)) for tag in scalars)
    assert [e.step for e in ev.Histograms(f"hist/grad/{weights[0]}")] == checks
    # A histogram holds the whole tensor, or an even-strided sample of HISTOGRAM_VALUES at most.
    for name in (weights[0], weights[-1]):  # 256 x 64 = 16384 values: every second one; 10 x 128: all
        n = dict(parts.model.named_parameters())[name].numel()
        kept = math.ceil(n / math.ceil(n / HISTOGRAM_VALUES))
        assert all(e.histogram_value.num == kept for e in ev.Histograms(f"hist/weight/{name}"))
        assert kept == (n if n <= HISTOGRAM_VALUES else n // 2)


def test_exploding_rule_growth_patience_and_one_warning_per_episode() -> None:
    """Driven check by check: a tenfold-plus growth counts like a norm above explode_norm, a
    normal check resets the count, and a warning repeats only after the condition cleared."""
    monitor = HealthMonitor(explode_norm=1e9, patience=3)
    trainer = SimpleNamespace(task=SimpleNamespace(learning_rates=lambda: {"lr": 0.1}))

    def check(*totals: float) -> int:
        for step, total in enumerate(totals):
            monitor._check_exploding(total, {"w": total}, trainer, step)
        return len(monitor.warnings)

    assert check(2.0, 1.0, 5.0, 3.0, 40.0, 1.0, 0.5) == 0  # noisy but not growing check after check
    assert check(0.01, 0.2, 4.0, 80.0) == 1  # 20x, 20x, 20x: the third in a row warns
    assert "20x the previous check's" in monitor.warnings[0] and "optimizer.lr=0.01" in monitor.warnings[0]
    assert check(2000.0, float("nan"), float("inf")) == 1  # still exploding: no repeat
    assert check(1.0, 1.0) == 1  # cleared ...
    assert check(30.0, 900.0, 27000.0) == 2  # ... and back: warned again


# ---- what is measured -------------------------------------------------------------------------
class HookProbe:
    """A callback after the monitor: after every step, counts the hooks left on the model and
    the global optimizer hooks, and recomputes update ratios from its own weight copies."""

    def __init__(self) -> None:
        self.hooks: dict[int, int] = {}
        self.before: dict[str, torch.Tensor] = {}
        self.ratios: dict[int, dict[str, float]] = {}
        self.deltas: dict[int, dict[str, float]] = {}

    def on_train_batch_end(self, trainer: Trainer) -> None:
        model = trainer.task.model
        step = trainer.global_step
        if self.before:
            ratios, deltas = {}, {}
            for name, p in model.named_parameters():
                if name in self.before:
                    delta = (p.detach() - self.before[name]).norm().item()
                    ratios[name] = delta / self.before[name].norm().item()
                    deltas[name] = delta
            self.ratios[step], self.deltas[step] = ratios, deltas
        self.hooks[step] = count_hooks(model)
        armed = step % EVERY == EVERY - 1
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.ndim >= 2} if armed else {}


def count_hooks(model: nn.Module) -> int:
    forward = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    grads = sum(len(p._post_accumulate_grad_hooks or {}) + len(p._backward_hooks or {}) for p in model.parameters())
    return forward + grads + len(_global_optimizer_pre_hooks)


def test_hooks_live_only_for_the_checked_step_and_ratios_are_exact(tmp_path: Path) -> None:
    """With plain SGD the update is -lr * grad, so ||dW|| = lr * ||grad||: the logged gradient
    norm is the one the step used, and the logged update ratio matches a copy taken outside."""
    torch.manual_seed(0)
    model = MLP(DIGITS_SHAPE, 10, hidden_sizes=[32, 32])
    probe = HookProbe()
    lr = 0.05
    monitor, _ = fit(model, tmp_path, optimizer=functools.partial(torch.optim.SGD, lr=lr), extra_callbacks=(probe,))
    relus = 2
    armed_steps = [s for s in probe.hooks if s % EVERY == EVERY - 1]
    assert armed_steps == [4, 9, 14, 19]
    for step, n in probe.hooks.items():
        # Armed: one forward hook per ReLU and one optimizer step pre-hook; otherwise nothing.
        assert n == (relus + 1 if step in armed_steps else 0), (step, n)
    assert count_hooks(model) == 0 and monitor._handles == [] and monitor._before == {}  # after fit

    ev = events(tmp_path)
    for name in weight_names(model):
        logged = {e.step: e.value for e in ev.Scalars(f"health/update_ratio/{name}")}
        grads = {e.step: e.value for e in ev.Scalars(f"health/grad_norm/{name}")}
        assert sorted(logged) == [5, 10, 15, 20]
        for step, value in logged.items():
            assert value > 0 and math.isfinite(value)
            assert value == pytest.approx(probe.ratios[step][name], rel=1e-4)
            assert lr * grads[step] == pytest.approx(probe.deltas[step][name], rel=1e-4)


def test_dead_units_per_feature_and_per_conv_channel(tmp_path: Path) -> None:
    """A unit whose pre-activation is negative for every sample is dead: 3 of 4 conv channels
    (bias -100 against standardized pixels) and 2 of 4 dense units (zero weights, bias -1), by
    construction. Dead units get no gradient, so they stay dead and the fractions stay exact."""
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    dense = nn.Linear(4 * 8 * 8, 4)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([-100.0, -100.0, -100.0, 0.0]))
        dense.weight.zero_()
        dense.bias.copy_(torch.tensor([-1.0, -1.0, 1.0, 1.0]))
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), dense, nn.ReLU(), nn.Linear(4, 10), nn.Sigmoid())
    fit(model, tmp_path, histograms=False)
    ev = events(tmp_path)
    assert [e.value for e in ev.Scalars("health/dead_relu/1")] == [0.75] * 4  # per channel
    assert [e.value for e in ev.Scalars("health/dead_relu/4")] == [0.5] * 4  # per feature
    assert "health/dead_relu/6" not in ev.Tags()["scalars"]  # a sigmoid has no dead units
    assert ev.Tags()["histograms"] == []  # histograms=false


def test_the_config_node_and_its_checks(tmp_path: Path) -> None:
    assert compose_config([], tmp_path).callbacks.health.every_n_steps == 100
    assert compose_config(["callbacks.health=null"], tmp_path).callbacks.health is None
    with pytest.raises(ConfigValueError, match=r"callbacks.health.every_n_steps=0 is out of range"):
        HealthMonitor(every_n_steps=0)
    with pytest.raises(ConfigValueError, match=r"callbacks.health.vanish_ratio=2"):
        HealthMonitor(vanish_ratio=2)


# ---- the model summary ------------------------------------------------------------------------
class Noisy(nn.Module):
    """Draws random numbers in forward, even in eval mode: the summary must not move the RNG."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp = MLP(DIGITS_SHAPE, 10, hidden_sizes=[16], dropout=0.5, batch_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x) + 0.0 * torch.randn(len(x), 10)


def test_summary_counts_shapes_and_leaves_no_trace() -> None:
    model = Noisy()
    model.mlp.net[1].requires_grad_(False)  # freeze the first Linear
    model.train()
    model.mlp.net[2].eval()  # a submodule in another mode than its parent keeps it
    example = torch.randn(2, *DIGITS_SHAPE)
    rng = torch.get_rng_state()
    text = model_summary(model, example)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and model.mlp.net[1].training and not model.mlp.net[2].training
    assert count_hooks(model) == 0

    total = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.mlp.net[1].parameters())
    assert f"Total params:         {total:,}" in text
    assert f"Trainable params:     {total - frozen:,}" in text
    assert "Input shape:          (2, 1, 8, 8)" in text
    assert "Output shape:         (2, 10)" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("mlp.net.")}
    assert rows["mlp.net.1"] == ["mlp.net.1", "Linear", "(2,", "16)", f"{16 * 64:,}"]  # no bias before batch norm
    assert rows["mlp.net.5"][-3:] == ["(2,", "10)", "170"]
    assert "mlp" not in rows and "(model)" not in text  # containers with no parameters of their own


def test_summary_of_a_model_whose_forward_fails() -> None:
    model = MLP(DIGITS_SHAPE, 10, hidden_sizes=[16])
    text = model_summary(model, torch.randn(2, 3))  # 3 features, the MLP wants 64
    assert "(No shapes: model(example) failed with RuntimeError: mat1 and mat2 shapes" in text
    assert "Output shape" not in text
    assert text.splitlines()[0].split() == ["Layer", "Type", "Params"]
    assert f"Total params:         {sum(p.numel() for p in model.parameters()):,}" in text
    assert count_hooks(model) == 0
    assert model_summary(model).splitlines()[0].split() == ["Layer", "Type", "Params"]  # no example
