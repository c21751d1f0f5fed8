"""Measure how much faster a sweep runs with parallel local trials, and what a trial costs to start.

    python -m benchmarks.bench_sweep --trials 8 --epochs 10 100 --repeats 3 --out sweep_bench.json

For each trial length in `--epochs`, runs `python -m nnlab.commands.train -m seed=0,...,<trials-1>` (the
default experiment on CPU) once per launcher variant:

    sequential            Hydra's basic launcher: one trial after another, in the main process
    sequential 1 thread   the same with OMP_NUM_THREADS=1 (does one trial use a second core?)
    joblib                hydra/launcher=joblib hydra.launcher.n_jobs=<n-jobs>: loky worker
                          processes, which joblib starts with OMP_NUM_THREADS=cores // n_jobs
    joblib oversubscribed the same with OMP_NUM_THREADS=<cores> set, which loky keeps: every
                          worker runs as many torch threads as there are cores

The speed-up is the sequential wall time over the variant's (the whole command, imports included).
Where the time goes is read from the timestamps (ms) each trial logs to its train.log, from
Hydra's "Launching" line on the command's stdout, and from the process id in the name of each
trial's TensorBoard event file (which process ran it). nnlab logs no per-step timestamp, so a
trial's first step is its "Training ..." line, logged just before the loop starts:

    first_s    Hydra's "Launching" -> the first step of a process's first trial (median over the
               processes): for joblib, starting the workers and importing torch and nnlab in them
    startup_s  the end ("Results in") of the previous trial in the same process -> this trial's
               first step (median over trials that are not a process's first): the steady cost of
               starting one more trial (Hydra's job set-up, validation, building data and model)
    loop_s     "Training ..." -> the last "epoch N/N" line: the training loop with validation
    finish_s   the last epoch -> "Results in": test, figures, metrics.json

Prints a table and writes every trial's times and the summary as JSON to `--out`. A warm-up
imports the heavy packages once (so the first variant does not pay for a cold file cache); then
the variants of one trial length run back to back, `--repeats` times in turn, and each row is the
repeat with the median wall time. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

TARGET_SPEEDUP = 1.6
STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def variants(n_jobs: int, cores: int) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (launcher overrides, extra environment)."""
    joblib = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    return {
        "sequential": ([], {}),
        "sequential 1 thread": ([], {"OMP_NUM_THREADS": "1"}),
        "joblib": (joblib, {}),
        "joblib oversubscribed": (joblib, {"OMP_NUM_THREADS": str(cores)}),
    }


def stamp(line: str) -> float | None:
    match = STAMP.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


def read_trial(trial_dir: Path) -> dict[str, float]:
    """The moments a trial's train.log marks (seconds since the epoch) and its process id."""
    marks: dict[str, float] = {}
    for line in (trial_dir / "train.log").read_text().splitlines():
        t = stamp(line)
        if t is None:
            continue
        marks.setdefault("start", t)
        if "] - Training " in line:
            marks["training"] = t
        elif re.search(r"\] - epoch \d+/\d+ ", line):
            marks["last_epoch"] = t
        elif "] - Results in " in line:
            marks["end"] = t
    missing = {"start", "training", "last_epoch", "end"} - set(marks)
    if missing:
        raise SystemExit(f"{trial_dir}/train.log lacks the lines marking {sorted(missing)}")
    # events.out.tfevents.<time>.<host>.<pid>.<n>: the process that ran the trial
    events = sorted(trial_dir.glob("events.out.tfevents.*"))
    if not events:
        raise SystemExit(f"{trial_dir} has no TensorBoard events; keep logger=tensorboard")
    marks["pid"] = int(events[0].name.split(".")[-2])
    return marks


