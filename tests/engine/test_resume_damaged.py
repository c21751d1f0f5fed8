"""Resuming when a checkpoint file is damaged (a disk fault, a copy cut short, a full disk).

`trainer.resume=auto` with an unreadable last.ckpt continues from the run's newest checkpoint
that loads, renaming the damaged files aside; when none loads it stops with a fix, and the fix
works. A damaged `ckpt_path=` fails and names a file that does load. A file whose pickle refers
to code is never skipped on the way.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pytest
import torch
from test_resume import STATEFUL, STEPS_PER_EPOCH, assert_same

from helpers import TINY, run_cli, train_tiny
from nnlab.engine.checkpoint import RefusedCheckpoint, UnreadableCheckpoint, load_checkpoint


def truncate(paths: list[Path]) -> dict[str, bytes]:
    """Cut each file of `paths` to half its size in place, as a disk fault would (a file
    hard-linked to one, another name of the same write, is damaged with it; each is cut once);
    returns {name: the bytes left}."""
    done: set[tuple[int, int]] = set()
    for path in paths:
        inode = (path.stat().st_dev, path.stat().st_ino)
        if inode not in done:
            done.add(inode)
            os.truncate(path, path.stat().st_size // 2)
    return {path.name: path.read_bytes() for path in paths}


def test_resume_auto_continues_from_the_newest_checkpoint_that_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """3 epochs of 20 steps with a snapshot every 7 steps; last.ckpt (step 60) is truncated, and
    with it the files written at the same moment. resume=auto picks step-000056.ckpt, the newest
    by the steps it records (not by modification time: step-000007.ckpt is touched to be the
    newest file), redoes the 4 steps after it, and ends bitwise identical to the run as it was."""
    run = train_tiny(STATEFUL, tmp_path / "run")
    folder = run.dir / "checkpoints"
    want = run.checkpoint("last")
    assert want["global_step"] == 3 * STEPS_PER_EPOCH
    linked = [p for p in folder.glob("*.ckpt") if p.samefile(folder / "last.ckpt")]  # last, epoch-003, maybe best
    damaged = truncate(linked)
    later = time.time() + 60
    os.utime(folder / "step-000007.ckpt", (later, later))

    with caplog.at_level(logging.INFO, logger="nnlab"):
        resumed = train_tiny([*STATEFUL, "trainer.resume=auto"], run.dir)

    warning = next(
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "resume=auto" in r.getMessage()
    )
    assert str(folder / "last.ckpt") in warning and str(folder / "step-000056.ckpt") in warning
    assert "(epoch 3, step 56)" in warning
    got = resumed.checkpoint("last")
    for key in ("model", "ema", "task", "rng", "metrics"):
        assert_same(want[key], got[key], key)
    # Nothing lost: each damaged file is beside the new ones, renamed, with the bytes it had.
    for name, data in damaged.items():
        assert (folder / f"{name}.damaged").read_bytes() == data
        load_checkpoint(folder / name)  # written again by the resumed run, whole
    assert (folder / "best.ckpt").is_file()


def test_when_no_checkpoint_loads_resume_auto_stops_with_a_fix_that_works(tmp_path: Path) -> None:
    """Every checkpoint of the run truncated: `nnlab-train trainer.resume=auto` exits 2 with one
    paragraph that deletes nothing and gives a command; following it, the same command trains
    the run again from the start, and the damaged files are still on disk."""
    run_dir = tmp_path / "run"
    steps = ("trainer.limit_train_batches=3", "callbacks.model_checkpoint.every_n_train_steps=1")
    train_tiny(steps, run_dir)
    folder = run_dir / "checkpoints"
    files = sorted(p.name for p in folder.glob("*.ckpt"))
    assert files == ["best.ckpt", "last.ckpt", "step-000001.ckpt", "step-000002.ckpt", "step-000003.ckpt"]
    damaged = truncate([folder / name for name in files])

    command = [*TINY, *steps, f"hydra.run.dir={run_dir}", "trainer.resume=auto"]
    failed = run_cli(command, tmp_path)
    assert failed.returncode == 2, failed.stderr
    message = failed.stderr.strip()
    assert message.startswith("Error: trainer.resume=auto cannot continue the run") and "\n" not in message
    assert "Traceback" not in failed.stderr and str(folder / "last.ckpt") in message
    assert {name: (folder / name).read_bytes() for name in files} == damaged  # nothing touched

    fix = re.search(r"rerun the same command: (mv .+?)\. Or", message)
    assert fix is not None, message
    mv, source, target = shlex.split(fix.group(1))
    assert mv == "mv" and Path(source) == folder
    shutil.move(source, target)  # what `mv` does
    again = run_cli(command, tmp_path)
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(folder / "last.ckpt")["global_step"] == 3
    assert {name: (Path(target) / name).read_bytes() for name in files} == damaged


class Payload:
    """Unpickling it creates `marker`: what a crafted checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_a_checkpoint_that_refers_to_code_is_not_skipped_when_last_ckpt_is_damaged(tmp_path: Path) -> None:
    """last.ckpt unreadable and, beside it, a file whose pickle would run code: the run stops
    with the refusal (it does not quietly resume from an older file), runs nothing, renames nothing."""
    run = train_tiny(["callbacks.model_checkpoint.every_n_train_steps=1"], tmp_path / "run")
    folder = run.dir / "checkpoints"
    last = (folder / "last.ckpt").read_bytes()
    (folder / "last.ckpt").unlink()  # (a new file, so step-000002.ckpt, written with it, still loads)
    (folder / "last.ckpt").write_bytes(last[: len(last) // 2])
    marker = tmp_path / "code-ran"
    torch.save({"model": {}, "epoch": 9, "global_step": 99, "extra": Payload(marker)}, folder / "step-000099.ckpt")

    with pytest.raises(RefusedCheckpoint, match="step-000099.ckpt") as refused:
        train_tiny(["trainer.resume=auto"], run.dir)
    assert "resume=auto" in str(refused.value)
    assert not marker.exists()
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.ckpt",
        "last.ckpt",
        "step-000001.ckpt",
        "step-000002.ckpt",
        "step-000099.ckpt",
    ]


def test_a_damaged_ckpt_path_fails_naming_a_checkpoint_that_loads(tmp_path: Path) -> None:
    """ckpt_path=<run>/checkpoints/last.ckpt, truncated (with step-000002.ckpt, its other name):
    the error names it and what is wrong, suggests not the same file but the newest one beside it
    that loads, and resuming from that one works."""
    run = train_tiny(["callbacks.model_checkpoint.every_n_train_steps=1"], tmp_path / "run")
    last = run.dir / "checkpoints" / "last.ckpt"
    truncate([last])

    with pytest.raises(UnreadableCheckpoint) as unreadable:
        train_tiny([f"ckpt_path='{last}'"], tmp_path / "elsewhere")
    message = str(unreadable.value)
    assert str(last) in message and message.count("last.ckpt") == 1  # named once: not suggested
    suggested = re.search(r"ckpt_path=(\S+) \(epoch 1, step 1\)", message)
    assert suggested is not None, message
    assert Path(suggested.group(1)) == run.dir / "checkpoints" / "step-000001.ckpt"
    assert last.stat().st_size > 0 and not (run.dir / "checkpoints" / "last.ckpt.damaged").exists()

    resumed = train_tiny([f"ckpt_path='{suggested.group(1)}'", "trainer.max_epochs=2"], tmp_path / "elsewhere")
    assert resumed.checkpoint("last")["global_step"] == 4
