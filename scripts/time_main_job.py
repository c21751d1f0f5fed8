"""Time the README's main job: `nnlab-train` on the default experiment, start-up included.

    python scripts/time_main_job.py --runs 3

Runs the command as a user would (a fresh process each time, default config) with its run
directory in a temporary folder, and reports per run: wall time from launch to exit, time from
launch to the first training step (the engine's "Training ..." log line), and test accuracy.
The targets (docs/benchmarks.md): <= 3 s from launch to the first training step, <= 10 s wall for
the whole run, test accuracy >= 0.97, on a 2-core CPU.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="extra nnlab-train overrides (default: none)")
    args = parser.parse_args()
    exe = shutil.which("nnlab-train") or sys.exit("nnlab-train is not on PATH: install the project first.")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run_dir = Path(tmp) / str(i)
            launched = datetime.now()
            t0 = time.perf_counter()
            proc = subprocess.run([exe, f"hydra.run.dir={run_dir}", *args.overrides], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                sys.exit(f"run {i} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
            metrics = json.loads((run_dir / "metrics.json").read_text())
            started = first_step_time((run_dir / "train.log").read_text())
            to_first = (started - launched).total_seconds() if started else float("nan")
            rows.append({"wall_s": wall, "to_first_step_s": to_first, "test/acc": metrics.get("test/acc")})
            print(f"run {i}: wall {wall:.2f} s, launch -> first step {to_first:.2f} s, test/acc {rows[-1]['test/acc']}")

    summary = {k: statistics.median(r[k] for r in rows) for k in ("wall_s", "to_first_step_s")}
    print(
        f"median of {args.runs}: wall {summary['wall_s']:.2f} s, launch -> first step "
        f"{summary['to_first_step_s']:.2f} s (targets: first step <= 3 s, wall <= 10 s)"
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "median": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
