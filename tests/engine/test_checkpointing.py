"""Checkpoint files: which ones ModelCheckpoint keeps (top-k, periodic, step snapshots), that a write
is atomic (a SIGKILL mid-write never leaves a broken last.ckpt), and that a file holds only
tensors and plain values, so it loads with weights_only=True and a crafted pickle is refused."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import nnlab.runs.pipeline
from helpers import Run, cli_env, epoch_curve, train_tiny, with_parts
from nnlab.engine.checkpoint import CheckpointWriter, load_checkpoint, save_checkpoint
from nnlab.engine.precision import Precision
from nnlab.errors import UserError

CPU = torch.device("cpu")
QUIET = ("trainer.device=cpu", "callbacks.health=null", "trainer.summary=false")
# Plain SGD with a large step on 2 batches an epoch: val/loss falls, then rises again at epoch 6
# (observed 1.51, 0.71, 0.59, 0.55, 0.58, 0.98), so the best epochs are not simply the last ones.
NOISY = (*QUIET, "trainer.max_epochs=6", "optimizer=sgd", "optimizer.lr=0.5")
EPOCH_FILE = re.compile(r"epoch-(\d{3})-val_loss-(\d+\.\d{4})\.ckpt")


def val_losses(run: Run) -> dict[int, float]:
    """{epoch: val/loss} as logged to TensorBoard."""
    return {e.step: e.value for e in epoch_curve(run.dir, "val/loss")}


def ckpt_names(run: Run) -> list[str]:
    return sorted(p.name for p in (run.dir / "checkpoints").iterdir())


def evaluate_with(run: Run, weights: dict[str, torch.Tensor], split: str) -> dict[str, float]:
    """Score `split` of the run's data with `weights`, outside the run."""
    cfg = run.cfg.copy()
    cfg.logger = None  # no second TensorBoard writer in the run's folder
    parts = nnlab.runs.pipeline.build(cfg)
    parts.data.setup(CPU)
    parts.task.configure(CPU, Precision("32", CPU), total_steps=1)
    parts.task.model.load_state_dict(weights)
    return parts.task.evaluate(parts.data.eval_batches(split))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- which files are kept -----------------------------------------------------------------------------


def test_save_top_k_keeps_the_k_best_epochs(tmp_path: Path) -> None:
    run = train_tiny([*NOISY, "callbacks.model_checkpoint.save_top_k=3"], tmp_path)
    losses = val_losses(run)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    kept = {int(m[1]): float(m[2]) for m in map(EPOCH_FILE.fullmatch, ckpt_names(run)) if m}
    best3 = sorted(losses, key=losses.get)[:3]
    assert sorted(kept) == sorted(best3)
    for epoch, value in kept.items():
        assert value == pytest.approx(losses[epoch], abs=1e-4)  # the name carries the score
    assert len(ckpt_names(run)) == 3 + 2  # and best.ckpt, last.ckpt
    best_epoch = best3[0]
    assert best_epoch != 6, losses  # (the config was chosen so that the best is not the last)
    best = run.checkpoint("best")
    top = torch.load(
        run.dir / "checkpoints" / f"epoch-{best_epoch:03d}-val_loss-{kept[best_epoch]:.4f}.ckpt", weights_only=True
    )
    assert best["epoch"] == top["epoch"] == best_epoch
    assert same_weights(best["model"], top["model"])
    assert not same_weights(best["model"], run.checkpoint("last")["model"])
    # test_ckpt=best: the test split was scored with those weights
    assert run.metrics["test/loss"] == pytest.approx(evaluate_with(run, best["model"], "test")["loss"], rel=1e-6)


def test_save_top_k_minus_one_keeps_every_epoch(tmp_path: Path) -> None:
    run = train_tiny([*NOISY, "callbacks.model_checkpoint.save_top_k=-1"], tmp_path)
    losses = val_losses(run)
    files = sorted(n for n in ckpt_names(run) if EPOCH_FILE.fullmatch(n))
    assert files == [f"epoch-{e:03d}-val_loss-{losses[e]:.4f}.ckpt" for e in range(1, 7)]
    for name in files:
        state = torch.load(run.dir / "checkpoints" / name, weights_only=True)
        assert state["metrics"]["val/loss"] == pytest.approx(losses[state["epoch"]])


