"""What a checkpoint holds of a run, and how a run continues from one.

`checkpoint_state` is everything the run needs to go on exactly as it would have: the weights,
the task's optimizer/scheduler/scaler state, the EMA, the loop's counters and the epoch's metric
sums, callback state and the random generators; `restore` puts it back into a trainer. The data
order needs no state: it is a function of (seed, epoch).

Where the state comes from: `load_given` reads the file a user named (`ckpt_path`);
`resume_auto` finds the run's own last.ckpt (`trainer.resume=auto`), and when that cannot be
read, the newest of the run's other checkpoints that loads (`newest_resumable`).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnlab.engine import distributed
from nnlab.engine.callbacks import checkpoint_files
from nnlab.engine.checkpoint import RefusedCheckpoint, UnreadableCheckpoint, first_line, load_checkpoint, mismatch
from nnlab.engine.rng import rng_state, set_rng_state
from nnlab.errors import UserError

if TYPE_CHECKING:
    from nnlab.engine.trainer import Trainer

log = logging.getLogger(__name__)

# What `restore` reads: a file without these holds no training state to continue.
RESUMABLE_KEYS = ("model", "task", "epoch", "global_step", "epoch_step", "rng")


def checkpoint_state(trainer: Trainer) -> dict[str, Any]:
    """Everything needed to rebuild or continue the run from a file: tensors and plain values
    only, so it loads with `torch.load(weights_only=True)`."""
    return {
        "model": trainer.module.state_dict(),
        "task": trainer.task.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "epoch": trainer.epoch,
        "global_step": trainer.global_step,
        "epoch_step": trainer.epoch_step,
        "metrics": dict(trainer.metrics),
        # Averages of the epoch so far, so a run resumed mid-epoch reports the same epoch metrics.
        "loop": trainer.epoch_means.state_dict(),
        "skipped_steps": trainer.skipped_steps,
        "consecutive_skips": trainer.consecutive_skips,
        "should_stop": trainer.should_stop,
        "stop_reason": trainer.stop_reason,
        "callbacks": {name: cb.state_dict() for name, cb in _stateful_callbacks(trainer.callbacks)},
        "rng": rng_state(),
        **trainer.extra_state,
    }


def restore(trainer: Trainer, state: dict[str, Any], path: Path) -> None:
    """Continue from a checkpoint: weights, optimizer/scheduler/scaler, EMA, counters, callback
    state, and last the random generators, so the run goes on exactly as it would have."""
    try:
        trainer.module.load_state_dict(state["model"])
    except RuntimeError as e:
        detail = mismatch(trainer.module, state["model"]) or first_line(e)
        raise UserError(
            f"Checkpoint {path} does not fit this model: {detail}. "
            "It was written by a run with another model or data config: resume with the config of "
            "the run that wrote it (see .hydra/config.yaml in that run's folder)."
        ) from e
    trainer.task.load_state_dict(state["task"])
    if trainer.ema is not None:
        if state.get("ema") is not None:
            trainer.ema.load_state_dict(state["ema"])
        else:
            log.warning("%s has no EMA weights; the EMA starts from the restored weights.", path)
            trainer.ema.module.load_state_dict(trainer.module.state_dict())
    trainer.epoch = state["epoch"]
    trainer.global_step = state["global_step"]
    trainer.epoch_step = state["epoch_step"]
    trainer.metrics = dict(state.get("metrics", {}))
    trainer.epoch_means.load_state_dict(state.get("loop") or {})
    trainer.skipped_steps = state.get("skipped_steps", 0)
    trainer.consecutive_skips = state.get("consecutive_skips", 0)
    trainer.should_stop = state.get("should_stop", False)
    trainer.stop_reason = state.get("stop_reason", "")
    saved = state.get("callbacks", {})
    for name, cb in _stateful_callbacks(trainer.callbacks):
        if name in saved:
            cb.load_state_dict(saved[name])
    set_rng_state(state["rng"])
    trainer.resumed_from = path
    log.info("Resumed from %s: %s", path, _position(state))


def load_weights(trainer: Trainer, path: Path) -> dict[str, Any]:
    """Load the weights (and the EMA's) of the checkpoint `path` into the trainer, nothing else:
    what `Trainer.test` scores with test_ckpt=best. Returns the checkpoint's state."""
    state = load_checkpoint(path, map_location=trainer.device)
    trainer.module.load_state_dict(state["model"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load_state_dict(state["ema"])
    return state


def _stateful_callbacks(callbacks: list[Any]) -> Iterator[tuple[str, Any]]:
    """(name, callback) of the callbacks with state; a second one of a class is named <class>_2."""
    seen: dict[str, int] = {}
    for cb in callbacks:
        if hasattr(cb, "state_dict"):
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}_{seen[name]}"), cb


def checkpoint_folders(trainer: Trainer) -> list[Path]:
    """Where the run's checkpoints are written (the checkpoint callbacks' folders)."""
    folders = [cb.checkpoint_dir(trainer) for cb in trainer.callbacks if hasattr(cb, "checkpoint_dir")]
    return folders or [Path(trainer.output_dir) / "checkpoints"]


def last_checkpoint(trainer: Trainer) -> Path | None:
    """last.ckpt in the run's checkpoint folder, if there is one."""
    for folder in checkpoint_folders(trainer):
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
    return None


def load_given(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    """The state in `ckpt_path`. A file that cannot be read fails with its own message, whose
    advice is replaced by a checkpoint beside it that does load (never the same file)."""
    try:
        return load_checkpoint(path, map_location=map_location)
    except UnreadableCheckpoint as e:
        others = [p for p in checkpoint_files(path.parent) if p.resolve() != path.resolve()]
        try:
            found = newest_resumable(others, "cpu")
        except RefusedCheckpoint:  # (that one is refused when it is named; here it is only not suggested)
            found = None
        if found is not None:
            other, state, _ = found
            hint = f"Continue from the newest checkpoint beside it that loads: ckpt_path={other} ({_position(state)})"
        else:
            hint = "No other checkpoint beside it loads: start the run afresh (without ckpt_path)"
        raise UnreadableCheckpoint(e.what, f"{hint}.") from e


def resume_auto(trainer: Trainer) -> None:
    """trainer.resume=auto: continue from last.ckpt if a previous attempt of this run left one;
    from the run's newest checkpoint that loads if last.ckpt does not."""
    last = last_checkpoint(trainer)
    if last is None:
        log.info("trainer.resume=auto: no last.ckpt in %s yet, so the run starts from scratch.", trainer.output_dir)
        return
    try:
        state = load_checkpoint(last, map_location=trainer.device)
    except UnreadableCheckpoint as e:  # (a RefusedCheckpoint, code in the pickle, stops the run)
        _resume_from_another(trainer, last, e)
        return
    restore(trainer, state, last)


def _resume_from_another(trainer: Trainer, last: Path, error: UnreadableCheckpoint) -> None:
    """last.ckpt cannot be read (a disk fault, a copy cut short): continue from the newest of the
    run's other checkpoints (step/epoch snapshots, best.ckpt, top-k) that loads, by the training
    progress it records, and redo the steps after it. The damaged files are renamed aside
    (`<name>.damaged`), never deleted, so that the files the run writes next do not overwrite
    them. When none loads, stop with a fix."""
    damaged = error.what
    folders = checkpoint_folders(trainer)
    others = [p for folder in folders for p in checkpoint_files(folder) if p != last]
    try:
        found = newest_resumable(others, trainer.device)
    except RefusedCheckpoint as e:  # never skipped: a run's own folder should not hold such a file
        raise RefusedCheckpoint(
            f"trainer.resume=auto looked for another checkpoint of the run because {last} cannot be read, "
            f"and found one it refuses. {e}"
        ) from e
    if found is None:
        moves = " && ".join(
            f"mv {shlex.quote(str(f))} {shlex.quote(str(_free_name(f, '.damaged')))}" for f in folders if f.is_dir()
        )
        tried = (
            f"the {len(others)} other checkpoint(s) beside it do not load either"
            if others
            else "it is the run's only checkpoint"
        )
        raise UserError(
            f"trainer.resume=auto cannot continue the run in {trainer.output_dir}: {damaged} And {tried}, so "
            "there is no state to resume from; nothing was deleted. To train this run again from the start, move "
            f"its damaged checkpoints aside and rerun the same command: {moves}. Or start a new run in another "
            "folder (hydra.run.dir=<new folder>)."
        ) from error
    path, state, unreadable = found
    restore(trainer, state, path)
    moved = [last, *unreadable]
    distributed.barrier()  # every rank has read the files before one of them renames any
    if distributed.current().is_zero:
        moved = [p.rename(_free_name(p, ".damaged")) for p in moved]
    log.warning(
        "%s trainer.resume=auto continues from %s instead (%s), the newest checkpoint of the run that loads, "
        "and redoes the steps after it. Renamed aside, not deleted: %s.",
        damaged,
        path,
        _position(state),
        ", ".join(str(p) for p in moved),
    )


def newest_resumable(
    paths: list[Path], map_location: str | torch.device
) -> tuple[Path, dict[str, Any], list[Path]] | None:
    """Of the checkpoints `paths`, the one furthest into training that loads: (its path, its
    state, the paths that could not be read); None when none loads.

    "Furthest" is by the progress each file records, (global_step, epoch), then by the time it
    was written: the modification time alone ranks a copied or touched file wrongly. At one
    step, a state after the epoch's validation (epoch done) is newer than one before it. A file
    whose pickle refers to code raises its `RefusedCheckpoint`: it is never skipped quietly.
    Only the furthest state so far is kept in memory."""
    best: tuple[tuple[int, int, float], Path, dict[str, Any]] | None = None
    unreadable: list[Path] = []
    for path in paths:
        try:
            state = load_checkpoint(path, map_location=map_location)
        except UnreadableCheckpoint:
            unreadable.append(path)
            continue
        if not isinstance(state, dict) or any(key not in state for key in RESUMABLE_KEYS):
            continue  # loads, but holds weights only (not a file ModelCheckpoint wrote)
        progress = (int(state["global_step"]), int(state["epoch"]), path.stat().st_mtime)
        if best is None or progress > best[0]:
            best = (progress, path, state)
    return None if best is None else (best[1], best[2], unreadable)


def _position(state: dict[str, Any]) -> str:
    """Where a checkpoint's state is in training, as the log shows it: "epoch 3, step 56" (the
    epoch in progress when mid-epoch, else the last one done)."""
    return f"epoch {state['epoch'] + (state['epoch_step'] > 0)}, step {state['global_step']}"


def _free_name(path: Path, suffix: str) -> Path:
    """`path` + `suffix`, or + `suffix`-2, -3, ... when that is taken: renaming there loses nothing."""
    candidate, n = path.with_name(path.name + suffix), 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}{suffix}-{n}")
    return candidate
