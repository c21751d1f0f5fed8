"""Sweeps through Hydra's launcher plugins: joblib (parallel local processes), submitit (local
processes, SLURM array jobs) and nnlab's SLURM preset, configs/hydra/launcher/slurm.yaml.

A parallel sweep must give each trial its own folder, logs and TensorBoard run, and the same
results as the sequential (basic) launcher: trials that share nothing cannot change each other's
numbers. Both sweeps run with OMP_NUM_THREADS=1 so that they also share the number of torch
threads (loky would give each worker cpu_count // n_jobs), which can change float sums.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import CONFIG_DIR, TINY, run_cli

TRIAL = (*TINY, "trainer.summary=false", "trainer.device=cpu")
SEEDS = (0, 1, 2, 3)
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def sweep(cwd: Path, name: str, launcher_args: list[str], seeds: tuple[int, ...] = SEEDS) -> Path:
    """Run `nnlab-train -m seed=<seeds> <TRIAL> <launcher_args>` into cwd/<name>; its folder."""
    sweep_dir = cwd / name
    seed_list = ",".join(map(str, seeds))
    args = ["-m", f"seed={seed_list}", *TRIAL, *launcher_args, f"hydra.sweep.dir='{sweep_dir}'"]
    result = run_cli(args, cwd, env=ONE_THREAD)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def metrics(trial_dir: Path) -> dict[str, float]:
    return json.loads((trial_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: Hydra's default launcher runs the trials one after another in-process."""
    return sweep(tmp_path_factory.mktemp("launchers"), "basic", [])


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sweep(tmp_path_factory.mktemp("launchers"), "joblib", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])


def test_joblib_gives_each_trial_its_own_folder_and_tensorboard_run(joblib_sweep: Path) -> None:
    worker_pids = set()
    for num, seed in enumerate(SEEDS):
        trial = joblib_sweep / str(num)
        assert json.loads((trial / "status.json").read_text())["status"] == "completed"
        assert f"seed={seed}" in OmegaConf.load(trial / ".hydra" / "overrides.yaml")
        assert "Results in" in (trial / "train.log").read_text()
        events = list(trial.glob("events.out.tfevents.*"))
        assert len(events) == 1, events  # one run's events per folder
        worker_pids.add(events[0].name.split(".")[-2])  # events.out.tfevents.<time>.<host>.<pid>.<n>
        # The events in this folder are this trial's: their val/loss is the one in its metrics.json.
        accumulator = EventAccumulator(str(trial / "val"))  # the val curves' run
        accumulator.Reload()
        assert [e.value for e in accumulator.Scalars("epoch/loss")] == pytest.approx([metrics(trial)["val/loss"]])
    # loky starts both workers at once and each trial takes about a second, so both take trials.
    assert len(worker_pids) == 2, worker_pids


def test_joblib_results_equal_the_sequential_sweep(joblib_sweep: Path, basic_sweep: Path) -> None:
    for num in range(len(SEEDS)):
        assert metrics(joblib_sweep / str(num)) == metrics(basic_sweep / str(num)), f"trial {num}"
    # Different seeds, different runs: equality above is not that of four copies of one run.
    assert len({metrics(basic_sweep / str(num))["val/loss"] for num in range(len(SEEDS))}) == len(SEEDS)


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_submitit_local_runs_each_trial_as_a_job(tmp_path: Path, basic_sweep: Path) -> None:
    # The plugin's defaults suffice locally (timeout_min 60, gpus_per_node unset); 0 GPUs keeps
    # the jobs off any GPU the machine has, like trainer.device=cpu.
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.gpus_per_node=0"]
    sweep_dir = sweep(tmp_path, "submitit", launcher, seeds=SEEDS[:2])
    for num in range(2):
        assert metrics(sweep_dir / str(num)) == metrics(basic_sweep / str(num)), f"trial {num}"
    # submitit's folder (${hydra.sweep.dir}/.submitit/<job id>): each job's stdout and result.
    assert len(list((sweep_dir / ".submitit").glob("*/*_log.out"))) == 2
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2


def slurm_preset() -> dict[str, Any]:
    """configs/hydra/launcher/slurm.yaml's own values (its defaults list left out)."""
    values = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "hydra" / "launcher" / "slurm.yaml"))
    values.pop("defaults")
    return values


def test_slurm_preset_composes_onto_the_submitit_slurm_launcher() -> None:
    with initialize_config_module("nnlab.configs", version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    assert launcher["_target_"] == SLURM_LAUNCHER
    documented = {"partition", "nodes", "tasks_per_node", "gpus_per_node", "cpus_per_task", "mem_gb"}
    documented |= {"timeout_min", "array_parallelism", "name", "submitit_folder"}
    preset = slurm_preset()
    assert documented <= set(preset)
    assert {key: launcher[key] for key in preset} == preset
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert launcher["max_num_timeout"] == 0  # the plugin's keys the preset leaves alone are kept


def test_slurm_preset_submits_an_array_job(tmp_path: Path) -> None:
    """`nnlab-train -m hydra/launcher=slurm` up to sbatch: stand-ins for srun and sbatch (first on
    PATH) keep the batch script submitit wrote and refuse it, so no cluster is needed."""
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit only checks that srun exists
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\nfor last; do :; done\ncp "$last" "{script}"\necho "sbatch: stand-in" >&2\nexit 1\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    args += ["hydra.launcher.array_parallelism=2", f"hydra.sweep.dir='{sweep_dir}'"]
    result = run_cli(args, tmp_path, env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert result.returncode != 0 and "sbatch: stand-in" in result.stderr, result.stderr[-3000:]

    lines = set(script.read_text().splitlines())
    preset = slurm_preset()
    expected = {
        "--array=0-2%2",  # three trials, at most two at a time
        "--partition=gpu",
        f"--nodes={preset['nodes']}",
        f"--ntasks-per-node={preset['tasks_per_node']}",
        f"--gpus-per-node={preset['gpus_per_node']}",
        f"--cpus-per-task={preset['cpus_per_task']}",
        f"--mem={preset['mem_gb']}GB",
        f"--time={preset['timeout_min']}",
        "--job-name=train",
        f"--output={sweep_dir}/.submitit/%A_%a/%A_%a_0_log.out",
    }
    assert {f"#SBATCH {option}" for option in expected} <= lines, sorted(lines)
