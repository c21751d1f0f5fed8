"""The training loops `python -m benchmarks.bench` times, each on one case's config.

Every loop has the signature `loop(cfg, device) -> Outcome` and trains the model `cfg` names
for `cfg.trainer.max_epochs` epochs, timing the training loop only: building the data and
model before it, and testing after it, are outside the clock.

  nnlab       `nnlab.runs.pipeline.build(cfg)` then `trainer.fit`, exactly as `nnlab-train` builds the
              run: TensorBoard logger, checkpoints (last + best), the rich progress bar, the
              health monitor, the log lines (train.log and the console's), all at their defaults.
  nnlab_lean  the same without the health monitor and the checkpoints (logger and progress bar on).
  raw         the limit: a hand-written loop over batches sliced from the in-memory tensors
              before each epoch's clock starts. Same seed, the same `build_model` (so the same
              initialization draws), the same optimizer and schedule, the same standardized
              rows in the same per-epoch order (`DataModule.epoch_order`), and after each epoch
              the same validation forward pass nnlab does. Dropout draws from the global
              generator in the same order, so its final loss equals nnlab's (tests/tools/test_bench.py).
  raw_pytorch_update  `raw` with `optimizer.fused=null`: PyTorch's own per-tensor update, where the
              config's (and so every other loop's) is fused: Adam, AdamW, SGD, Adagrad by default.
  dataloader  the tutorial loop: `TensorDataset` + `DataLoader(shuffle=True)`, batches moved to
              the device in the loop, the same validation pass.
  sklearn     scikit-learn's `MLPClassifier` with the MLP's hidden sizes, batch size, epochs
              (max_iter), Adam and lr (alpha=0: nnlab adds no L2 by default; no dropout or
              batch norm there).
Lightning is in `benchmarks.lightning_loop`, the SOM case in `benchmarks.bench_som`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


class Unavailable(Exception):
    """A loop that cannot run here (a package not installed, no GPU): the row is skipped with
    this message as its note."""


@dataclass
class Outcome:
    """What one timed run produced. `seconds` covers the training loop only."""

    seconds: float
    epochs: int
    steps: int  # optimizer steps (batches) taken
    samples: int  # training rows seen
    train_loss: float | None  # mean training loss of the last epoch
    test_acc: float | None  # accuracy of the final weights on the test split
    extra: dict[str, Any] = field(default_factory=dict)
    state: dict[str, torch.Tensor] | None = None  # final weights (for the parity test)


class Timer:
    """Sums the wall time of `with timer:` blocks: `time.perf_counter` on the CPU, CUDA events
    (with a synchronize at the end of each block) on a GPU, where kernels run asynchronously."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds = 0.0

    def __enter__(self) -> Timer:
        if self.cuda:
            torch.cuda.synchronize()
            self._start = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            torch.cuda.synchronize()
            self.seconds += self._start.elapsed_time(end) / 1e3
        else:
            self.seconds += time.perf_counter() - self._t0


