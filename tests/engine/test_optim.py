"""nnlab.engine.optim: when schedules step, what plateau schedules read, how total_steps is filled; the
packaged optimizers' fused option."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR, ReduceLROnPlateau, StepLR

from helpers import CONFIG_DIR
from nnlab.engine.optim import Optimization, build_scheduler, optimizer_factory
from nnlab.errors import ConfigValueError


def sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=lr)


def one_update(optim: Optimization) -> None:
    params = optim.optimizer.param_groups[0]["params"]
    optim.step(sum(p.sum() for p in params))


def test_plateau_reads_the_monitored_val_metric() -> None:
    optimizer = sgd()
    optim = Optimization(optimizer, ReduceLROnPlateau(optimizer, patience=0, factor=0.5), monitor="val/loss")
    lrs = []
    for val_loss in (1.0, 0.5, 0.7, 0.7, 0.2):  # improve, improve, worse, same, improve
        optim.epoch_end({"val/loss": val_loss, "val/acc": 0.0})
        lrs.append(optim.lr)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025])


def test_plateau_names_a_monitor_validation_does_not_report() -> None:
    optimizer = sgd()
    optim = Optimization(optimizer, ReduceLROnPlateau(optimizer), monitor="val/acc")
    with pytest.raises(ConfigValueError, match="val/acc") as info:
        optim.epoch_end({"val/loss": 1.0, "val/mse": 1.0})
    assert "val/loss, val/mse" in str(info.value)


def test_epoch_schedules_step_once_per_epoch_not_per_update() -> None:
    optimizer = sgd()
    optim = Optimization(optimizer, StepLR(optimizer, step_size=1, gamma=0.5))
    for _ in range(5):
        one_update(optim)
    assert optim.lr == pytest.approx(0.1)
    optim.epoch_end({"val/loss": 1.0})
    assert optim.lr == pytest.approx(0.05)


def test_onecycle_steps_per_update_and_gets_total_steps() -> None:
    """The config leaves total_steps out; build_scheduler fills it from the run, and the lr warms up
    from max_lr/div_factor to max_lr, then anneals far below where it started."""
    optimizer = sgd()
    factory = functools.partial(OneCycleLR, max_lr=1.0, pct_start=0.3, div_factor=25.0, final_div_factor=1e4)
    optim = Optimization(optimizer, build_scheduler(factory, optimizer, total_steps=20))
    assert optim.scheduler.total_steps == 20
    lrs = [optim.lr]
    for _ in range(19):
        one_update(optim)
        lrs.append(optim.lr)
    optim.epoch_end({"val/loss": 1.0})  # per-step schedules ignore epoch ends
    assert optim.lr == lrs[-1]
    peak = lrs.index(max(lrs))
    assert lrs[0] == pytest.approx(1.0 / 25)
    assert max(lrs) == pytest.approx(1.0)
    assert 0 < peak < 19
    assert all(a <= b for a, b in zip(lrs[: peak + 1], lrs[1 : peak + 1]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :]))  # then anneals
    assert lrs[-1] < lrs[0] / 100


def test_total_steps_set_in_the_config_is_kept() -> None:
    optimizer = sgd()
    factory = functools.partial(OneCycleLR, max_lr=1.0, total_steps=7)
    assert build_scheduler(factory, optimizer, total_steps=20).total_steps == 7


def test_no_scheduler_keeps_the_lr() -> None:
    optim = Optimization(sgd(0.3))
    one_update(optim)
    optim.epoch_end({"val/loss": 1.0})
    assert optim.lr == 0.3
    assert build_scheduler(None, optim.optimizer, total_steps=10) is None


def test_step_updates_the_parameters_and_clears_the_grads() -> None:
    optimizer = sgd(0.1)
    before = [p.detach().clone() for p in optimizer.param_groups[0]["params"]]
    optim = Optimization(optimizer)
    one_update(optim)  # d(sum of params)/dp = 1 everywhere: every entry drops by lr
    for p, p0 in zip(optimizer.param_groups[0]["params"], before):
        assert torch.allclose(p, p0 - 0.1)
        assert p.grad is None


FUSED_CONFIGS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml") if "fused" in OmegaConf.load(p))


def test_every_packaged_optimizer_with_a_fused_kernel_offers_it() -> None:
    assert FUSED_CONFIGS == ["adagrad", "adam", "adamw", "nesterov", "sgd", "sgd_momentum", "sgd_plain"]


@pytest.mark.parametrize("name", FUSED_CONFIGS)
def test_fused_is_on_by_default_and_off_with_one_override(name: str) -> None:
    """true by default (one kernel for every tensor); optimizer.fused=null builds PyTorch's own
    per-tensor update, and the two take the same step to float32 rounding."""
    cfg = OmegaConf.load(CONFIG_DIR / "optimizer" / f"{name}.yaml")
    assert cfg.fused is True
    results = {}
    for fused in (True, None):
        cfg.fused = fused
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        start = model.weight.detach().clone()
        optimizer = instantiate(cfg)(params=model.parameters())
        assert optimizer.defaults["fused"] is fused
        one_update(Optimization(optimizer))
        results[fused] = model.weight.detach().clone()
        assert (results[fused] - start).abs().min() > 1e-4  # (every weight moved)
    assert torch.allclose(results[None], results[True], atol=1e-6)


def test_a_model_the_fused_kernel_cannot_update_gets_the_key_to_change() -> None:
    """Complex weights: PyTorch's fused kernels would refuse them at the first step; nnlab refuses
    them when the optimizer is built, naming optimizer.fused and the fix, and the fix trains."""
    cfg = OmegaConf.load(CONFIG_DIR / "optimizer" / "adam.yaml")
    weights = [nn.Parameter(torch.zeros(3, dtype=torch.cfloat))]
    with pytest.raises(
        ConfigValueError,
        match=r"^optimizer\.fused=true \(the default for Adam\) cannot update a torch\.complex64 parameter on cpu: "
        r".*optimizer\.fused=null",
    ):
        optimizer_factory(instantiate(cfg))(params=weights)
    cfg.fused = None
    optimizer = optimizer_factory(instantiate(cfg))(params=weights)
    weights[0].grad = torch.ones(3, dtype=torch.cfloat)
    optimizer.step()
    assert weights[0].abs().min() > 0