def test_save_top_k_zero_writes_no_best_and_tests_the_last_weights(tmp_path: Path) -> None:
    run = train_tiny([*NOISY, "callbacks.model_checkpoint.save_top_k=0"], tmp_path)
    assert ckpt_names(run) == ["last.ckpt"]
    last = run.checkpoint("last")
    assert last["epoch"] == 6
    on_last = evaluate_with(run, last["model"], "test")["loss"]
    assert run.metrics["test/loss"] == pytest.approx(on_last, rel=1e-6)


# --- when last.ckpt and best.ckpt are written: save_interval_s ---------------------------------


class Clock:
    """A `time` stand-in for the checkpoint callback: each `monotonic()` call is `tick` seconds
    after the previous one (the first is at `tick`)."""

    def __init__(self, tick: float) -> None:
        self.tick, self.now = tick, 0.0

    def monotonic(self) -> float:
        self.now += self.tick
        return self.now


def record_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[str]]]:
    """(epoch of the state, file names) of every checkpoint write, in order."""
    writes: list[tuple[int, list[str]]] = []
    original = CheckpointWriter.write_frozen

    def spy(self: CheckpointWriter, frozen: dict[str, Any], paths: list[Path]) -> None:
        writes.append((frozen["epoch"], [Path(p).name for p in paths]))
        original(self, frozen, paths)

    monkeypatch.setattr(CheckpointWriter, "write_frozen", spy)
    return writes


# NOISY's val/loss is best at epoch 4; epochs 5 and 6 are worse.
BOTH, LAST, BEST = ["best.ckpt", "last.ckpt"], ["last.ckpt"], ["best.ckpt"]


