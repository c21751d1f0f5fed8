"""The optimization concepts of the lab (docs/concepts.md): the optimizer names the `optimizers`
comparison sweeps mean what they say, and the `batch_size` comparison takes the number of
updates its YAML states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from helpers import compose_config

# name -> (momentum, nesterov) of the torch.optim.SGD it must build
SGD_VARIANTS = {"sgd_plain": (0.0, False), "sgd_momentum": (0.9, False), "nesterov": (0.9, True)}


@pytest.mark.parametrize("name", sorted(SGD_VARIANTS))
def test_each_sgd_variant_builds_the_sgd_its_name_says(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"optimizer={name}"], tmp_path)
    optimizer = instantiate(cfg.optimizer)(params=nn.Linear(3, 2).parameters())
    assert type(optimizer) is torch.optim.SGD
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"]) == SGD_VARIANTS[name]


def test_the_sgd_variants_differ_only_in_momentum(tmp_path: Path) -> None:
    """The comparison keeps each config's own lr, so the three SGD trials must share one lr (and
    everything else) for momentum to be the only difference between them."""
    configs = {name: compose_config([f"optimizer={name}"], tmp_path / name).optimizer for name in SGD_VARIANTS}
    rest = {name: {k: v for k, v in c.items() if k not in ("momentum", "nesterov")} for name, c in configs.items()}
    assert len({repr(sorted(r.items())) for r in rest.values()}) == 1, rest


def test_momentum_and_nesterov_take_different_steps() -> None:
    """Same start, same gradients: plain SGD, heavy-ball and Nesterov momentum end in three
    different places after a few steps on a quadratic (Nesterov adds the look-ahead term)."""
    ends = {}
    for name, (momentum, nesterov) in SGD_VARIANTS.items():
        w = torch.tensor([1.0, -2.0], requires_grad=True)
        optimizer = torch.optim.SGD([w], lr=0.1, momentum=momentum, nesterov=nesterov)
        for _ in range(3):
            optimizer.zero_grad()
            (w**2).sum().backward()
            optimizer.step()
        ends[name] = w.detach().clone()
    # Plain SGD on w^2 multiplies w by (1 - 2 lr) = 0.8 each step.
    assert torch.allclose(ends["sgd_plain"], torch.tensor([1.0, -2.0]) * 0.8**3)
    assert not torch.allclose(ends["sgd_momentum"], ends["sgd_plain"])
    assert not torch.allclose(ends["nesterov"], ends["sgd_momentum"])


@pytest.mark.parametrize(("batch_size", "steps"), [(1, 1259), (32, 40), (512, 3)])
def test_batch_size_sets_the_updates_per_epoch(batch_size: int, steps: int, tmp_path: Path) -> None:
    """batch_size.yaml's arithmetic: 1259 training rows, ceil(1259 / batch_size) updates an epoch."""
    cfg = compose_config(["experiment=batch_size", f"data.batch_size={batch_size}"], tmp_path)
    data = instantiate(cfg.data)
    assert data.size("train") == 1259
    assert data.steps_per_epoch == steps