def whole_split(data: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All rows of a split as two tensors on the data's device (standardized as the model sees them)."""
    xs, ys = zip(*data.eval_batches(split))
    return torch.cat(xs), torch.cat(ys)


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(total, 1)


# ---------------------------------------------------------------------------------------------
@contextmanager
def nnlab_train_logging(folder: Path) -> Iterator[None]:
    """nnlab-train's log lines while the block runs: its Hydra job logging
    (configs/hydra/job_logging/rich.yaml) writes INFO lines to <run>/train.log and to the
    console; so does this, its console lines rendered as the real console would render them (a
    terminal or not, its width) and then dropped."""
    import os

    from rich.console import Console

    from nnlab.cli.console import CONSOLE, LogHandler

    null = open(os.devnull, "w")  # noqa: SIM115 - closed below
    shown = LogHandler(
        console=Console(file=null, force_terminal=CONSOLE.is_terminal, width=CONSOLE.width), show_path=False
    )
    handlers = [logging.FileHandler(folder / "train.log"), shown]
    for handler, pattern in zip(handlers, ("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s", "%(message)s")):
        handler.setFormatter(logging.Formatter(pattern))
    nnlab_log = logging.getLogger("nnlab")
    level = nnlab_log.level
    for handler in handlers:
        nnlab_log.addHandler(handler)
    nnlab_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            nnlab_log.removeHandler(handler)
            handler.close()
        nnlab_log.setLevel(level)
        null.close()


def nnlab_loop(cfg: DictConfig, device: str) -> Outcome:
    """`nnlab-train`'s run: seed, `build(cfg)`, then `trainer.fit` under the clock."""
    from nnlab.engine.rng import seed_everything
    from nnlab.runs.build import build

    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with nnlab_train_logging(output_dir):
        seed_everything(cfg.seed)
        parts = build(cfg)
        timer = Timer(parts.trainer.device)
        try:
            with timer:
                parts.trainer.fit(parts.task, parts.data)
        finally:
            if parts.logger is not None:
                parts.logger.close()
    trainer, data = parts.trainer, parts.data
    return Outcome(
        seconds=timer.seconds,
        epochs=trainer.epoch,
        steps=trainer.global_step,
        samples=trainer.epoch * data.size("train"),
        train_loss=trainer.metrics.get("train/loss"),
        test_acc=accuracy(parts.model, data.eval_batches("test")),
        state={k: v.detach().cpu().clone() for k, v in parts.model.state_dict().items()},
    )


def nnlab_lean_loop(cfg: DictConfig, device: str) -> Outcome:
    """`nnlab_loop` without the health monitor and the checkpoints (`~callbacks.health
    ~callbacks.model_checkpoint`), the TensorBoard logger and progress bar kept: what those two
    callbacks cost, against the engine's own overhead."""
    from omegaconf import open_dict

    cfg = cfg.copy()
    with open_dict(cfg):
        for name in ("health", "model_checkpoint"):
            cfg.callbacks.pop(name, None)
    return nnlab_loop(cfg, device)


def raw_pytorch_update_loop(cfg: DictConfig, device: str) -> Outcome:
    """`raw_loop` with `optimizer.fused=null`: PyTorch's own update, one tensor at a time on a CPU,
    as in a loop written without asking for the fused kernel. nnlab and the other loops make the
    config's update, fused by default for Adam, AdamW, SGD and Adagrad; against this row, nnlab's
    ratio is what a user gets over that hand-written loop."""
    from omegaconf import open_dict

    if not cfg.optimizer.get("fused"):
        raise Unavailable(f"{cfg.optimizer._target_} is not fused in this run: the raw loop makes PyTorch's update.")
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.optimizer.fused = None
    return raw_loop(cfg, device)


def _build(cfg: DictConfig) -> tuple[Any, nn.Module, torch.optim.Optimizer, Any, torch.device]:
    """The data and model exactly as nnlab builds them (seeded the same, so the same initial
    weights), on the device, with the config's optimizer and schedule."""
    from nnlab.engine.devices import resolve_device
    from nnlab.engine.optim import build_scheduler
    from nnlab.engine.rng import seed_everything
    from nnlab.runs.build import build_model

    seed_everything(cfg.seed)
    data, model, _ = build_model(cfg)  # (the task it also builds draws no random numbers)
    dev = resolve_device(cfg.trainer.device)
    data.setup(dev)
    model.to(dev)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    total_steps = cfg.trainer.max_epochs * data.steps_per_epoch
    scheduler = build_scheduler(instantiate(cfg.scheduler) if cfg.get("scheduler") else None, optimizer, total_steps)
    return data, model, optimizer, scheduler, dev


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    val: list[tuple[torch.Tensor, torch.Tensor]],
    dev: torch.device,
) -> tuple[torch.Tensor, int, int]:
    """One epoch of plain PyTorch: forward, loss, backward, step; then the validation forward
    pass and the epoch's schedule step. Returns (sum of loss x batch size, rows, steps)."""
    from nnlab.engine.optim import PER_STEP_SCHEDULERS

    per_step = isinstance(scheduler, PER_STEP_SCHEDULERS)
    model.train()
    total, rows, steps = torch.zeros((), device=dev), 0, 0
    for x, y in batches:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # (nnlab's order: backward, step, zero_grad)
        if per_step:
            scheduler.step()
        total += loss.detach() * len(x)
        rows, steps = rows + len(x), steps + 1
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x) for x, _ in val])
        val_loss = F.cross_entropy(out, torch.cat([y for _, y in val])).item()
    if scheduler is not None and not per_step:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        else:
            scheduler.step()
    return total, rows, steps