def run_sweep(
    workdir: Path, name: str, trials: int, epochs: int, launcher: list[str], env: dict[str, str], overrides: list[str]
) -> dict[str, Any]:
    sweep_dir = workdir / f"{name.replace(' ', '_')}_e{epochs}"
    args = ["-m", f"seed={','.join(map(str, range(trials)))}", f"trainer.max_epochs={epochs}", "trainer.device=cpu"]
    args += ["callbacks.progress=null", *launcher, *overrides, f"hydra.sweep.dir='{sweep_dir}'"]
    base_env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}  # the variant decides threads
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nnlab.commands.train", *args],
        cwd=workdir,
        env={**base_env, "NNLAB_ROOT": str(workdir), **env},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} (epochs={epochs}) failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    launched = next(stamp(line) for line in proc.stdout.splitlines() if "[HYDRA]" in line and "Launching" in line)
    marks = [read_trial(sweep_dir / str(num)) for num in range(trials)]
    per_trial = [
        {
            "pid": m["pid"],
            "loop_s": m["last_epoch"] - m["training"],
            "finish_s": m["end"] - m["last_epoch"],
        }
        for m in marks
    ]
    first, startup = [], []
    for pid in {m["pid"] for m in marks}:
        previous_end = launched
        for num in sorted((n for n, m in enumerate(marks) if m["pid"] == pid), key=lambda n: marks[n]["start"]):
            per_trial[num]["startup_s"] = marks[num]["training"] - previous_end
            (startup if previous_end != launched else first).append(per_trial[num]["startup_s"])
            previous_end = marks[num]["end"]
    return {
        "variant": name,
        "epochs": epochs,
        "wall_s": wall,
        "sweep_s": max(m["end"] for m in marks) - launched,  # Hydra's launch to the last trial's end
        "processes": len(first),
        "first_s": statistics.median(first),
        "startup_s": statistics.median(startup) if startup else float("nan"),
        **{key: statistics.median(t[key] for t in per_trial) for key in ("loop_s", "finish_s")},
        "trials": per_trial,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per sweep (seed=0,1,...)")
    parser.add_argument("--epochs", type=int, nargs="+", default=[10], help="trainer.max_epochs; one sweep set each")
    parser.add_argument("--n-jobs", type=int, default=2, help="hydra.launcher.n_jobs of the joblib variants")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant; the median is reported")
    parser.add_argument("--out", type=Path, help="write the sweeps and the summary here as JSON")
    parser.add_argument("overrides", nargs="*", help="extra nnlab-train overrides for every sweep")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    warm_up = "import torch, torch._dynamo, sklearn.metrics, matplotlib.pyplot, hydra, nnlab.runs.pipeline"
    subprocess.run([sys.executable, "-c", warm_up], check=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in args.epochs:
            runs: dict[str, list[dict[str, Any]]] = {}
            for repeat in range(args.repeats):
                for name, (launcher, env) in variants(args.n_jobs, cores).items():
                    workdir = Path(tmp) / f"r{repeat}"
                    workdir.mkdir(exist_ok=True)
                    result = run_sweep(workdir, name, args.trials, epochs, launcher, env, args.overrides)
                    runs.setdefault(name, []).append(result)
                    print(f"epochs={epochs:<4} {name:<22} wall {result['wall_s']:6.1f} s", flush=True)
            for repeats in runs.values():
                median = sorted(repeats, key=lambda r: r["wall_s"])[(len(repeats) - 1) // 2]
                results.append({**median, "walls_s": [r["wall_s"] for r in repeats]})

    for result in results:
        reference = next(r for r in results if r["epochs"] == result["epochs"] and r["variant"] == "sequential")
        result["speedup"] = reference["wall_s"] / result["wall_s"]
        result["speedup_sweep"] = reference["sweep_s"] / result["sweep_s"]

    print(f"\n{args.trials} trials per sweep, {cores} cores, joblib n_jobs={args.n_jobs}; columns from first s on:")
    print("medians over processes (first s) or trials (the others)")
    header = f"{'epochs':>6}  {'variant':<22}{'wall s':>8}{'speed-up':>9}{'sweep s':>9}{'speed-up':>9}{'procs':>6}"
    print(header + f"{'first s':>9}{'startup s':>10}{'loop s':>8}{'finish s':>9}")
    for r in results:
        print(
            f"{r['epochs']:>6}  {r['variant']:<22}{r['wall_s']:>8.1f}{r['speedup']:>8.2f}x{r['sweep_s']:>9.1f}"
            f"{r['speedup_sweep']:>8.2f}x{r['processes']:>6}{r['first_s']:>9.2f}{r['startup_s']:>10.2f}"
            f"{r['loop_s']:>8.2f}{r['finish_s']:>9.2f}"
        )
    for epochs in args.epochs:
        speedup = next(r["speedup"] for r in results if r["epochs"] == epochs and r["variant"] == "joblib")
        verdict = "meets" if speedup >= TARGET_SPEEDUP else "misses"
        print(f"epochs={epochs}: joblib speed-up {speedup:.2f}x {verdict} the {TARGET_SPEEDUP}x target")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        record = {"trials": args.trials, "cores": cores, "n_jobs": args.n_jobs, "repeats": args.repeats}
        record["overrides"] = args.overrides
        args.out.write_text(json.dumps({**record, "sweeps": results}, indent=2) + "\n")
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
