"""What a run directory holds: enough to rebuild the run (STYLE 12)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

import nnlab
from helpers import CLI_TIMEOUT_S, Run, cli_env, expected_metric_keys
from nnlab.models.mlp import MLP
from nnlab.runs.pipeline import train

DIGITS = [str(c) for c in range(10)]


def test_metrics_json_is_a_flat_map_of_the_runs_metrics(digits_run: Run) -> None:
    metrics = json.loads((digits_run.dir / "metrics.json").read_text())
    assert set(metrics) == expected_metric_keys("classification", DIGITS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics == digits_run.metrics  # what train() returned, unrounded
    assert list(metrics) == sorted(metrics)


def test_run_dir_contents(digits_run: Run) -> None:
    names = {p.relative_to(digits_run.dir).as_posix() for p in digits_run.dir.rglob("*") if p.is_file()}
    assert {"metrics.json", "run_info.json", "checkpoints/last.ckpt", "checkpoints/best.ckpt"} <= names
    # TensorBoard's runs: the folder itself (named after it), its epoch curves, its HParams row.
    for run in ("", "train/", "val/", "hparams/"):
        assert any(re.fullmatch(rf"{run}events\.out\.tfevents\.[^/]+", n) for n in names), run
    assert not any(n.endswith(".tmp") for n in names)  # checkpoints are written via a temp file + rename


@pytest.mark.parametrize("name", ["last", "best"])
def test_checkpoints_load_safely_and_rebuild_the_model(digits_run: Run, name: str) -> None:
    state = torch.load(digits_run.dir / "checkpoints" / f"{name}.ckpt", weights_only=True)
    assert {"model", "task", "epoch", "global_step", "metrics", "rng", "config", "nnlab_version"} <= set(state)
    assert state["nnlab_version"] == nnlab.__version__
    assert nnlab.__version__ == importlib.metadata.version("nnlab")  # pyproject.toml reads it from nnlab
    assert set(state["task"]["optim"]) == {"optimizer", "scheduler", "scaler"}
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    config = OmegaConf.create(state["config"])  # the resolved config, as YAML text
    assert config.optimizer.lr == digits_run.cfg.optimizer.lr
    assert config.paths.output_dir == str(digits_run.dir)  # resolved: no ${hydra:...} left
    # The model can be rebuilt from the config it carries, and takes the weights.
    model = MLP(
        input_shape=(1, 8, 8),
        num_outputs=10,
        **{k: v for k, v in OmegaConf.to_container(config.model).items() if not k.startswith("_")},
    )
    model.load_state_dict(state["model"])


def test_last_and_best_record_where_they_were_taken(digits_run: Run) -> None:
    last = digits_run.checkpoint("last")
    best = digits_run.checkpoint("best")
    assert (last["epoch"], last["global_step"]) == (2, 40)
    assert last["metrics"] == {k: v for k, v in digits_run.metrics.items() if not k.startswith("test/")}
    # best.ckpt holds the epoch with the lowest val/loss (the callback's monitor, mode min).
    assert best["metrics"]["val/loss"] <= last["metrics"]["val/loss"]
    assert best["global_step"] == 20 * best["epoch"]


@pytest.mark.parametrize("test_ckpt", ["best", "last"])
def test_test_split_is_scored_with_the_chosen_weights(test_ckpt: str, tmp_path: Path, train_run) -> None:
    """Three epochs of SGD at a learning rate so high that val/loss is worst after the first, so
    best.ckpt and the last weights differ; test/loss must come from the ones trainer.test_ckpt names."""
    overrides = [
        "data=iris",
        "trainer.max_epochs=3",
        "optimizer=sgd",
        "optimizer.lr=1.0",
        f"trainer.test_ckpt={test_ckpt}",
    ]
    run = train_run(overrides, tmp_path)
    best, last = run.checkpoint("best"), run.checkpoint("last")
    assert best["epoch"] < last["epoch"] == 3, "this setting was meant to make the last epoch not the best"

    data = instantiate(run.cfg.data)  # the same seeded split
    data.setup(torch.device("cpu"))
    x, y = (torch.cat(t) for t in zip(*data.eval_batches("test")))

    def test_loss(state: dict) -> float:
        model = instantiate(run.cfg.model, input_shape=data.input_shape, num_outputs=data.num_outputs)
        model.load_state_dict(state["model"])
        with torch.no_grad():
            return F.cross_entropy(model.eval()(x), y).item()

    chosen, other = (best, last) if test_ckpt == "best" else (last, best)
    assert run.metrics["test/loss"] == pytest.approx(test_loss(chosen), rel=1e-5)
    assert run.metrics["test/loss"] != pytest.approx(test_loss(other), rel=1e-3)


def test_no_callbacks_no_checkpoints(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(["callbacks=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2"], tmp_path)
    metrics = train(cfg)
    assert set(metrics) == expected_metric_keys("classification", DIGITS)
    assert not (tmp_path / "checkpoints").exists()
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_no_logger_no_event_files(train_run, tmp_path: Path) -> None:
    run = train_run(["logger=none"], tmp_path)
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    assert json.loads((tmp_path / "metrics.json").read_text()) == run.metrics


def test_run_info(digits_run: Run) -> None:
    info = json.loads((digits_run.dir / "run_info.json").read_text())
    assert info["nnlab_version"] == nnlab.__version__
    assert info["torch_version"] == torch.__version__
    assert info["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert datetime.fromisoformat(info["started"])
    checkout = Path(nnlab.__file__).resolve().parent
    in_git = shutil.which("git") is not None and (
        subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True).returncode == 0
    )
    if not in_git:
        assert info["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
        return
    # An editable install in a git checkout records a commit of that checkout (not compared with
    # HEAD: the checkout may have moved on since the run).
    assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
    kind = subprocess.run(["git", "cat-file", "-t", info["git_commit"]], cwd=checkout, capture_output=True, text=True)
    assert kind.stdout.strip() == "commit"
    assert isinstance(info["git_dirty"], bool)


def test_cli_run_dir(cli_run: Path) -> None:
    """What Hydra's launch adds: .hydra/ with the config the run used, and the log file."""
    config = yaml.safe_load((cli_run / ".hydra" / "config.yaml").read_text())
    assert config["trainer"]["max_epochs"] == 1
    assert config["trainer"]["limit_train_batches"] == 2
    assert config["callbacks"]["progress"] is None
    assert config["data"]["dataset"]["_target_"] == "nnlab.data.sklearn.digits"
    assert "hydra" not in config
    # Resolved, so the file rebuilds the run outside Hydra: no interpolation is left.
    assert "${" not in (cli_run / ".hydra" / "config.yaml").read_text()
    assert config["trainer"]["output_dir"] == str(cli_run)
    overrides = yaml.safe_load((cli_run / ".hydra" / "overrides.yaml").read_text())
    assert "trainer.max_epochs=1" in overrides
    hydra_cfg = yaml.safe_load((cli_run / ".hydra" / "hydra.yaml").read_text())
    assert hydra_cfg["hydra"]["runtime"]["output_dir"] == str(cli_run)

    log = (cli_run / "train.log").read_text()
    assert "epoch 1/1" in log  # the per-epoch line
    assert "Results in" in log

    info = json.loads((cli_run / "run_info.json").read_text())
    assert "trainer.max_epochs=1" in info["command"]
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert set(metrics) == expected_metric_keys("classification", DIGITS)
    assert sorted(p.name for p in (cli_run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_console_script_composes_the_same_config(tmp_path: Path) -> None:
    """The installed `nnlab-train` command (whichever function it points at) composes the
    config: `--cfg job` prints it without running."""
    script = shutil.which("nnlab-train", path=str(Path(sys.executable).parent))
    assert script is not None, "nnlab-train is not installed next to this Python"
    result = subprocess.run(
        [script, "--cfg", "job", "data=iris", "optimizer.lr=0.02"],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["data"]["dataset"]["_target_"] == "nnlab.data.sklearn.iris"
    assert config["optimizer"]["lr"] == 0.02
    assert not list(tmp_path.iterdir())  # printing the config runs nothing