@pytest.mark.parametrize(
    "interval, tick, expected",
    [
        # 0: the files of every epoch
        ("0", 1.0, [(1, BOTH), (2, BOTH), (3, BOTH), (4, BOTH), (5, LAST), (6, LAST)]),
        # longer than the run: the last epoch only, after the best epoch that was kept in memory
        ("1000", 1.0, [(4, BEST), (6, LAST)]),
        # a clock 4 s further at each look, 10 s apart: epoch 3 is the first at least 10 s after
        # the start (12 s); then the last epoch, and before it epoch 4's best
        ("10", 4.0, [(3, BOTH), (4, BEST), (6, LAST)]),
    ],
    ids=["every-epoch", "end-only", "clock"],
)
def test_last_and_best_are_written_at_most_every_save_interval_s(
    interval: str, tick: float, expected: list, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nnlab.engine.callbacks as callbacks

    monkeypatch.setattr(callbacks, "time", Clock(tick))
    writes = record_writes(monkeypatch)
    run = train_tiny([*NOISY, f"callbacks.model_checkpoint.save_interval_s={interval}"], tmp_path)
    losses = val_losses(run)
    assert min(losses, key=losses.get) == 4, losses
    assert writes == expected
    best, last = run.checkpoint("best"), run.checkpoint("last")
    assert (best["epoch"], last["epoch"]) == (4, 6)
    assert best["metrics"]["val/loss"] == pytest.approx(losses[4])
    # best.ckpt holds epoch 4 as it was, not the weights of a later epoch
    assert evaluate_with(run, best["model"], "val")["loss"] == pytest.approx(losses[4], rel=1e-5)
    assert last["callbacks"]["ModelCheckpoint"]["best_score"] == pytest.approx(losses[4])
    # test_ckpt=best scored the test split with epoch 4's weights
    assert run.metrics["test/loss"] == pytest.approx(evaluate_with(run, best["model"], "test")["loss"], rel=1e-6)


def test_a_best_epoch_kept_in_memory_is_written_when_training_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error after the best epoch (here in epoch 5's validation) ends the run before any
    write was due: best.ckpt is still written, with epoch 4; there is no last.ckpt."""
    writes = record_writes(monkeypatch)

    class FailAtEpoch5:
        def on_validation_end(self, trainer: Any, metrics: dict[str, float]) -> None:
            if trainer.epoch == 5:  # (the epoch just validated)
                raise RuntimeError("a failure in epoch 5")

    with_parts(monkeypatch, lambda parts: parts.trainer.callbacks.insert(0, FailAtEpoch5()))
    with pytest.raises(RuntimeError, match="a failure in epoch 5"):
        train_tiny([*NOISY, "callbacks.model_checkpoint.save_interval_s=1000"], tmp_path)
    assert writes == [(4, BEST)]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.ckpt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "best.ckpt")["epoch"] == 4


def test_every_n_epochs_keeps_periodic_snapshots(tmp_path: Path) -> None:
    run = train_tiny([*QUIET, "trainer.max_epochs=5", "callbacks.model_checkpoint.every_n_epochs=2"], tmp_path)
    periodic = [n for n in ckpt_names(run) if re.fullmatch(r"epoch-\d{3}\.ckpt", n)]
    assert periodic == ["epoch-002.ckpt", "epoch-004.ckpt"]
    for name, epoch in zip(periodic, (2, 4)):
        state = torch.load(run.dir / "checkpoints" / name, weights_only=True)
        assert (state["epoch"], state["global_step"], state["epoch_step"]) == (epoch, 2 * epoch, 0)


def steps_per_epoch(run: Run) -> int:
    """Training steps in one epoch of `run`, from its data (not a hard-coded count)."""
    cfg = run.cfg.copy()
    cfg.logger = None  # no second TensorBoard writer in the run's folder
    data = nnlab.runs.pipeline.build(cfg).data
    data.setup(CPU)
    return data.steps_per_epoch


@pytest.mark.parametrize(
    "batch_size, every",
    [
        (64, 7),  # 20 steps an epoch: every snapshot mid-epoch
        (64, 10),  # 20 steps an epoch: 20 and 40 end an epoch
        (128, 5),  # 10 steps an epoch: every other snapshot ends an epoch
    ],
)
def test_every_n_train_steps_snapshots_every_due_step(batch_size: int, every: int, tmp_path: Path) -> None:
    """Digits, 2 epochs: a snapshot at every multiple of `every`, including the steps that end an
    epoch (taken after that epoch's validation: its state is the epoch done, as epoch-E.ckpt's)."""
    run = train_tiny(
        [
            *QUIET,
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=null",
            f"data.batch_size={batch_size}",
            f"callbacks.model_checkpoint.every_n_train_steps={every}",
        ],
        tmp_path,
    )
    n = steps_per_epoch(run)
    due = list(range(every, 2 * n + 1, every))
    snapshots = [name for name in ckpt_names(run) if name.startswith("step-")]
    assert snapshots == [f"step-{s:06d}.ckpt" for s in due]
    for name, step in zip(snapshots, due):
        state = load_checkpoint(run.dir / "checkpoints" / name)
        assert state["global_step"] == step == n * state["epoch"] + state["epoch_step"]
        if step % n:
            assert 0 < state["epoch_step"] < n  # mid-epoch
        else:  # the epoch done: validated, metrics recorded
            assert state["epoch_step"] == 0
            assert state["metrics"]["val/loss"] == pytest.approx(val_losses(run)[state["epoch"]])


def test_step_snapshots_wait_for_the_end_of_an_accumulation_window(tmp_path: Path) -> None:
    """k = 2 and a snapshot due every 3 steps: one due at an odd step (inside a window, with
    gradients no checkpoint holds) is taken at the next step, which completes the window."""
    run = train_tiny(
        [
            *QUIET,
            "trainer.limit_train_batches=null",
            "trainer.accumulate_grad_batches=2",
            "callbacks.model_checkpoint.every_n_train_steps=3",
        ],
        tmp_path,
    )
    snapshots = [n for n in ckpt_names(run) if n.startswith("step-")]
    assert snapshots == [f"step-{s:06d}.ckpt" for s in (4, 6, 10, 12, 16, 18)]
    for name in snapshots:
        state = load_checkpoint(run.dir / "checkpoints" / name)
        assert state["epoch_step"] % 2 == 0 and state["epoch"] == 0


def test_a_step_snapshot_put_off_to_the_end_of_an_epoch_is_written(tmp_path: Path) -> None:
    """k = 3 and a snapshot due at step 19 of a 20-step epoch: the window that holds step 19 ends
    with the epoch, so the snapshot is taken there, after validation."""
    run = train_tiny(
        [
            *QUIET,
            "trainer.limit_train_batches=null",
            "trainer.accumulate_grad_batches=3",
            "callbacks.model_checkpoint.every_n_train_steps=19",
        ],
        tmp_path,
    )
    n = steps_per_epoch(run)
    assert n == 20  # (so that step 19 is inside a window that the epoch's end closes)
    assert [name for name in ckpt_names(run) if name.startswith("step-")] == ["step-000020.ckpt"]
    state = load_checkpoint(run.dir / "checkpoints" / "step-000020.ckpt")
    assert (state["epoch"], state["epoch_step"], state["global_step"]) == (1, 0, 20)


# --- atomic writes ---------------------------------------------------------------------------------------

# Forks writers that save `last.ckpt` in a loop, one per line read (the line is its counter base),
# and reaps one when asked, printing how it ended. Forking from this small process (not pytest's)
# keeps each writer single-threaded, and torch is imported once for all of them.
WRITER = r"""
import os, sys, torch
from nnlab.engine.checkpoint import save_checkpoint
path, n = sys.argv[1], int(sys.argv[2])
pid = None
for line in sys.stdin:
    if line.strip() == "reap":
        _, status = os.waitpid(pid, 0)
        print(os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        counter = int(line)
        while True:
            counter += 1
            save_checkpoint({"counter": counter, "values": torch.full((n,), float(counter))}, path)
    print(pid, flush=True)
"""
BLOCK = 100_000  # counters of writer i are i * BLOCK + 1, 2, ... (exact in float32)


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
@pytest.mark.skipif(sys.platform == "win32", reason="fork and SIGKILL are POSIX")
def test_a_write_killed_at_any_moment_leaves_a_complete_last_ckpt(tmp_path: Path) -> None:
    n = 8_000_000  # 32 MB of float32: a write takes tens of milliseconds
    path = tmp_path / "last.ckpt"
    save_checkpoint({"counter": 0, "values": torch.zeros(n)}, path)
    delays = [0.05 + 0.95 * i / 9 for i in range(10)]  # 0.05 ... 1 s
    random.Random(0).shuffle(delays)
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**cli_env(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    previous, completed, interrupted = 0, 0, 0
    try:
        for i, delay in enumerate(delays, start=1):
            proc.stdin.write(f"{i * BLOCK}\n")
            proc.stdin.flush()
            pid = int(proc.stdout.readline())
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)
            proc.stdin.write("reap\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) == signal.SIGKILL  # it was still writing

            state = load_checkpoint(path)  # never truncated, never a mix of two writes
            counter = state["counter"]
            assert torch.equal(state["values"], torch.full((n,), float(counter))), counter
            assert counter >= previous  # never an older state than one already seen
            assert counter // BLOCK in (i, previous // BLOCK)  # this writer's, or the one before
            completed += counter // BLOCK == i
            leftovers = list(tmp_path.glob("*.tmp"))
            assert [p.name for p in leftovers] in ([], [f"last.ckpt.{pid}.tmp"])  # only the killed write's
            interrupted += bool(leftovers)
            for p in leftovers:
                p.unlink()
            previous = counter
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    # The kills did land both between and in the middle of writes (each is ~80% of a writer's time).
    assert completed >= 3 and interrupted >= 1, (completed, interrupted)


# --- what a checkpoint holds --------------------------------------------------------------------------------


def assert_plain(value: Any, where: str = "state") -> None:
    """Only tensors, numbers, strings, None, and lists/tuples/dicts of them."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, (str, int)), f"{where}: key {k!r}"
            assert_plain(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            assert_plain(v, f"{where}[{i}]")
    else:
        assert value is None or isinstance(value, (torch.Tensor, bool, int, float, str)), f"{where}: {type(value)}"


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine_warmup", "plateau", "multistep", "exponential", "step"])
def test_every_checkpoint_loads_with_weights_only(scheduler: str, tmp_path: Path) -> None:
    run = train_tiny(
        [
            *QUIET,
            "trainer.max_epochs=2",
            "trainer.precision=32",
            f"scheduler={scheduler}",
            "regularization.ema_decay=0.9",
            "callbacks.model_checkpoint.save_top_k=-1",
            "callbacks.model_checkpoint.every_n_epochs=1",
            "callbacks.model_checkpoint.every_n_train_steps=1",
        ],
        tmp_path,
    )
    files = sorted((run.dir / "checkpoints").glob("*.ckpt"))
    assert len(files) == 2 + 2 + 2 + 4  # last, best, 2 top-k, 2 epoch-, 4 step- (2 and 4 end an epoch)
    for path in files:
        state = torch.load(path, weights_only=True)
        assert_plain(state, path.name)
        assert state["ema"] is not None and state["task"]["optim"]["scheduler"] is not None


class Payload:
    """Unpickling it creates `marker`: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.marker.touch, ())


def test_a_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 1, "extra": Payload(marker)}, path)
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"Refused to load {path}: its pickle refers to code (builtins.getattr")
    assert "weights_only" not in message  # (torch's own text advises weights_only=False)
    assert "\x1b" not in message  # (torch's message carries terminal colour codes)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: a plain unpickle runs it
    assert marker.exists()


def test_a_missing_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    with pytest.raises(UserError, match="Checkpoint not found") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_an_empty_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    """A zero-byte file (a full disk, a copy gone wrong): torch raises EOFError('')."""
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="Could not read checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_file_that_is_no_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_a_truncated_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    path = save_checkpoint({"values": torch.arange(100_000.0)}, tmp_path / "last.ckpt")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated or not a PyTorch checkpoint"):
        load_checkpoint(path)


def test_the_background_writer_writes_the_state_as_it_was_taken(tmp_path: Path) -> None:
    w = torch.ones(3)
    writer = CheckpointWriter()
    writer.write({"model": {"w": w}, "epoch": 1}, [tmp_path / "last.ckpt", tmp_path / "best.ckpt"])
    w.mul_(5)  # training goes on while the file is written
    writer.wait()
    for name in ("last.ckpt", "best.ckpt"):
        state = load_checkpoint(tmp_path / name)
        assert torch.equal(state["model"]["w"], torch.ones(3)) and state["epoch"] == 1
    assert (tmp_path / "best.ckpt").stat().st_ino == (tmp_path / "last.ckpt").stat().st_ino  # one write, a link
    writer.write({"epoch": 2}, [tmp_path / "last.ckpt"])  # replaces last only; best keeps epoch 1
    writer.wait()
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary files left


def test_a_failed_background_write_is_raised_by_wait(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    writer = CheckpointWriter()
    writer.write({"epoch": 1}, [tmp_path / "file" / "last.ckpt"])
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # raised once


def test_a_snapshot_copies_every_tensor_and_keeps_state_dict_metadata() -> None:
    from nnlab.engine.checkpoint import snapshot

    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optim": optimizer.state_dict(), "pair": (torch.ones(1), 2)}
    copy = snapshot(state)
    assert copy["model"]._metadata == state["model"]._metadata  # BatchNorm's version, read on load
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    optimizer.state[model[0].weight]["exp_avg"].add_(1.0)
    assert not torch.equal(copy["model"]["0.weight"], model[0].weight)
    assert not torch.equal(copy["optim"]["state"][0]["exp_avg"], optimizer.state[model[0].weight]["exp_avg"])
    assert isinstance(copy["pair"], tuple) and copy["pair"][1] == 2
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    fresh.load_state_dict(copy["model"])
    torch.optim.Adam(fresh.parameters()).load_state_dict(copy["optim"])
