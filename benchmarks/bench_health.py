"""Measure what the training-health monitor costs on the default experiment.

    python -m benchmarks.bench_health --repeats 5 --out health_bench.json

Runs `python -m nnlab.commands.train callbacks.progress=null` (the default experiment) `--repeats` times
with the monitor off (`callbacks.health=null`) and as many times with it on, alternating off/on so
drifts in machine load hit both alike. The training time of a run is the sum of its per-epoch
`perf/epoch_s` (the training steps only: no start-up, validation or test), read back from its
TensorBoard events; the wall time of the whole process is reported too. Prints the medians and
the on/off ratio, and writes every run and the summary as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

MODES = {"off": ["callbacks.health=null"], "on": []}


def read_run(run_dir: Path) -> tuple[float, int]:
    """(sum of perf/epoch_s, number of health checks logged) from a run's event files."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    train_s = sum(e.value for e in events.Scalars("perf/epoch_s"))
    checks = len(events.Scalars("health/grad_norm_total")) if "health/grad_norm_total" in tags else 0
    return train_s, checks


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_health", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per mode (off and on)")
    parser.add_argument("--out", type=Path, help="write the runs and the summary here as JSON")
    parser.add_argument("overrides", nargs="*", help="extra nnlab-train overrides for both modes")
    args = parser.parse_args()

    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode, extra in MODES.items():
                run_dir = Path(tmp) / f"{mode}{i}"
                command = [
                    sys.executable,
                    "-m",
                    "nnlab.commands.train",
                    "callbacks.progress=null",
                    f"hydra.run.dir={run_dir}",
                ]
                t0 = time.perf_counter()
                proc = subprocess.run([*command, *extra, *args.overrides], capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    sys.exit(f"{mode} run {i} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
                train_s, checks = read_run(run_dir)
                runs.append({"mode": mode, "repeat": i, "train_s": train_s, "wall_s": wall, "checks": checks})
                print(f"{mode:>3} run {i}: training {train_s:6.2f} s, wall {wall:6.2f} s, {checks} health checks")

    summary: dict[str, float] = {}
    for mode in MODES:
        for key in ("train_s", "wall_s"):
            summary[f"{mode}_{key}"] = statistics.median(r[key] for r in runs if r["mode"] == mode)
    summary["ratio_train"] = summary["on_train_s"] / summary["off_train_s"]
    summary["ratio_wall"] = summary["on_wall_s"] / summary["off_wall_s"]

    print(f"\nmedian of {args.repeats} runs per mode")
    print(f"{'monitor':<8}{'training s':>12}{'wall s':>10}")
    for mode in MODES:
        print(f"{mode:<8}{summary[f'{mode}_train_s']:>12.2f}{summary[f'{mode}_wall_s']:>10.2f}")
    print(f"{'on/off':<8}{summary['ratio_train']:>12.3f}{summary['ratio_wall']:>10.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"repeats": args.repeats, "overrides": args.overrides, "runs": runs, "summary": summary}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
