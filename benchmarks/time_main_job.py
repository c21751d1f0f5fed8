"""Time the README's main job: `nnlab-train` on the default experiment, start-up included.

    python -m benchmarks.time_main_job --runs 3

Runs the command as a user would (a fresh process each time, default config) with its run
directory in a temporary folder, and reports per run: wall time from launch to exit, time from
launch to the first training step (the engine's "Training ..." log line), and test accuracy.
The targets (docs/benchmarks.md): <= 3 s from launch to the first training step, <= 10 s wall for
the whole run, test accuracy >= 0.97, on a 2-core CPU.

    python -m benchmarks.time_main_job --runs 5 --floor

With `--floor`, each run is paired with a plain PyTorch script launched the same way (its turn
first in every other pair, so the machine's drift cancels): it imports torch, builds the default
experiment's MLP and its Adam (whose constructor imports `torch._dynamo`, as every PyTorch
optimizer's does) and stops at its first forward. Its launch -> first step is the floor no PyTorch
program goes under on this machine; the median of the pairs' differences is what nnlab adds
(Python's start, Hydra, composing and validating the config, building the run).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path


def first_step_time(log: str) -> datetime | None:
    m = re.search(r"^\[([\d-]+ [\d:]+),(\d+)\]\[[^]]+\]\[INFO\] - Training ", log, flags=re.MULTILINE)
    if not m:
        return None
    return datetime.strptime(f"{m.group(1)}.{m.group(2)}", "%Y-%m-%d %H:%M:%S.%f")


# The floor: the least a PyTorch program does before its first training step. The same layers
# as the default experiment's MLP (configs/model/mlp.yaml with experiment=digits_mlp), on a
# batch of the digits' shape; it prints the wall clock at the point nnlab logs "Training ...".
FLOOR_SCRIPT = """
import time
import torch
from torch import nn
model = nn.Sequential(
    nn.Flatten(), nn.Linear(64, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.2),
    nn.Linear(256, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
print(time.time(), sum(p.numel() for p in model.parameters()), flush=True)
x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
nn.functional.cross_entropy(model(x), y).backward()
optimizer.step()
"""


def floor_run() -> tuple[float, int]:
    """Seconds from launching the floor script to its first step, and its model's parameter count."""
    launched = time.time()
    proc = subprocess.run([sys.executable, "-c", FLOOR_SCRIPT], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"the floor script failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    stamp, params = proc.stdout.split()
    return float(stamp) - launched, int(params)


def nnlab_run(exe: str, run_dir: Path, overrides: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    """One `nnlab-train` run in `run_dir` (in environment `env`, default this process's): wall
    time, launch -> first step, test accuracy."""
    launched = datetime.now()
    t0 = time.perf_counter()
    proc = subprocess.run([exe, f"hydra.run.dir={run_dir}", *overrides], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"nnlab-train failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    started = first_step_time((run_dir / "train.log").read_text())
    to_first = (started - launched).total_seconds() if started else float("nan")
    return {"wall_s": wall, "to_first_step_s": to_first, "test/acc": metrics.get("test/acc")}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.time_main_job", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--floor", action="store_true", help="pair each run with a plain PyTorch script's start")
    parser.add_argument("overrides", nargs="*", help="extra nnlab-train overrides (default: none)")
    args = parser.parse_args()
    exe = shutil.which("nnlab-train") or sys.exit("nnlab-train is not on PATH: install the project first.")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            floor = floor_run() if args.floor and i % 2 == 0 else None  # (its turn first in every other pair)
            row = nnlab_run(exe, Path(tmp) / str(i), args.overrides)
            line = f"run {i}: wall {row['wall_s']:.2f} s, launch -> first step {row['to_first_step_s']:.2f} s"
            line += f", test/acc {row['test/acc']}"
            if args.floor:
                row["floor_s"], row["floor_params"] = floor or floor_run()
                line += f"; plain PyTorch script: first step {row['floor_s']:.2f} s"
            rows.append(row)
            print(line)

    summary = {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "to_first_step_s")}
    print(
        f"median of {args.runs}: wall {summary['wall_s']:.2f} s, launch -> first step "
        f"{summary['to_first_step_s']:.2f} s (targets: first step <= 3 s, wall <= 10 s)"
    )
    if args.floor:
        summary["floor_s"] = statistics.median(r["floor_s"] for r in rows)
        summary["nnlab_over_floor_s"] = statistics.median(r["to_first_step_s"] - r["floor_s"] for r in rows)
        print(
            f"plain PyTorch script ({rows[0]['floor_params']:,} parameters) to its first step: "
            f"{summary['floor_s']:.2f} s (median); nnlab adds {summary['nnlab_over_floor_s']:.2f} s "
            "(median of the pairs' differences)"
        )
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "median": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
