"""Exact resume: a run continued from a checkpoint ends bitwise-identical to one never stopped.

The runs use every stateful part at once: dropout and augmentation (random numbers), a per-step
LR schedule, an EMA of the weights, Adam's moments, in deterministic mode on the CPU.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import Run, assert_same, compose_config, epoch_curve, run_cli, train_tiny
from nnlab.errors import Stopped
from nnlab.runs.pipeline import train

STATEFUL = (
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=null",
    "trainer.deterministic=true",
    "trainer.device=cpu",
    "model.hidden_sizes=[32]",
    "augmentation=shift",
    "scheduler=cosine_warmup",
    "regularization.ema_decay=0.9",
    "callbacks.model_checkpoint.every_n_train_steps=7",
    "callbacks.model_checkpoint.every_n_epochs=1",
)
STEPS_PER_EPOCH = 20  # digits: 1259 training rows in batches of 64


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The uninterrupted run, with a snapshot every 7 steps and every epoch."""
    return train_tiny(STATEFUL, tmp_path_factory.mktemp("reference"))


def resume_from(snapshot: Path, run_dir: Path, overrides: tuple[str, ...] = ()) -> Run:
    """Continue the same config from a copy of `snapshot` (in a folder of its own)."""
    run_dir.mkdir(parents=True)
    ckpt = run_dir / "start.ckpt"
    shutil.copy(snapshot, ckpt)
    cfg = compose_config([*STATEFUL, *overrides, "callbacks.progress=null", f"ckpt_path='{ckpt}'"], run_dir)
    return Run(cfg, train(cfg), Path(cfg.paths.output_dir))


@pytest.mark.parametrize(
    "snapshot",
    [
        "epoch-001.ckpt",  # an epoch boundary
        "step-000007.ckpt",  # mid-epoch, in the first epoch
        "step-000028.ckpt",  # mid-epoch, in the second epoch (step 8 of 20)
    ],
)
def test_resumed_run_ends_bitwise_identical(reference: Run, snapshot: str, tmp_path: Path) -> None:
    start = torch.load(reference.dir / "checkpoints" / snapshot, weights_only=True)
    if snapshot.startswith("step"):
        assert 0 < start["epoch_step"] < STEPS_PER_EPOCH  # really mid-epoch
    else:
        assert start["epoch_step"] == 0 and start["epoch"] == 1
    resumed = resume_from(reference.dir / "checkpoints" / snapshot, tmp_path / "resumed")

    want, got = reference.checkpoint("last"), resumed.checkpoint("last")
    assert got["global_step"] == want["global_step"] == 3 * STEPS_PER_EPOCH
    for key in ("model", "ema", "task"):  # weights, EMA, optimizer moments + scheduler state
        assert_same(want[key], got[key], key)
    assert_same(want["rng"], got["rng"], "rng")
    # Epoch metrics too (a mid-epoch resume carries the partial epoch's averages).
    assert resumed.metrics == reference.metrics


