"""Same seed, same run; the value sweepers optimize; a multirun from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from helpers import TINY, Run, compose_config, run_cli, train_tiny
from nnlab.commands.train import main
from nnlab.errors import UserError
from nnlab.runs.pipeline import optimized_value


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Tiny digits runs: seed 0 twice, seed 1 once."""
    return {
        name: train_tiny([f"seed={seed}"], tmp_path_factory.mktemp(name))
        for name, seed in (("a", 0), ("b", 0), ("other", 1))
    }


def test_same_seed_gives_byte_identical_metrics(runs: dict[str, Run]) -> None:
    assert (runs["a"].dir / "metrics.json").read_bytes() == (runs["b"].dir / "metrics.json").read_bytes()


def test_same_seed_gives_identical_weights(runs: dict[str, Run]) -> None:
    a, b = runs["a"].checkpoint()["model"], runs["b"].checkpoint()["model"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_another_seed_gives_another_run(runs: dict[str, Run]) -> None:
    a, other = runs["a"].metrics, runs["other"].metrics
    assert all(a[k] != other[k] for k in ("train/loss", "val/loss", "test/loss"))


def test_optimized_value_is_the_named_metric(runs: dict[str, Run]) -> None:
    metrics = runs["a"].metrics
    assert optimized_value(metrics, "val/loss") == metrics["val/loss"]
    with pytest.raises(UserError, match="optimized_metric='val/los'") as info:
        optimized_value(metrics, "val/los")
    assert "Did you mean 'val/loss'?" in str(info.value)
    assert "val/acc" in str(info.value)  # lists the choices


@pytest.mark.parametrize("metric", ["val/loss", "val/acc"])
def test_main_returns_the_optimized_metric(metric: str, tmp_path: Path) -> None:
    """`main(cfg)` (Hydra passes a given config straight through) returns what sweepers optimize."""
    cfg = compose_config([*TINY, f"optimized_metric={metric}"], tmp_path)
    value = main(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert value == metrics[metric]


def test_main_rejects_an_unknown_optimized_metric(tmp_path: Path, capsys) -> None:
    cfg = compose_config([*TINY, "optimized_metric=val/accuracy"], tmp_path)
    with pytest.raises(SystemExit) as info:
        main(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    # The best checkpoint follows optimized_metric, so the callback is the first to miss it.
    assert err.startswith("Error: callbacks.model_checkpoint.monitor='val/accuracy'")
    assert "optimized_metric" in err and "val/acc" in err
    assert "Did you mean 'val/acc'?" in err


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_multirun_over_seeds(tmp_path: Path, runs: dict[str, Run]) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_cli(["-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    trials = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert trials == ["0", "1"]
    assert (sweep_dir / "multirun.yaml").is_file()
    for trial, seed in (("0", 0), ("1", 1)):
        assert f"seed={seed}" in yaml.safe_load((sweep_dir / trial / ".hydra" / "overrides.yaml").read_text())
        assert (sweep_dir / trial / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep_dir / trial).glob("events.out.tfevents*"))
    trial_metrics = [(sweep_dir / t / "metrics.json").read_bytes() for t in trials]
    assert trial_metrics[0] != trial_metrics[1]
    # The trial with seed 0 is the same run as the in-process one with seed 0: how a run is
    # launched does not change its numbers.
    assert trial_metrics[0] == (runs["a"].dir / "metrics.json").read_bytes()


def test_dataloader_path_gives_the_same_run(tmp_path: Path) -> None:
    """data.in_memory=false streams the same batches through a DataLoader: without dropout (the
    only other consumer of random numbers) the run is the same run."""
    in_memory = train_tiny(["model.dropout=0", "data.in_memory=true"], tmp_path / "in_memory")
    loader = train_tiny(["model.dropout=0", "data.in_memory=false"], tmp_path / "loader")
    assert in_memory.metrics == loader.metrics
