"""Crash safety: a run SIGKILLed at any moment leaves only loadable checkpoints, and
`trainer.resume=auto` in its folder finishes it bitwise-identical to a run never stopped.

Each case runs the real command line twice: `tests/kill_worker.py MOMENT <config>` (nnlab-train
with one patch that SIGKILLs the process at MOMENT: no cleanup of any kind runs), then plain
`nnlab-train <config> trainer.resume=auto` in the same folder. tests/engine/test_resume.py covers
resuming from each kind of checkpoint and after Ctrl-C; tests/engine/test_checkpointing.py a bare
`save_checkpoint` killed mid-write. Here the kills land inside a whole run: in the step loop,
validation, the background checkpoint writer, its hard links, TensorBoard logging and the test.

Sweeps: a failing trial does not end a sweep (tests/commands/test_report.py::test_failed_trial_listed_last_
with_its_error for a grid, tests/runs/test_optuna_sweep.py::test_a_failing_trial_is_recorded_and_the_
search_goes_on for Optuna), and a search stopped by Ctrl-C continues (tests/runs/test_optuna_sweep.py::
test_a_search_stopped_by_ctrl_c_continues_and_fails_its_stale_trial); a SIGKILLed one is here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import CLI_TIMEOUT_S, TINY, cli_env, epoch_curve, run_cli
from nnlab.engine.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

WORKER = Path(__file__).parents[1] / "kill_worker.py"
SIGKILLED = -9  # subprocess's returncode for a child killed by signal 9

# Digits: 3 epochs of 20 steps with every stateful part on (dropout and augmentation draw random
# numbers; a per-step LR schedule, an EMA of the weights, Adam's moments). Checkpoints: a step
# snapshot (and last.ckpt) at steps 15, 30, 45, mid-epoch; last.ckpt and best.ckpt at each epoch's
# end, steps 20, 40, 60 (val/loss falls every epoch). TensorBoard is written at steps 10, 20,
# epoch 1, steps 30, 40, epoch 2, ... (step scalars every 10 steps, epoch scalars after validation).
CONFIG = (
    "data=digits",
    "data.eval_batch_size=64",  # validation in 3 batches, the test in 6: a kill can land inside either
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=null",
    "trainer.deterministic=true",
    "trainer.device=cpu",
    "trainer.summary=false",
    "trainer.log_every_n_steps=10",  # (the TensorBoard moments below count on it)
    "callbacks.progress=null",
    "model.hidden_sizes=[32]",
    "augmentation=shift",
    "scheduler=cosine_warmup",
    "regularization.ema_decay=0.9",
    "callbacks.model_checkpoint.every_n_train_steps=15",
    # Every epoch's files, whatever the time (by default at most every 10 s): the moments below
    # include kills inside each of those writes.
    "callbacks.model_checkpoint.save_interval_s=0",
)
STEPS = 60


def run_killed(moment: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), moment, *CONFIG, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        env=cli_env(run_dir.parent),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def checkpoints(run_dir: Path) -> dict[str, dict[str, Any]]:
    """{name: state} of every *.ckpt in the run's checkpoints/ folder, each read as resume reads it."""
    return {p.name: load_checkpoint(p) for p in sorted((run_dir / "checkpoints").glob("*.ckpt"))}


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def val_loss_epochs(run_dir: Path) -> set[int]:
    return {e.step for e in epoch_curve(run_dir, "val/loss")}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of CONFIG run from start to end, never stopped."""
    cwd = tmp_path_factory.mktemp("crash_reference")
    result = run_cli([*CONFIG, f"hydra.run.dir={cwd / 'run'}"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd / "run"


@dataclass(frozen=True)
class Kill:
    moment: str  # kill_worker.py's MOMENT
    last_step: int | None  # global_step of the last.ckpt the kill leaves (None: no last.ckpt yet)
    tmp_left: bool = False  # the kill interrupts a write: its half-done .tmp file is left

    def expected_last_steps(self) -> set[int | None]:
        return {self.last_step}


def case(id: str, kill: Kill, slow: bool = True) -> Any:
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(kill, id=id, marks=marks)


KILLS = [
    # Representative, in the default suite: a kill in validation (the writer's case runs with -m slow).
    # Writes: step 15's snapshot (+ last.ckpt), epoch 1's last.ckpt (+ best.ckpt), step 30, epoch 2, ...
    case("during-checkpoint-write", Kill("save_half:4", last_step=30, tmp_left=True)),  # epoch 2
    case("during-validation", Kill("validation:2:2", last_step=30), slow=False),
    case("mid-epoch", Kill("before_step:33", last_step=30)),  # epoch 2, step 13
    # The rest with -m slow.
    case("before-the-first-step", Kill("before_step:1", last_step=None)),
    case("mid-epoch-after-an-epoch-end", Kill("before_step:27", last_step=20)),  # resumes at a boundary
    case("last-step-before-validation", Kill("after_step:40", last_step=30)),
    case("after-validation-before-the-checkpoint", Kill("before_checkpoint:2", last_step=30)),
    case("during-a-step-snapshot-write", Kill("save_half:3", last_step=20, tmp_left=True)),  # step 30
    # Links: step 15's last.ckpt, epoch 1's best.ckpt, step 30's last.ckpt, epoch 2's best.ckpt, ...
    # (last.ckpt is the last file of each write, so a kill before it resumes from the previous one.)
    case("during-a-hard-link", Kill("in_link:4", last_step=30, tmp_left=True)),
    case("during-tensorboard-logging", Kill("log_metrics:6", last_step=30)),  # epoch 2's scalars
    case("during-the-test", Kill("in_test:3", last_step=STEPS)),
    case("while-writing-metrics-json", Kill("metrics_json", last_step=STEPS)),
    case("last-epoch-between-best-ckpt-and-last-ckpt", Kill("before_link:6", last_step=45)),  # epoch 3
]


@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_run_resumes_exactly(kill: Kill, reference: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    killed = run_killed(kill.moment, run_dir)
    assert killed.returncode == SIGKILLED, (killed.returncode, killed.stderr[-3000:])

    # What the kill left: every checkpoint loads (none truncated, none half-linked) ...
    left = checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else {}
    last = left["last.ckpt"]["global_step"] if "last.ckpt" in left else None
    assert last in kill.expected_last_steps()  # ... and the kill landed where it was meant to
    tmp_files = list((run_dir / "checkpoints").glob("*.tmp")) if left else []
    assert bool(tmp_files) == kill.tmp_left, tmp_files
    assert not (run_dir / "metrics.json").is_file() or kill.moment == "metrics_json"

    resumed = run_cli([*CONFIG, f"hydra.run.dir={run_dir}", "trainer.resume=auto"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if kill.last_step is not None:  # (train.log: the console's lines may be wrapped)
        assert f"Resumed from {run_dir / 'checkpoints' / 'last.ckpt'}" in (run_dir / "train.log").read_text()

    # Final weights bitwise identical to the reference's, and the same metrics ...
    want, got = checkpoints(reference), checkpoints(run_dir)
    assert got["last.ckpt"]["global_step"] == STEPS
    assert same_tensors(want["last.ckpt"]["model"], got["last.ckpt"]["model"])
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads((reference / "metrics.json").read_text())
    # ... and the same checkpoint files, each of the same step and weights (best.ckpt included).
    assert got.keys() == want.keys()
    for name in want:
        assert got[name]["global_step"] == want[name]["global_step"], name
        assert same_tensors(want[name]["model"], got[name]["model"]), name
    # The TensorBoard run stays readable, every epoch's validation in it.
    assert val_loss_epochs(run_dir) == {1, 2, 3}


# --- sweeps --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_killed_optuna_search_continues_when_rerun(tmp_path: Path) -> None:
    """SIGKILL a search in trial 1's first step (TINY trials: 2 steps each): no Ctrl-C handler
    runs, so the study keeps trial 1 RUNNING and its folder says "running". The same command
    then fails that stale trial and runs the rest."""
    optuna = pytest.importorskip("optuna", reason="needs the sweep extra: pip install -e '.[sweep]'")
    from optuna.trial import TrialState

    study, sweep_dir = "digits_mlp_optuna", tmp_path / "sweep"
    args = [
        "-m",
        f"hparams_search={study}",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep_dir}",
        *TINY,
        "trainer.summary=false",
    ]

    def status(trial: str) -> str:
        return json.loads((sweep_dir / trial / "status.json").read_text())["status"]

    def states() -> list[TrialState]:
        trials = optuna.load_study(study_name=study, storage=f"sqlite:///{sweep_dir}/optuna.db").get_trials()
        return [t.state for t in trials]

    killed = subprocess.run(
        [sys.executable, str(WORKER), "before_step:3", *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert killed.returncode == SIGKILLED, killed.stderr[-3000:]
    assert states() == [TrialState.COMPLETE, TrialState.RUNNING]
    assert status("0") == "completed" and status("1") == "running"

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Trial 1 was left running by an interrupted sweep: marked FAIL" in output
    assert "2 of 3 trials done (1 failed); running 1 more" in output
    assert states() == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert status("2") == "completed" and status("1") == "running"  # folder 1 is not reused