def test_a_step_snapshot_at_an_epoch_end_resumes_bitwise_identical(reference: Run, tmp_path: Path) -> None:
    """every_n_train_steps=10 with 20 steps an epoch: step-000020 and step-000040 end an epoch.
    They hold the epoch done (validated; its scheduler step, early-stopping and best-checkpoint
    decisions taken), so a run resumed from one starts the next epoch and ends as `reference`
    (the same training; its snapshots are taken elsewhere, which changes nothing)."""
    every_10 = train_tiny((*STATEFUL, "callbacks.model_checkpoint.every_n_train_steps=10"), tmp_path / "every_10")
    assert_same(reference.checkpoint("last")["model"], every_10.checkpoint("last")["model"], "model")
    for step in (STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH):
        snapshot = every_10.dir / "checkpoints" / f"step-{step:06d}.ckpt"
        start = torch.load(snapshot, weights_only=True)
        assert (start["epoch"], start["epoch_step"]) == (step // STEPS_PER_EPOCH, 0)  # the epoch done
        resumed = resume_from(snapshot, tmp_path / f"from_{step}")
        want, got = reference.checkpoint("last"), resumed.checkpoint("last")
        for key in ("model", "ema", "task", "rng", "metrics"):
            assert_same(want[key], got[key], f"from step {step}: {key}")
        best = [state["callbacks"]["ModelCheckpoint"]["best_score"] for state in (want, got)]
        assert best[0] == best[1]  # (its best_path differs: another folder)
        assert resumed.metrics == reference.metrics


def test_the_per_tensor_update_resumes_bitwise_too_and_keeps_its_update(tmp_path: Path) -> None:
    """optimizer.fused=null (PyTorch's update, one tensor at a time; the default before updates
    were fused): the resumed run ends identical to the uninterrupted one. Resumed under today's
    default (fused) without the override, it keeps the checkpoint's setting, as it keeps the
    checkpoint's learning rate: the same update, so the same weights."""
    per_tensor = ("optimizer.fused=null",)
    reference = train_tiny((*STATEFUL, *per_tensor), tmp_path / "reference")
    snapshot = reference.dir / "checkpoints" / "step-000028.ckpt"
    want = reference.checkpoint("last")
    assert [g["fused"] for g in want["task"]["optim"]["optimizer"]["param_groups"]] == [None]
    for name, overrides in (("same_config", per_tensor), ("new_default", ())):
        got = resume_from(snapshot, tmp_path / name, overrides).checkpoint("last")
        assert_same(want["model"], got["model"], f"{name}: model")
        assert_same(want["task"], got["task"], f"{name}: task")


def test_the_fused_default_resumes_bitwise_with_clipping_accumulation_and_the_skip_policy(tmp_path: Path) -> None:
    """The default update is fused (Adam's one kernel). With gradient clipping, accumulation over
    two batches and nonfinite=skip on top of STATEFUL's EMA, schedule and augmentation, a run
    resumed mid-epoch ends identical to the one never stopped."""
    extra = ("trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2", "trainer.nonfinite=skip")
    reference = train_tiny((*STATEFUL, *extra), tmp_path / "reference")
    want = reference.checkpoint("last")
    assert [g["fused"] for g in want["task"]["optim"]["optimizer"]["param_groups"]] == [True]
    snapshots = sorted((reference.dir / "checkpoints").glob("step-*.ckpt"))
    mid_epoch = [s for s in snapshots if torch.load(s, weights_only=True)["epoch_step"] > 0]
    assert mid_epoch, [s.name for s in snapshots]
    got = resume_from(mid_epoch[-1], tmp_path / "resumed", extra).checkpoint("last")
    for key in ("model", "ema", "task", "rng", "metrics"):
        assert_same(want[key], got[key], key)


def test_resume_auto_continues_the_interrupted_run_in_its_folder(tmp_path: Path) -> None:
    """Stop a run with Ctrl-C's path (a step boundary), then `trainer.resume=auto` in the same
    folder: the TensorBoard run keeps growing and the result equals an uninterrupted run."""
    overrides = [*STATEFUL, "trainer.max_epochs=2", "trainer.log_every_n_steps=10"]
    whole = train_tiny(overrides, tmp_path / "whole")

    run_dir = tmp_path / "interrupted"
    cfg = compose_config([*overrides, "callbacks.progress=null"], run_dir)
    stop_at = 27

    class StopAt:  # what a first Ctrl-C does, at a known step
        def on_train_batch_end(self, trainer) -> None:
            if trainer.global_step == stop_at:
                trainer.stop_signals.requested = signal.SIGINT

    import nnlab.runs.pipeline as nnlab_pipeline

    build = nnlab_pipeline.build

    def build_with_stop(cfg):
        parts = build(cfg)
        parts.trainer.callbacks.append(StopAt())
        return parts

    nnlab_pipeline.build = build_with_stop
    try:
        with pytest.raises(Stopped) as stopped:
            train(cfg)
        assert stopped.value.signum == signal.SIGINT and stopped.value.cause == "Ctrl-C"
    finally:
        nnlab_pipeline.build = build
    interrupted = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["global_step"] == stop_at and interrupted["epoch_step"] == stop_at - STEPS_PER_EPOCH

    resumed = train_tiny([*overrides, "trainer.resume=auto"], run_dir)
    assert_same(whole.checkpoint()["model"], resumed.checkpoint()["model"], "model")
    assert resumed.metrics == whole.metrics
    # One TensorBoard run: the step scalars run on from before the interruption to the end.
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("train/loss_step")]
    assert min(steps) <= 20 and max(steps) == 2 * STEPS_PER_EPOCH
    assert [e.step for e in epoch_curve(run_dir, "val/loss")] == [1, 2]
    # The record of the run it continues is kept; the resume's own is beside it.
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "resume" / "config.yaml").is_file()


def test_resume_auto_without_a_checkpoint_starts_fresh(tmp_path: Path) -> None:
    run = train_tiny(["trainer.resume=auto"], tmp_path / "fresh")
    assert run.checkpoint()["global_step"] == 2


def test_checkpoint_of_another_model_is_refused_clearly(tmp_path: Path) -> None:
    first = train_tiny(["model.hidden_sizes=[16]"], tmp_path / "small")
    from nnlab.errors import UserError

    cfg = compose_config(
        ["trainer.max_epochs=1", "callbacks.progress=null", f"ckpt_path='{first.dir / 'checkpoints' / 'last.ckpt'}'"],
        tmp_path / "big",
    )
    with pytest.raises(UserError, match="does not fit this model"):
        train(cfg)


README = Path(__file__).resolve().parents[2] / "README.md"


def readme_resume_example() -> list[list[str]]:
    """The commands of README.md's resume example (the bash block that resumes from
    step-000300.ckpt), as argument lists without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    block = next(b for b in blocks if "step-000300.ckpt" in b)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "max_epochs",
    [
        16,  # sized down: step 300 ends epoch 15 of 20 steps; 100 epochs make the three runs take ~50 s
        pytest.param(100, marks=pytest.mark.slow, id="as-printed"),
    ],
)
def test_the_readme_resume_example_runs_as_printed(max_epochs: int, tmp_path: Path) -> None:
    """Train with a snapshot every 50 steps, continue with resume=auto, then from step-000300.ckpt
    (the end of epoch 15, a step snapshot at an epoch's end): each command succeeds."""
    commands = readme_resume_example()
    assert [c[0] for c in commands] == ["nnlab-train"] * 3
    for command in commands:
        args = [a.replace("trainer.max_epochs=100", f"trainer.max_epochs={max_epochs}") for a in command[1:]]
        result = run_cli([*args, "callbacks.progress=null"], tmp_path)
        assert result.returncode == 0, result.stderr
        if any(a.startswith("ckpt_path=") for a in args):
            log = result.stdout + result.stderr
            assert "Resumed from outputs/runs/long/checkpoints/step-000300.ckpt: epoch 15, step 300" in log
    last = torch.load(tmp_path / "outputs/runs/long/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == max_epochs * STEPS_PER_EPOCH
