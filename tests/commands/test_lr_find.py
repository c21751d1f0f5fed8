"""nnlab.commands.lr_find: the LR range test's sweep, its suggestion rule, its config, and the command's
outputs (lr_find.json, the figure, TensorBoard) and errors."""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from helpers import compose_config, run_command
from nnlab.commands.lr_find import STEEPEST, TENTH_OF_MINIMUM, RangeTest, explain_override, lr_find, suggest_lr
from nnlab.engine.optim import NonFiniteStep
from nnlab.errors import ConfigValueError, UserError

NUM_STEPS = 40


def run_lr_find(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m nnlab.commands.lr_find <args>` in `cwd` (NNLAB_ROOT=cwd), one thread, output captured."""
    return run_command("lr_find", args, cwd, env={"OMP_NUM_THREADS": "1"})


def compose_lr_find(overrides: Sequence[str], run_dir: Path) -> DictConfig:
    """The config `nnlab-lr-find <overrides>` hands to `main`."""
    return compose_config(overrides, run_dir, config_name="lr_find")


# -- the command, on the default experiment (digits MLP) ---------------------------------------
@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    cwd = tmp_path_factory.mktemp("lr_find")
    run_dir = cwd / "run"
    result = run_lr_find([f"hydra.run.dir={run_dir}", f"lr_find.num_steps={NUM_STEPS}", "callbacks.progress=null"], cwd)
    assert result.returncode == 0, result.stderr + result.stdout
    return result, run_dir


def test_the_sweep_is_recorded_in_lr_find_json(default_run) -> None:
    _, run_dir = default_run
    record = json.loads((run_dir / "lr_find.json").read_text())
    lr, loss, smoothed = (np.array(record[k]) for k in ("lr", "loss", "smoothed_loss"))
    assert 3 <= len(lr) <= NUM_STEPS and len(loss) == len(smoothed) == len(lr)
    if len(lr) < NUM_STEPS:
        assert record["stopped"].startswith("diverged")
    assert np.all(np.diff(lr) > 0)
    # Exponential: evenly spaced on a log axis, from start_lr towards end_lr.
    expected = 1e-7 * (10 / 1e-7) ** (np.arange(len(lr)) / (NUM_STEPS - 1))
    assert lr == pytest.approx(expected, rel=1e-9)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(smoothed))
    assert record["num_steps"] == NUM_STEPS and record["smoothing"] == 0.95


def test_the_suggestion_lies_where_the_loss_falls(default_run) -> None:
    _, run_dir = default_run
    record = json.loads((run_dir / "lr_find.json").read_text())
    lr, smoothed = np.array(record["lr"]), np.array(record["smoothed_loss"])
    suggested = record["suggested_lr"]
    assert record["suggestion_rule"] == STEEPEST
    assert 1e-7 < suggested < 10
    i = int(np.argmin(np.abs(lr - suggested)))
    assert lr[i] == suggested  # one of the swept lrs
    i_min = int(np.argmin(smoothed))
    assert i < i_min and suggested < record["min_loss_lr"] == lr[i_min]
    assert np.gradient(smoothed, np.log10(lr))[i] < 0  # the smoothed loss is falling there
    assert smoothed[i] > smoothed[i_min]
    assert record["min_loss_lr_div_10"] == pytest.approx(record["min_loss_lr"] / 10)


def test_the_suggestion_is_printed_with_the_command_to_rerun(default_run) -> None:
    result, run_dir = default_run
    suggested = json.loads((run_dir / "lr_find.json").read_text())["suggested_lr"]
    output = result.stdout + result.stderr
    m = re.search(
        r"Suggested optimizer\.lr=(\S+) \(steepest descent of the smoothed loss\)\. Loss minimum at lr=", output
    )
    assert m, output
    assert float(m.group(1)) == pytest.approx(suggested, rel=5e-3)  # printed to 3 significant digits
    # The user's overrides minus the sweep's own settings, then the suggestion.
    assert f"Rerun with: nnlab-train callbacks.progress=null optimizer.lr={m.group(1)}\n" in output
    assert "Traceback" not in output


def test_the_figure_and_the_run_record_are_written(default_run) -> None:
    _, run_dir = default_run
    png = run_dir / "figures" / "lr_find.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert config.scheduler is None  # the range test holds the lr itself
    assert config.lr_find.num_steps == NUM_STEPS
    assert (run_dir / "run_info.json").exists()


def test_tensorboard_has_the_figure_and_the_per_step_scalars(default_run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = default_run
    record = json.loads((run_dir / "lr_find.json").read_text())
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert "lr_find/loss_vs_lr" in events.Tags()["images"]
    image = events.Images("lr_find/loss_vs_lr")[-1]
    assert image.width > 300 and image.height > 200
    for tag, key in (("lr_find/lr", "lr"), ("lr_find/loss", "loss"), ("lr_find/smoothed_loss", "smoothed_loss")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == list(range(len(record[key])))
        assert [s.value for s in scalars] == pytest.approx(record[key], rel=1e-6)  # float32 in the file


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["experiment=digits_som"],
            "Error: The LR finder needs a task that trains with one gradient optimizer (task=supervised or "
            "task=reconstruction), but this run's task is task=som (nnlab.tasks.som.SOMRule)",
        ),
        (["lr_find.num_stpes=3"], "Error: Unknown key 'lr_find.num_stpes': 'lr_find' has no key 'num_stpes'."),
    ],
    ids=["som", "misspelled_key"],
)
def test_a_user_error_is_one_paragraph_and_exit_code_2(args: list[str], expected: str, tmp_path: Path) -> None:
    result = run_lr_find([*args, f"hydra.run.dir={tmp_path / 'run'}", "callbacks.progress=null"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(expected), result.stderr
    assert not (tmp_path / "run" / ".hydra").exists()  # a rejected run records nothing


def test_a_gan_is_refused_before_any_step(tmp_path: Path) -> None:
    cfg = compose_lr_find(["model=gan", "callbacks.progress=null"], tmp_path)
    with pytest.raises(UserError, match=r"task is task=gan \(nnlab\.tasks\.gan\.") as info:
        lr_find(cfg)
    assert "a GAN has two" in str(info.value)
    assert "experiment=digits_mlp" in str(info.value)
    assert not (tmp_path / "lr_find.json").exists()


def test_misspelled_lr_find_keys_get_a_suggestion() -> None:
    hydra_message = (
        "Could not override 'lr_find.smothing'.\nTo append to your config use +lr_find.smothing=0.9\n"
        "Key 'smothing' is not in struct\n"
    )
    message = explain_override(hydra_message, ["lr_find.smothing=0.9"])
    assert message.startswith("Unknown key 'lr_find.smothing': 'lr_find' has no key 'smothing'.")
    assert "Did you mean 'lr_find.smoothing'?" in message
    assert message.endswith("Keys of 'lr_find': start_lr, end_lr, num_steps, smoothing, diverge_factor.")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"start_lr": 0.0}, "lr_find.start_lr"),
        ({"end_lr": 1e-8}, "lr_find.end_lr"),
        ({"num_steps": 1}, "lr_find.num_steps"),
        ({"smoothing": 1.0}, "lr_find.smoothing"),
        ({"diverge_factor": 1.0}, "lr_find.diverge_factor"),
    ],
)
def test_settings_out_of_range_name_their_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigValueError, match=f"^{re.escape(key)}="):
        RangeTest(**kwargs)


# -- the config ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [[], ["experiment=digits_mlp"], ["experiment=digits_cnn", "optimizer=sgd"]])
def test_lr_find_yaml_is_train_yaml_plus_the_sweep(overrides: list[str], tmp_path: Path) -> None:
    """Every train.yaml group, experiment and override composes the same under nnlab-lr-find."""
    with initialize_config_module("nnlab.configs", version_base="1.3"):
        train = compose("train", overrides=overrides, return_hydra_config=True)
        found = compose("lr_find", overrides=overrides, return_hydra_config=True)
    assert OmegaConf.to_container(found.lr_find) == {
        "_target_": "nnlab.commands.lr_find.RangeTest",
        "start_lr": 1e-7,
        "end_lr": 10,
        "num_steps": 100,
        "smoothing": 0.95,
        "diverge_factor": 4,
    }
    assert found.hydra.run.dir.startswith(f"{found.paths.log_dir}/lr_find/")
    assert found.hydra.job_logging == train.hydra.job_logging
    for cfg in (train, found):
        with open_dict(cfg):
            del cfg["hydra"]
    with open_dict(found):
        del found["lr_find"]
    assert OmegaConf.to_container(found) == OmegaConf.to_container(train)


def test_the_console_script_is_declared() -> None:
    (script,) = entry_points(group="console_scripts", name="nnlab-lr-find")
    assert script.value == "nnlab.commands.lr_find:cli"


# -- the sweep and the rule, on known curves -----------------------------------------------------
class FakeTask:
    """A task whose loss is a known function of the lr it is trained at."""

    def __init__(self, loss_of_lr) -> None:
        self.model = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1.0)
        self.loss_of_lr = loss_of_lr

    def training_step(self, batch) -> dict[str, torch.Tensor]:
        return {"loss": torch.tensor(self.loss_of_lr(self.optimizer.param_groups[0]["lr"]))}


def batches():
    while True:
        yield None


def test_the_sweep_sets_exponential_lrs_and_smooths_with_bias_correction() -> None:
    losses = iter([3.0, 1.0, 2.0, 5.0, 4.0])
    task = FakeTask(lambda lr: next(losses))
    seen = []
    curve = RangeTest(start_lr=1e-4, end_lr=1.0, num_steps=5, smoothing=0.5, diverge_factor=10).run(
        task, task.optimizer, batches(), on_step=lambda *args: seen.append(args)
    )
    assert curve.lr == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0])
    assert curve.loss == [3.0, 1.0, 2.0, 5.0, 4.0]
    avg, expected = 0.0, []
    for i, loss in enumerate(curve.loss):
        avg = 0.5 * avg + 0.5 * loss
        expected.append(avg / (1 - 0.5 ** (i + 1)))
    assert curve.smoothed_loss == pytest.approx(expected)
    assert curve.smoothed_loss[0] == 3.0  # bias-corrected: the first value is the first loss
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert curve.stopped == "completed all 5 steps"


def test_the_sweep_stops_when_the_smoothed_loss_diverges() -> None:
    task = FakeTask(lambda lr: 1.0 if lr < 0.5 else 100.0)
    test = RangeTest(start_lr=1e-3, end_lr=10.0, num_steps=50, smoothing=0.0, diverge_factor=4)
    curve = test.run(task, task.optimizer, batches())
    assert len(curve.lr) < 50 and curve.lr[-2] < 0.5 <= curve.lr[-1]  # the first step past 4x the best
    assert curve.stopped.startswith(f"diverged at step {len(curve.lr)}")


def test_the_sweep_stops_at_a_non_finite_loss_without_recording_it() -> None:
    task = FakeTask(lambda lr: 1.0 if lr < 0.5 else math.nan)
    curve = RangeTest(start_lr=1e-3, end_lr=10.0, num_steps=50).run(task, task.optimizer, batches())
    assert curve.lr and max(curve.lr) < 0.5 and all(math.isfinite(v) for v in curve.loss)
    assert curve.stopped.startswith("stopped at a loss of nan")


def test_the_sweep_stops_when_the_update_refuses_a_non_finite_step() -> None:
    """With trainer.rules.check_finite (the default), Optimization.step raises NonFiniteStep
    instead of updating on NaN/inf; the sweep ends there rather than the command."""

    def loss_of_lr(lr: float) -> float:
        if lr >= 0.5:
            raise NonFiniteStep(loss_finite=True, bad_grads=[])
        return 1.0

    task = FakeTask(loss_of_lr)
    curve = RangeTest(start_lr=1e-3, end_lr=10.0, num_steps=50).run(task, task.optimizer, batches())
    assert curve.lr and max(curve.lr) < 0.5
    assert curve.stopped.startswith("stopped at a non-finite gradient at step")


def synthetic_curve(n: int = 81) -> tuple[np.ndarray, np.ndarray]:
    """lr from 1e-7 to 10, 0.1 decade apart; a loss that falls steepest at lr = 1e-3 (a tanh step
    centred there) and rises again past lr ~ 0.1."""
    lr = np.logspace(-7, 1, n)
    x = np.log10(lr)
    return lr, 2.3 - np.tanh((x + 3) / 0.5) + 0.5 * np.exp(2 * (x + 0.5))


def test_the_suggestion_is_the_steepest_descent() -> None:
    lr, loss = synthetic_curve()
    suggestion = suggest_lr(lr, loss)
    assert suggestion.rule == STEEPEST
    assert suggestion.lr == pytest.approx(1e-3)
    i_min = int(np.argmin(loss))
    assert suggestion.min_loss_lr == lr[i_min] and suggestion.min_loss_index == i_min
    assert suggestion.tenth_of_min == pytest.approx(lr[i_min] / 10)


def test_the_suggestion_skips_the_first_steps_and_what_follows_the_minimum() -> None:
    lr, loss = synthetic_curve()
    loss[:4] += np.array([30.0, 20.0, 10.0, 0.0])  # the steepest fall of all, in the first 10% of steps
    i_min = int(np.argmin(loss))
    loss[i_min + 5 :] = 40.0 - 4 * np.arange(len(loss) - i_min - 5)  # a steep fall after the minimum, above it
    loss[i_min + 5 :] = np.maximum(loss[i_min + 5 :], loss[i_min] + 1)
    assert int(np.argmin(loss)) == i_min
    assert suggest_lr(lr, loss).lr == pytest.approx(1e-3)


def test_a_loss_that_never_falls_gets_a_tenth_of_its_minimum() -> None:
    lr = np.logspace(-7, 1, 50)
    suggestion = suggest_lr(lr, 1.0 + lr)  # rising from the start
    assert suggestion.rule == TENTH_OF_MINIMUM
    assert suggestion.lr == pytest.approx(1e-8)


def test_too_short_a_sweep_says_to_start_lower() -> None:
    with pytest.raises(UserError, match="lr_find.start_lr="):
        suggest_lr([1e-2, 1e-1], [1.0, 9.0])
