"""Fixtures: compose a config in-process the way `nnlab-train` would, run tiny trainings, run the
command line in a subprocess. The functions behind them live in helpers.py."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from helpers import TINY, Run, compose_config, run_cli, train_tiny


@pytest.fixture(scope="session")
def compose_cfg() -> Callable[[Sequence[str], str | Path], DictConfig]:
    """`compose_cfg(overrides, tmp_path)`: the config `nnlab-train <overrides>` would run, with
    its run directory (hydra.run.dir, hence paths.output_dir) at `tmp_path`."""
    return compose_config


@pytest.fixture(scope="session")
def train_run() -> Callable[[Sequence[str], str | Path], Run]:
    """`train_run(overrides, tmp_path)`: `train(cfg)` of a tiny run in-process, as a `Run`."""
    return train_tiny


@pytest.fixture(scope="session", name="run_cli")
def run_cli_fixture() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_cli(args, cwd, timeout=...)`: `python -m nnlab.commands.train <args>` as a CompletedProcess."""
    return run_cli


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A finished in-process run shared by the output and TensorBoard tests: digits, 2 full epochs
    of 20 steps, step scalars every 3 steps (so the 40 steps log at 3, 6, ..., 39)."""
    overrides = [
        "data=digits",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=null",
        "trainer.log_every_n_steps=3",
    ]
    return train_tiny(overrides, tmp_path_factory.mktemp("digits_run"))


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of a successful tiny `python -m nnlab.commands.train`, for what only Hydra's own
    launch writes: .hydra/, train.log, the command line in run_info.json."""
    cwd = tmp_path_factory.mktemp("cli_run")
    run_dir = cwd / "run"
    result = run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd)
    assert result.returncode == 0, result.stderr
    return run_dir
