"""Steps/s of each packaged optimizer with `optimizer.fused=true` against PyTorch's default.

    python -m benchmarks.bench_fused                                  # the default experiment's MLP
    python -m benchmarks.bench_fused --epochs 5 -- 'model.hidden_sizes=[2048,2048]'   # a 4.5M-parameter MLP

On a CPU, PyTorch's Adam, AdamW, SGD and Adagrad update the parameters one tensor at a time,
several kernels each (Adam: the step count, both moments, a square root, a division, the update);
`fused=True` updates every tensor in one kernel. For each optimizer config in
`configs/optimizer/` that has a `fused` key, this script builds the run's model twice (nnlab's
`build_model`, same seed), with `fused: null` (PyTorch's default) and `fused: true`, and trains
both on the same batches with the raw loop of `benchmarks.loops` (forward, loss, backward,
step, zero_grad; the validation pass), taking turns epoch by epoch so that a drift of the
machine's speed hits both alike. It prints the median epoch time of each and the speed-up.
One torch thread (`OMP_NUM_THREADS=1`, as the script sets) on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from benchmarks import loops  # noqa: E402
from benchmarks.cases import CONFIG_DIR, compose  # noqa: E402

WARMUP = 2  # epochs of each left out of the medians


def fused_optimizers() -> list[str]:
    """The packaged optimizer configs that offer a fused kernel (a `fused` key)."""
    return sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml") if "fused" in OmegaConf.load(p))


def compare(name: str, overrides: list[str], epochs: int, work: Path) -> tuple[float, float]:
    """Median seconds per epoch with fused null and true, trained in turns on the same batches."""
    runs = {}
    for fused in ("null", "true"):
        cfg = compose([*overrides, f"optimizer={name}", f"optimizer.fused={fused}"], work / f"{name}_{fused}")
        runs[fused] = loops._build(cfg)
    data = runs["null"][0]
    x, y = loops.whole_split(data, "train")
    val = list(data.eval_batches("val"))
    seconds: dict[str, list[float]] = {fused: [] for fused in runs}
    for epoch in range(WARMUP + epochs):
        batches = [(x[i], y[i]) for i in data.epoch_order(epoch).split(data.batch_size)]
        for fused, (_, model, optimizer, scheduler, device) in runs.items():
            start = time.perf_counter()
            loops._train_epoch(model, optimizer, scheduler, batches, val, device)
            seconds[fused].append(time.perf_counter() - start)
    return statistics.median(seconds["null"][WARMUP:]), statistics.median(seconds["true"][WARMUP:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_fused", description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30, help="timed epochs of each (default 30)")
    parser.add_argument("--optimizers", default=",".join(fused_optimizers()), help="comma-separated configs")
    parser.add_argument("overrides", nargs="*", help="nnlab-train overrides (default: none, the default experiment)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    work = Path(tempfile.mkdtemp(prefix="bench_fused_"))
    overrides = args.overrides
    params = sum(p.numel() for p in loops._build(compose(overrides, work / "count"))[1].parameters())
    threads, shown = torch.get_num_threads(), " ".join(overrides) or "the default experiment"
    print(f"{shown} ({params:,} parameters): median of {args.epochs} epochs each, {threads} torch thread(s)")
    print("| optimizer | fused: null (PyTorch's default) | fused: true | speed-up |")
    print("|---|---:|---:|---:|")
    for name in args.optimizers.split(","):
        default, fused = compare(name, overrides, args.epochs, work)
        print(
            f"| {name} | {default * 1e3:.1f} ms/epoch | {fused * 1e3:.1f} ms/epoch | {default / fused:.2f}x |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
