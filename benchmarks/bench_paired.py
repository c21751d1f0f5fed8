"""Per-epoch overhead of nnlab's engine against the raw loop, measured in pairs of epochs.

    python -m benchmarks.bench_paired                       # the default experiment, 150 epoch pairs
    python -m benchmarks.bench_paired --epochs 300 -- experiment=mnist1d_cnn
    python -m benchmarks.bench_paired --nnlab-extra optimizer.fused=null   # nnlab with PyTorch's own update
    python -m benchmarks.bench_paired --costs              # also without each part in turn: what each costs

`python -m benchmarks.bench` times whole runs one after another; on a virtual machine whose speed drifts from
minute to minute, two runs a minute apart can differ by more than the engine's whole overhead.
This script takes turns instead, epoch by epoch, in one process: in every round, an epoch of the
raw loop (`benchmarks.loops`: the same model, data order, optimizer and validation pass), an epoch
of nnlab's trainer with every default on (TensorBoard, progress bar, checkpoints, health monitor,
log lines to a file and to a console rendered off-screen), and one without the callbacks and the
logger ("bare"), in an order shuffled anew each round (seeded), because an epoch's place in the
round shifts its time: run always in the order raw, defaults, bare, the bare epochs measured
about 1 ms slower than shuffled. Each nnlab epoch is compared with the same round's raw epoch, so a
drift of the machine's speed cancels; the median of those differences is the engine's cost per
epoch.

The raw loop takes the run's optimizer config, so it makes the same update as nnlab: fused, by
default, for Adam, AdamW, SGD and Adagrad. Where the update is fused, a second raw loop takes
turns too, with PyTorch's own per-tensor update (`optimizer.fused=null`): the loop a user writes
without asking for the fused kernel. nnlab is compared with both: the first ratio is the engine's
cost alone, the second what a user gets against that hand-written loop.

The costs of a run that are paid once (creating the event file, the last checkpoint, start-up)
are outside these epochs: `benchmarks.bench` includes them. Run with one torch thread
(`OMP_NUM_THREADS=1`, as the script sets) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from omegaconf import open_dict  # noqa: E402

from benchmarks import loops  # noqa: E402
from benchmarks.cases import compose  # noqa: E402
from nnlab.engine.rng import seed_everything  # noqa: E402
from nnlab.runs.build import build  # noqa: E402

TITLES = {
    "raw": "raw loop (the same update as nnlab)",
    "raw_pytorch_update": "raw loop with PyTorch's per-tensor update (optimizer.fused=null)",
}
# --costs: nnlab with every default on, then without one part at a time (the overrides that
# drop it), then bare; the difference to "defaults" is what that part costs an epoch.
COSTS = {
    "defaults": [],
    "without the health monitor": ["~callbacks.health"],
    "without checkpoints": ["~callbacks.model_checkpoint"],
    "without the progress bar": ["~callbacks.progress"],
    "without the TensorBoard logger": ["logger=none"],
    "without the non-finite check": [],  # (check_finite=False)
    "bare": [],
}
WARMUP = 3  # epoch pairs left out of the statistics (first allocations, the event file's creation)


def nnlab_trainer(overrides: list[str], epochs: int, run_dir: Path, bare: bool, check_finite: bool = True):
    """The run's parts, set up as `Trainer.fit` sets them up before its first epoch (for a
    supervised or reconstruction task without EMA: no `task.prepare`, no averaged model).
    `check_finite=False` drops the per-update NaN/inf check, which no config turns off."""
    cfg = compose([*overrides, f"trainer.max_epochs={epochs}"], run_dir)
    if bare:
        with open_dict(cfg):
            cfg.logger = None
            for name in list(cfg.callbacks):
                cfg.callbacks.pop(name)
    seed_everything(cfg.seed)
    parts = build(cfg)
    trainer = parts.trainer
    trainer.task, trainer.module = parts.task, parts.task.model
    parts.data.setup(trainer.device)
    trainer.steps_per_epoch = parts.data.steps_per_epoch
    trainer.rules.check_finite = check_finite
    parts.task.configure(
        trainer.device, trainer.precision, total_steps=epochs * trainer.steps_per_epoch, rules=trainer.rules
    )
    trainer._call("on_fit_start")
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=150, help="epoch pairs (default 150)")
    parser.add_argument(
        "--nnlab-extra",
        action="append",
        default=[],
        help="an override for nnlab's runs only, not the raw loop's (repeatable), e.g. optimizer.fused=null",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled order (default 0)")
    parser.add_argument(
        "--costs", action="store_true", help="also nnlab without each part in turn: what each costs an epoch"
    )
    parser.add_argument("overrides", nargs="*", default=["experiment=digits_mlp"], help="nnlab-train overrides")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    work = Path(tempfile.mkdtemp(prefix="bench_paired_"))
    with loops.nnlab_train_logging(work):
        paired(args, work)
    return 0


def paired(args: argparse.Namespace, work: Path) -> None:
    """The epoch pairs, then the table."""
    epochs = args.epochs + WARMUP
    variants = COSTS if args.costs else {"defaults": [], "bare": []}
    runs = {
        name: nnlab_trainer(
            [*args.overrides, *args.nnlab_extra, *drop],
            epochs,
            work / f"nnlab{i}",
            bare=name == "bare",
            check_finite=name != "without the non-finite check",
        )
        for i, (name, drop) in enumerate(variants.items())
    }
    raw_cfg = compose(args.overrides, work / "raw")
    raws = {"raw": loops._build(raw_cfg)}
    if raw_cfg.optimizer.get("fused"):  # also the loop with PyTorch's own update
        raws["raw_pytorch_update"] = loops._build(compose([*args.overrides, "optimizer.fused=null"], work / "raw2"))
    data = raws["raw"][0]
    x, y = loops.whole_split(data, "train")
    val = list(data.eval_batches("val"))
    seconds: dict[str, list[float]] = {name: [] for name in [*raws, *runs]}
    turns = random.Random(args.seed)
    for epoch in range(epochs):
        order = data.epoch_order(epoch)  # the raw loops' batches, built before their clocks start
        batches = [(x[i], y[i]) for i in order.split(data.batch_size)]
        for name in turns.sample(list(seconds), len(seconds)):  # this round's order
            start = time.perf_counter()
            if name in raws:
                _, model, optimizer, scheduler, device = raws[name]
                loops._train_epoch(model, optimizer, scheduler, batches, val, device)
            else:
                runs[name].trainer._run_epoch(runs[name].task, runs[name].data)
            seconds[name].append(time.perf_counter() - start)
    for parts in runs.values():
        parts.trainer._call("on_fit_end")
        if parts.logger is not None:
            parts.logger.close()
    also = f" (nnlab also {' '.join(args.nnlab_extra)})" if args.nnlab_extra else ""
    print(f"{' '.join(args.overrides)}{also}: {args.epochs} epoch pairs")
    for against in raws:
        raw = statistics.median(seconds[against][WARMUP:])
        title = TITLES[against]
        print(f"\nagainst the {title}: median {raw * 1e3:.2f} ms/epoch")
        print(f"| nnlab | extra per epoch (median of pairs) | middle half of pairs | vs {against} |")
        print("|---|---:|---:|---:|")
        medians = {}
        for name in runs:
            extra = sorted((b - a) * 1e3 for a, b in zip(seconds[against][WARMUP:], seconds[name][WARMUP:]))
            n = len(extra)
            median, q1, q3 = extra[n // 2], extra[n // 4], extra[3 * n // 4]
            medians[name] = median
            print(f"| {name} | {median:.2f} ms | {q1:.2f} to {q3:.2f} ms | {raw / (raw + median / 1e3):.3f}x |")
        if args.costs:
            print("\n| part | its cost per epoch (defaults' extra minus the run without it) |\n|---|---:|")
            for name in runs:
                if name != "defaults":
                    part = "every callback and the logger (bare)" if name == "bare" else name.removeprefix("without ")
                    print(f"| {part} | {medians['defaults'] - medians[name]:.2f} ms |")


if __name__ == "__main__":
    sys.exit(main())