def raw_loop(cfg: DictConfig, device: str) -> Outcome:
    """The limit: plain PyTorch over batches prepared before the clock starts."""

    def batches(data: Any, x: torch.Tensor, y: torch.Tensor, dev: torch.device) -> Callable[[int], Iterable]:
        def epoch_batches(epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
            # nnlab's order of this epoch, sliced from the tensors already on the device.
            order = data.epoch_order(epoch).to(dev)
            if data.drop_last:
                order = order[: len(order) - len(order) % data.batch_size]
            return [(x[idx], y[idx]) for idx in order.split(data.batch_size)]

        return epoch_batches

    return _timed_epochs(cfg, batches, keep_state=True)


def dataloader_loop(cfg: DictConfig, device: str) -> Outcome:
    """The tutorial loop: a shuffling `DataLoader` over CPU tensors, batches moved to the device."""
    from torch.utils.data import DataLoader, TensorDataset

    def batches(data: Any, x: torch.Tensor, y: torch.Tensor, dev: torch.device) -> Callable[[int], Iterable]:
        loader = DataLoader(TensorDataset(x.cpu(), y.cpu()), batch_size=data.batch_size, shuffle=True)
        return lambda epoch: loader

    return _timed_epochs(cfg, batches, keep_state=False)


def _timed_epochs(cfg: DictConfig, batches: Callable[..., Callable[[int], Iterable]], keep_state: bool) -> Outcome:
    """`_train_epoch` for every epoch under the clock, over `batches(data, x, y, device)(epoch)`
    (made before the epoch's clock starts); the outcome, with the final weights if `keep_state`."""
    data, model, optimizer, scheduler, dev = _build(cfg)
    x, y = whole_split(data, "train")
    epoch_batches = batches(data, x, y, dev)
    val = list(data.eval_batches("val"))
    epochs, timer, steps = cfg.trainer.max_epochs, Timer(dev), 0
    total, rows = torch.zeros(()), 0
    for epoch in range(epochs):
        prepared = epoch_batches(epoch)
        with timer:
            total, rows, n = _train_epoch(model, optimizer, scheduler, prepared, val, dev)
        steps += n
    return Outcome(
        seconds=timer.seconds,
        epochs=epochs,
        steps=steps,
        samples=epochs * len(x),
        train_loss=float(total) / max(rows, 1),
        test_acc=accuracy(model, data.eval_batches("test")),
        state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()} if keep_state else None,
    )


def sklearn_loop(cfg: DictConfig, device: str) -> Outcome:
    """scikit-learn's MLPClassifier on the same standardized rows (CPU only, NumPy)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    if cfg.model._target_ != "nnlab.models.mlp.MLP":
        raise Unavailable("scikit-learn's MLPClassifier is compared with model=mlp only.")
    data, _, _, _, _ = _build(cfg)
    x, y = (t.cpu().numpy() for t in whole_split(data, "train"))
    x_test, y_test = (t.cpu().numpy() for t in whole_split(data, "test"))
    epochs = cfg.trainer.max_epochs
    clf = MLPClassifier(
        hidden_layer_sizes=tuple(cfg.model.hidden_sizes),
        activation=cfg.model.activation if cfg.model.activation in ("relu", "tanh") else "relu",
        solver="adam",
        alpha=0.0,
        batch_size=data.batch_size,
        learning_rate_init=cfg.optimizer.lr,
        max_iter=epochs,
        shuffle=True,
        random_state=cfg.seed,
        tol=0.0,
        n_iter_no_change=epochs + 1,  # run every epoch: no early stop on a loss plateau
    )
    timer = Timer(torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # "max_iter reached": what we asked for
        with timer:
            clf.fit(x.reshape(len(x), -1), y)
    return Outcome(
        seconds=timer.seconds,
        epochs=clf.n_iter_,
        steps=clf.n_iter_ * data.steps_per_epoch,
        samples=clf.n_iter_ * len(x),
        train_loss=float(clf.loss_),
        test_acc=float(clf.score(x_test.reshape(len(x_test), -1), y_test)),
    )
