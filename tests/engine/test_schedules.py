"""LR schedules: every scheduler config builds, steps and survives a checkpoint; the new schedules
follow their formulas; WarmupCosineLR checks its arguments and resumes exactly."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from helpers import options
from nnlab.engine.optim import build_scheduler
from nnlab.engine.schedules import WarmupCosineLR
from nnlab.errors import ConfigValueError

LR = 0.1
TOTAL_STEPS = 40  # what build_scheduler hands schedules that take total_steps


def sgd(lr: float = LR) -> torch.optim.SGD:
    torch.manual_seed(0)
    return torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=lr, momentum=0.9)


def update(optimizer: torch.optim.Optimizer) -> None:
    """One real optimizer step, so momentum buffers exist and torch sees step() before the schedule's."""
    loss = sum(p.square().sum() for group in optimizer.param_groups for p in group["params"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def advance(scheduler, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """Step the optimizer and the schedule `steps` times; the lr used by each update."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        update(optimizer)
        if isinstance(scheduler, ReduceLROnPlateau):
            scheduler.step(1.0)  # a metric that never improves: the plateau schedule acts
        else:
            scheduler.step()
    return lrs


def roundtrip(state: dict) -> dict:
    """What a checkpoint does to a state: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", options("scheduler"))
def test_every_scheduler_config_builds_steps_and_resumes(name: str, compose_cfg, tmp_path: Path) -> None:
    """Each configs/scheduler/*.yaml, composed as a run composes it and built as a task builds it,
    steps, and after save + load(weights_only=True) into fresh objects it continues with the same
    lrs as the schedule that was never interrupted."""
    cfg = compose_cfg([f"scheduler={name}", "optimizer=sgd", f"optimizer.lr={LR}", "trainer.max_epochs=4"], tmp_path)
    factory = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    optimizer = sgd()
    scheduler = build_scheduler(factory, optimizer, total_steps=TOTAL_STEPS)
    if name == "none":
        assert scheduler is None
        return

    half = TOTAL_STEPS // 2
    before = advance(scheduler, optimizer, half)
    state = roundtrip({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    uninterrupted = advance(scheduler, optimizer, TOTAL_STEPS - half)
    assert all(math.isfinite(lr) and lr >= 0 for lr in before + uninterrupted)
    assert len(set(before + uninterrupted)) > 1, f"scheduler={name} never changed the lr"

    fresh_optimizer = sgd()
    fresh = build_scheduler(factory, fresh_optimizer, total_steps=TOTAL_STEPS)
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh.load_state_dict(state["scheduler"])
    assert advance(fresh, fresh_optimizer, TOTAL_STEPS - half) == uninterrupted


def test_the_new_configs_exist() -> None:
    assert {"multistep", "exponential", "cosine_warmup"} <= set(options("scheduler"))


def built(name: str, compose_cfg, tmp_path: Path, total_steps: int = TOTAL_STEPS, extra: tuple[str, ...] = ()):
    cfg = compose_cfg([f"scheduler={name}", *extra], tmp_path)
    optimizer = sgd()
    return optimizer, build_scheduler(instantiate(cfg.scheduler), optimizer, total_steps=total_steps)


def test_multistep_divides_by_ten_at_each_milestone(compose_cfg, tmp_path: Path) -> None:
    """Defaults: milestones [15, 25] (epochs of the default 30-epoch run), gamma 0.1."""
    optimizer, scheduler = built("multistep", compose_cfg, tmp_path)
    lrs = advance(scheduler, optimizer, 30)  # the lr of each epoch (stepped once per epoch)
    for epoch in (0, 14):
        assert lrs[epoch] == pytest.approx(LR)
    for epoch in (15, 24):
        assert lrs[epoch] == pytest.approx(LR * 0.1)
    for epoch in (25, 29):
        assert lrs[epoch] == pytest.approx(LR * 0.01)


def test_exponential_multiplies_by_gamma_every_epoch(compose_cfg, tmp_path: Path) -> None:
    optimizer, scheduler = built("exponential", compose_cfg, tmp_path)
    lrs = advance(scheduler, optimizer, 30)
    for epoch in (0, 1, 7, 29):
        assert lrs[epoch] == pytest.approx(LR * 0.9**epoch)
    assert lrs[29] == pytest.approx(0.047 * LR, rel=0.01)  # as the YAML's comment says


def warmup_cosine(t: int, total: int, warmup: int, start_factor: float, eta_min: float) -> float:
    """The lr after t steps: a linear ramp from LR * start_factor to LR, then a cosine to eta_min."""
    if t <= warmup:
        return LR * (start_factor + (1 - start_factor) * t / warmup) if warmup else LR
    return eta_min + (LR - eta_min) * (1 + math.cos(math.pi * (t - warmup) / (total - warmup))) / 2


def test_cosine_warmup_config_follows_the_formula(compose_cfg, tmp_path: Path) -> None:
    """Defaults: 5% warm-up (5 of 100 steps) from 1% of the lr, then cosine to 0 at step 100."""
    optimizer, scheduler = built("cosine_warmup", compose_cfg, tmp_path, total_steps=100)
    assert scheduler.warmup_steps == 5
    lrs = advance(scheduler, optimizer, 100) + [optimizer.param_groups[0]["lr"]]
    assert lrs[0] == pytest.approx(LR * 0.01)
    for t in (0, 1, 2, 4, 5, 6, 30, 52, 99, 100):
        assert lrs[t] == pytest.approx(warmup_cosine(t, 100, 5, 0.01, 0.0), abs=1e-12), t
    assert max(lrs) == pytest.approx(LR) and lrs.index(max(lrs)) == 5  # the peak ends the warm-up
    assert lrs[52] > LR / 2 > lrs[53]  # the cosine's midpoint (t = 5 + 95 / 2): half the lr
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("warmup_steps", "start_factor", "eta_min"),
    [(10, 0.1, 0.001), (0, 0.01, 0.0), (1, 0.5, 0.01), (29, 0.01, 0.0)],
)
def test_warmup_cosine_lr_values(warmup_steps: int, start_factor: float, eta_min: float) -> None:
    total = 30
    optimizer = sgd()
    scheduler = WarmupCosineLR(
        optimizer, total_steps=total, warmup_steps=warmup_steps, start_factor=start_factor, eta_min=eta_min
    )
    lrs = advance(scheduler, optimizer, total) + [optimizer.param_groups[0]["lr"]]
    expected = [warmup_cosine(t, total, warmup_steps, start_factor, eta_min) for t in range(total + 1)]
    assert lrs == pytest.approx(expected, abs=1e-12)
    assert lrs[-1] == pytest.approx(eta_min)


def test_warmup_fraction_rounds_down() -> None:
    assert WarmupCosineLR(sgd(), total_steps=600).warmup_steps == 30
    assert WarmupCosineLR(sgd(), total_steps=99, warmup_fraction=0.1).warmup_steps == 9
    assert WarmupCosineLR(sgd(), total_steps=10).warmup_steps == 0  # 5% of 10 steps: a plain cosine


@pytest.mark.parametrize("steps_before_save", [0, 3, 7, 8, 19])  # in the warm-up, at its end, in the cosine
def test_warmup_cosine_resumes_exactly_after_save_and_load(steps_before_save: int, tmp_path: Path) -> None:
    """Step k times, save, build a fresh schedule on a fresh optimizer, load, continue: the lrs are
    exactly (==, not approx) those of the run that never stopped."""
    kwargs = {"total_steps": 20, "warmup_steps": 7, "start_factor": 0.05, "eta_min": 1e-4}
    optimizer = sgd()
    scheduler = WarmupCosineLR(optimizer, **kwargs)
    reference = advance(scheduler, optimizer, 20)

    optimizer = sgd()
    scheduler = WarmupCosineLR(optimizer, **kwargs)
    first = advance(scheduler, optimizer, steps_before_save)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp_path / "ckpt")
    state = torch.load(tmp_path / "ckpt", weights_only=True)

    optimizer = sgd()
    scheduler = WarmupCosineLR(optimizer, **kwargs)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    assert first + advance(scheduler, optimizer, 20 - steps_before_save) == reference


def test_warmup_cosine_resumes_from_its_own_state_alone() -> None:
    """Loading only the schedule's state (not the optimizer's) also puts the lr back on the curve."""
    optimizer = sgd()
    scheduler = WarmupCosineLR(optimizer, total_steps=20, warmup_steps=5)
    advance(scheduler, optimizer, 9)
    state = roundtrip(scheduler.state_dict())
    rest = advance(scheduler, optimizer, 11)

    fresh_optimizer = sgd()
    fresh = WarmupCosineLR(fresh_optimizer, total_steps=20, warmup_steps=5)
    fresh.load_state_dict(state)
    assert advance(fresh, fresh_optimizer, 11) == rest


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"total_steps": 0}, "scheduler.total_steps"),
        ({"warmup_steps": -1}, "scheduler.warmup_steps"),
        ({"warmup_fraction": 1.0}, "scheduler.warmup_fraction"),
        ({"start_factor": 0.0}, "scheduler.start_factor"),
        ({"start_factor": 1.5}, "scheduler.start_factor"),
        ({"eta_min": -0.1}, "scheduler.eta_min"),
    ],
)
def test_warmup_cosine_names_the_bad_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=f"^{key}="):
        WarmupCosineLR(sgd(), **{"total_steps": 100, **kwargs})


@pytest.mark.parametrize("warmup_steps", [100, 250])
def test_warmup_as_long_as_the_run_says_how_to_fix_it(warmup_steps: int) -> None:
    with pytest.raises(ConfigValueError) as info:
        WarmupCosineLR(sgd(), total_steps=100, warmup_steps=warmup_steps)
    message = str(info.value)
    assert message.startswith(f"scheduler.warmup_steps={warmup_steps} ")
    assert "total_steps=100" in message
    assert "scheduler.warmup_steps=<fewer than 100>" in message
