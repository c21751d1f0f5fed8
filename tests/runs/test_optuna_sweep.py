"""Optuna searches (hparams_search=digits_mlp_optuna) from the command line: the study and its trial
folders agree, a rerun continues the study instead of starting over, failed trials are recorded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import CLI_TIMEOUT_S, TINY, cli_env, run_cli

optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

STUDY = "digits_mlp_optuna"
SEARCH = f"hparams_search={STUDY}"
TRIAL = (*TINY, "trainer.summary=false")


def search(sweep_dir: Path, n_trials: int, *overrides: str) -> list[str]:
    return ["-m", SEARCH, f"hydra.sweeper.n_trials={n_trials}", f"hydra.sweep.dir={sweep_dir}", *TRIAL, *overrides]


def trials(sweep_dir: Path) -> list[FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{sweep_dir}/optuna.db").get_trials()


def trial_folders(sweep_dir: Path) -> list[str]:
    return sorted((p.name for p in sweep_dir.iterdir() if p.is_dir()), key=int)


def assert_trials_match_folders(sweep_dir: Path) -> None:
    """Trial k ran in folder k: a completed trial with the trial's parameters, returning its
    folder's val/loss; a failed one left its status there."""
    for trial in trials(sweep_dir):
        folder = sweep_dir / str(trial.number)
        status = json.loads((folder / "status.json").read_text())["status"]
        if trial.state == TrialState.FAIL:
            assert status in ("failed", "interrupted")
            continue
        assert trial.state == TrialState.COMPLETE and status == "completed"
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
        assert f"optimizer={trial.params['optimizer']}" in overrides
        assert f"model.hidden_sizes={trial.params['model.hidden_sizes']}" in overrides
        assert trial.value == json.loads((folder / "metrics.json").read_text())["val/loss"]


@pytest.fixture(scope="module")
def first_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished search of 3 tiny trials; its sweep folder."""
    cwd = tmp_path_factory.mktemp("search")
    result = run_cli(search(cwd / "sweep", 3), cwd)
    assert result.returncode == 0, result.stderr
    return cwd / "sweep"


def test_a_search_records_each_trial_in_the_study_and_a_folder(first_search: Path) -> None:
    assert (first_search / "optuna.db").is_file()
    assert trial_folders(first_search) == ["0", "1", "2"]
    study_trials = trials(first_search)
    assert [t.state for t in study_trials] == [TrialState.COMPLETE] * 3
    assert_trials_match_folders(first_search)
    assert len({t.params["optimizer.lr"] for t in study_trials}) == 3  # the sampler drew each trial
    best = min(study_trials, key=lambda t: t.value)
    results = yaml.safe_load((first_search / "optimization_results.yaml").read_text())
    assert results["best_value"] == best.value
    assert results["best_params"] == best.params


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_rerunning_a_search_continues_its_study(first_search: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    subprocess.run(["cp", "-a", str(first_search), str(sweep_dir)], check=True)  # -a: keeps the mtimes
    before = {t: (sweep_dir / t / "metrics.json").stat().st_mtime_ns for t in ("0", "1", "2")}
    old_trials = trials(sweep_dir)

    result = run_cli(search(sweep_dir, 5), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Study digits_mlp_optuna: 3 of 5 trials done (0 failed); running 2 more" in result.stdout + result.stderr
    study_trials = trials(sweep_dir)
    assert [t.state for t in study_trials] == [TrialState.COMPLETE] * 5  # 5, not 3 + 5
    assert [(t.params, t.value) for t in study_trials[:3]] == [(t.params, t.value) for t in old_trials]
    assert len({t.params["optimizer.lr"] for t in study_trials}) == 5  # not the first run's draws again
    assert trial_folders(sweep_dir) == ["0", "1", "2", "3", "4"]
    assert {t: (sweep_dir / t / "metrics.json").stat().st_mtime_ns for t in before} == before
    assert_trials_match_folders(sweep_dir)

    # A finished search reruns nothing.
    result = run_cli(search(sweep_dir, 5), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 of 5 trials done (0 failed); running 0 more" in result.stdout + result.stderr
    assert len(trials(sweep_dir)) == 5 and trial_folders(sweep_dir) == ["0", "1", "2", "3", "4"]


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_a_search_stopped_by_ctrl_c_continues_and_fails_its_stale_trial(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # 100 epochs of 2 batches (~2 s a trial): time to catch trial 1 while it trains.
    args = search(sweep_dir, 3, "trainer.max_epochs=100")
    with (tmp_path / "first.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "nnlab.commands.train", *args],
            cwd=tmp_path,
            env=cli_env(tmp_path),
            stdout=log,
            stderr=log,
        )
        started = sweep_dir / "1" / "status.json"  # written when trial 1 starts training
        deadline = time.monotonic() + CLI_TIMEOUT_S
        while not started.is_file() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, (tmp_path / "first.log").read_text()
    assert "the same command continues it" in (tmp_path / "first.log").read_text()
    assert json.loads(started.read_text())["status"] == "interrupted"
    assert [t.state for t in trials(sweep_dir)] == [TrialState.COMPLETE, TrialState.RUNNING]  # as Ctrl-C left it

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Trial 1 was left running by an interrupted sweep: marked FAIL" in output
    assert "Study digits_mlp_optuna: 2 of 3 trials done (1 failed); running 1 more" in output
    assert [t.state for t in trials(sweep_dir)] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trial_folders(sweep_dir) == ["0", "1", "2"]
    assert json.loads(started.read_text())["status"] == "interrupted"  # folder 1 is not reused
    assert_trials_match_folders(sweep_dir)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    # Half of this search space is invalid; sampler seed 3 draws lr=-1 for trials 0 and 2.
    result = run_cli(search(sweep_dir, 3, "optimizer.lr=choice(0.001,-1)", "hydra.sweeper.sampler.seed=3"), tmp_path)
    assert result.returncode == 0, result.stderr  # max_failure_rate: 1.0
    assert "Error: optimizer.lr=-1 is out of range" in result.stderr
    study_trials = trials(sweep_dir)
    assert [t.state for t in study_trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    assert [t.params["optimizer.lr"] for t in study_trials] == [-1, 0.001, -1]
    assert_trials_match_folders(sweep_dir)  # the failed trials' status.json say so


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_a_search_where_every_trial_fails_ends_in_one_error(tmp_path: Path) -> None:
    result = run_cli(search(tmp_path / "sweep", 2, "optimizer.lr=-1"), tmp_path)
    assert result.returncode == 2
    assert result.stderr.rstrip().splitlines()[-1].startswith(f"Error: No trial of study '{STUDY}' completed")
    assert "Traceback" not in result.stderr


def test_continuing_a_study_in_the_other_direction_is_refused(first_search: Path, tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    subprocess.run(["cp", "-a", str(first_search), str(sweep_dir)], check=True)
    args = search(sweep_dir, 4, "hydra.sweeper.direction=maximize", "optimized_metric=val/acc", "optimized_mode=max")
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    assert f"Error: Study '{STUDY}' in sqlite:///{sweep_dir}/optuna.db was created to minimize" in result.stderr
    assert len(trials(sweep_dir)) == 3 and trial_folders(sweep_dir) == ["0", "1", "2"]
