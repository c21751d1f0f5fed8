"""Helpers the tests share (the fixtures in conftest.py wrap them).

In-process runs go through Hydra's compose API (fast: no interpreter start-up, no imports);
subprocess runs are kept for what is about the command line itself: exit codes, messages,
multirun, Ctrl-C.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig

import nnlab.configs
from nnlab.commands.train import compose_run
from nnlab.runs.pipeline import train

CONFIG_DIR = Path(nnlab.configs.__file__).parent

# The classical baselines (`baselines: auto`, nnlab.analysis.classical) add seconds of scikit-learn
# to a run on small data, and timings to its metrics.json: runs in tests leave them out, unless a
# test asks for them with `baselines=...` (the last override of a key wins). train.yaml's default
# comes from NNLAB_BASELINES, which CLI runs inherit; TINY also says it on the command line, over
# an experiment that lists its own.
os.environ["NNLAB_BASELINES"] = "[]"
NO_BASELINES = ("baselines=[]",)

# One epoch of two batches without the live progress bar: enough to exercise every part of a run.
TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "callbacks.progress=null", *NO_BASELINES)

# Generous: a subprocess run costs ~3 s of imports on 2 cores, plus its training.
CLI_TIMEOUT_S = 180


def options(group: str) -> list[str]:
    """The choices of a config group, read from its folder (the one catalogue of names)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_config(overrides: Sequence[str], run_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The config `nnlab-train <overrides>` would hand to `main`, with `run_dir` as its run directory
    (another command's with `config_name`: "lr_find", "attack", "ensemble", ...): `nnlab.commands.train.compose_run`."""
    return compose_run(overrides, run_dir, config_name)


@dataclass
class Run:
    cfg: DictConfig
    metrics: dict[str, float]
    dir: Path

    def checkpoint(self, name: str = "last") -> dict[str, Any]:
        return torch.load(self.dir / "checkpoints" / f"{name}.ckpt", weights_only=True)


def train_tiny(overrides: Sequence[str], run_dir: str | Path) -> Run:
    """`train(cfg)` in-process on a TINY run; `overrides` come after TINY, so they can undo it."""
    cfg = compose_config([*TINY, *overrides], run_dir)
    return Run(cfg, train(cfg), Path(cfg.paths.output_dir))


def run_cli(
    args: Sequence[str], cwd: str | Path, timeout: float = CLI_TIMEOUT_S, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m nnlab.commands.train <args>` in `cwd`, output captured as text (see `run_command`)."""
    return run_command("train", args, cwd, timeout, env)


def run_command(
    command: str,
    args: Sequence[str],
    cwd: str | Path,
    timeout: float = CLI_TIMEOUT_S,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m nnlab.commands.<command> <args>` (train, eval, attack, ...) in `cwd`, output captured as text.

    NNLAB_ROOT points at `cwd` so nothing lands in the checkout's outputs/, and HYDRA_FULL_ERROR
    is dropped so the messages are the ones a user sees by default; `env` adds variables.
    """
    return subprocess.run(
        [sys.executable, "-m", f"nnlab.commands.{command}", *args],
        cwd=cwd,
        env={**cli_env(cwd), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(cwd: str | Path) -> dict[str, str]:
    """The environment of a CLI subprocess (see `run_cli`)."""
    env = {**os.environ, "NNLAB_ROOT": str(cwd)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def assert_same(a: Any, b: Any, where: str = "state") -> None:
    """Recursive equality of checkpoint contents: torch.equal (and the same dtype) on every tensor."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def expected_metric_keys(kind: str, class_names: list[str] | None = None) -> set[str]:
    """metrics.json keys of a supervised run: training reports its step metrics (loss, and acc for
    classification); validation and test score the whole split, and the test report adds
    per-class precision/recall/F1 (and ROC-AUC on both for a binary problem)."""
    if kind == "classification":
        keys = {"train/loss", "train/acc"} | {f"{s}/{m}" for s in ("val", "test") for m in ("loss", "acc", "macro_f1")}
        names = class_names or []
        keys |= {f"test/{m}/{c}" for m in ("precision", "recall", "f1") for c in names}
        if len(names) == 2:
            keys |= {"val/roc_auc", "test/roc_auc"}
        return keys
    return {"train/loss"} | {f"{split}/{m}" for split in ("val", "test") for m in ("loss", "mse", "mae", "r2")}


def one_in(every: int, cases: Sequence[Any]) -> list[Any]:
    """`cases` for a parametrize: cases 0, every, 2 x every, ... in the default suite, the others
    marked slow (`python -m pytest -m slow` runs them). A battery over every config keeps its
    whole reach in the full run and a fraction of its cost in the default suite, which has to stay
    near 10 minutes on 2 cores. A case that is a pytest.param keeps its id and marks."""
    from _pytest.mark.structures import ParameterSet

    picked = []
    for i, case in enumerate(cases):
        if i % every == 0:
            picked.append(case)
        elif isinstance(case, ParameterSet):
            picked.append(pytest.param(*case.values, id=case.id, marks=[*case.marks, pytest.mark.slow]))
        else:
            picked.append(pytest.param(case, marks=pytest.mark.slow))
    return picked


def assert_finite_metrics(metrics: dict[str, float], kind: str) -> None:
    class_names = sorted(k.split("/", 2)[2] for k in metrics if k.startswith("test/f1/"))
    if kind == "classification":
        assert class_names, "the test report has no per-class F1"
    # A text classifier also reports its bag-of-words baseline (on val each epoch, and on test).
    baseline = {"baseline/acc", "test/baseline_acc"} if "test/baseline_acc" in metrics else set()
    # A run with data.sensitive adds its fairness audit (tests/analysis/test_fairness.py checks its values).
    fairness = {k for k in metrics if k.startswith("fairness/")}
    assert set(metrics) == expected_metric_keys(kind, class_names or None) | baseline | fairness
    for key, value in metrics.items():
        assert isinstance(value, float) and math.isfinite(value), (key, value)
        if key.endswith(("/acc", "macro_f1", "roc_auc")) or "/precision/" in key or "/recall/" in key or "/f1/" in key:
            assert 0.0 <= value <= 1.0, (key, value)
        if key.endswith(("/loss", "/mse", "/mae")):
            assert value >= 0.0, (key, value)


def with_parts(monkeypatch: Any, change: Callable[[Any], None]) -> None:
    """Let `change` edit the parts of the next run after they are built (add a callback, wrap the loss)."""
    import nnlab.runs.pipeline

    build = nnlab.runs.pipeline.build

    def build_and_change(cfg):
        parts = build(cfg)
        change(parts)
        return parts

    monkeypatch.setattr(nnlab.runs.pipeline, "build", build_and_change)


def epoch_curve(run_dir: str | Path, name: str) -> list[Any]:
    """The scalar events of an epoch metric (`val/loss`, `train/mistakes`) as TensorBoard's own
    reader reads them: tag `epoch/<name>` of the run `<run>/tensorboard/<split>`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    split, _, metric = name.partition("/")
    events = EventAccumulator(str(Path(run_dir) / split), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars(f"epoch/{metric}")
