"""The defaults' speed before and after a change, measured side by side in one run: the main job's
start-up against the plain-PyTorch floor, and nnlab's epochs against the raw loop.

    python -m benchmarks.defaults_before_after --before de1ed52            # print the tables
    python -m benchmarks.defaults_before_after --before de1ed52 --write    # and put them in docs/benchmarks.md
    python -m benchmarks.defaults_before_after --from-json benchmarks/defaults_before_after.json --write   # no runs

`--before` is a git revision, checked out with `git worktree add --detach` into a temporary
folder (removed at the end); "after" is this checkout as it is. Each side's commands run with
PYTHONPATH=<side>/src in front, so nnlab (and `benchmarks`) come from that side while torch, Hydra
and the rest come from this environment, as in scripts/compare_results.py; `import nnlab` is
checked to resolve there first.

1. The main job. `nnlab-train` with every default, as a fresh process, `--runs` rounds; each round
   launches the plain PyTorch script of `benchmarks.time_main_job --floor` (torch, the same MLP,
   its Adam, one step), the before side and the after side, in an order shuffled anew each
   round (seeded). Reported: launch -> first step (the engine's "Training ..." line), the whole
   run's wall time, test accuracy, and nnlab's cost over the floor (the median of each round's
   difference). One unmeasured round first writes each side's bytecode cache, as a user's first
   run does (this environment may set PYTHONDONTWRITEBYTECODE; the runs here do not).
2. Epoch pairs. Each side's own `python -m benchmarks.bench_paired` (its engine, its script), the
   two sides taking turns, `--rounds` times for the MLP of the default experiment and once for
   each of the 1-D CNN, LSTM and Transformer cases: nnlab with every default on (and "bare", no
   callbacks or logger) against the raw loop, per epoch. After a change of the optimizer's
   default, the after side's raw loop makes nnlab's update, and a second raw loop PyTorch's own
   (`bench_paired` says which).

Run it alone on the machine: every figure is a time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

from benchmarks.provenance import environment, write_between
from benchmarks.time_main_job import floor_run, nnlab_run

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
START = "<!-- BEGIN generated: defaults_before_after (python -m benchmarks.defaults_before_after --write) -->"
END = "<!-- END generated: defaults_before_after -->"
# The epoch-pair cases: (name, bench_paired arguments, epoch pairs).
CASES = (
    ("MLP on digits (the default experiment)", [], 150),
    ("1-D CNN on MNIST-1D", ["--", "experiment=mnist1d_cnn"], 20),
    ("LSTM on MNIST-1D", ["--", "model=lstm", "data=mnist1d"], 10),
    ("Transformer on MNIST-1D", ["--", "experiment=mnist1d_transformer", "trainer.gradient_clip_val=null"], 10),
)
ROW = re.compile(r"^\| (defaults|bare) \| (-?[\d.]+) ms \| .* \| ([\d.]+)x \|$")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def side_env(root: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def check_side(root: Path) -> None:
    """Exit unless `import nnlab` resolves to this side's src/."""
    found = subprocess.run(
        [sys.executable, "-c", "import nnlab; print(nnlab.__file__)"],
        env=side_env(root),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to((root / "src").resolve()):
        sys.exit(f"import nnlab with PYTHONPATH={root / 'src'} resolved to {found}: its side would not be measured")


def main_job(root: Path, run_dir: Path) -> dict[str, float]:
    """One `nnlab-train` run of `root`'s nnlab, in `run_dir`: wall, launch -> first step, test acc."""
    exe = shutil.which("nnlab-train") or sys.exit("nnlab-train is not on PATH: install the project first.")
    row = nnlab_run(exe, run_dir, [], env=side_env(root))
    return {"wall_s": row["wall_s"], "to_first_step_s": row["to_first_step_s"], "test_acc": row["test/acc"]}


def start_up(sides: dict[str, Path], runs: int, work: Path, seed: int) -> dict[str, list[dict[str, float]]]:
    turns = random.Random(seed)
    for name, root in sides.items():  # bytecode caches written, first allocations made: not measured
        main_job(root, work / f"warm_{name}")
    rows: dict[str, list[dict[str, float]]] = {"floor": [], **{name: [] for name in sides}}
    for i in range(runs):
        for name in turns.sample(list(rows), len(rows)):
            if name == "floor":
                rows["floor"].append({"to_first_step_s": floor_run()[0]})
            else:
                rows[name].append(main_job(sides[name], work / f"{name}_{i}"))
        line = ", ".join(f"{name} {rows[name][-1]['to_first_step_s']:.2f} s" for name in rows)
        print(f"round {i + 1}/{runs}: launch -> first step: {line}", flush=True)
    return rows


def epoch_pairs(root: Path, args: list[str], pairs: int) -> dict[str, list[tuple[float, float]]]:
    """`root`'s bench_paired: for nnlab "defaults" and "bare", (extra ms per epoch, ratio) against
    each raw loop it ran, in its order (the same update first)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_paired", "--epochs", str(pairs), *args],
        cwd=root,
        env=side_env(root),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"bench_paired ({root}) failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    found: dict[str, list[tuple[float, float]]] = {"defaults": [], "bare": []}
    for line in proc.stdout.splitlines():
        m = ROW.match(line.strip())
        if m:
            found[m.group(1)].append((float(m.group(2)), float(m.group(3))))
    if not found["defaults"]:
        sys.exit(f"bench_paired ({root}) printed no table:\n{proc.stdout[-2000:]}")
    return found


def epochs(sides: dict[str, Path], rounds: int, scale: float) -> list[dict]:
    results = []
    for title, args, full in CASES:
        pairs = max(2, round(full * scale))
        runs: dict[str, list[dict]] = {name: [] for name in sides}
        for r in range(rounds if not args else 1):
            for name in sides if r % 2 == 0 else reversed(list(sides)):
                runs[name].append(epoch_pairs(sides[name], args, pairs))
                print(f"{title}, {name}: defaults {runs[name][-1]['defaults']}", flush=True)
        results.append({"case": title, "pairs": pairs, "runs": runs})
    return results


def median_of(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


# The epoch table's columns: (side, nnlab variant, which raw loop: 0 the same update, 1 PyTorch's).
COLUMNS = (
    ("before", "defaults", 0),
    ("after", "defaults", 0),
    ("after", "defaults", 1),
    ("before", "bare", 0),
    ("after", "bare", 0),
)


def ratios(runs: dict[str, list[dict]], side: str, which: str, index: int) -> str:
    """The ratios of `side`'s runs for nnlab `which` against raw loop `index`, or "-"."""
    got = [f"{run[which][index][1]:.3f}x" for run in runs[side] if len(run[which]) > index]
    return ", ".join(got) if got else "-"


def tables(result: dict) -> str:
    start = result["start_up"]
    floor = [r["to_first_step_s"] for r in start["floor"]]
    lines = [
        f"Measured {result['date']} by `{result['command']}` (before: {result['before']}, after: "
        f"{result['after']}), on {result['environment']['cpu']} ({result['environment']['cpu_count']} cores), "
        f"load average {result['environment']['load_average'][0]:.2f} at the start.",
        "",
        f"**The main job** (`nnlab-train`, every default), medians of {len(floor)} rounds; the plain PyTorch "
        f"script's launch -> first step: {statistics.median(floor):.2f} s.",
        "",
        "| side | launch -> first step | nnlab over the floor (median of rounds' differences) | whole run | test acc |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in ("before", "after"):
        rows = start[name]
        over = statistics.median(r["to_first_step_s"] - f for r, f in zip(rows, floor))
        accs = sorted({r["test_acc"] for r in rows})
        lines.append(
            f"| {name} | {median_of(rows, 'to_first_step_s'):.2f} s | **{over:.2f} s** | "
            f"{median_of(rows, 'wall_s'):.2f} s | {', '.join(f'{a:.4f}' for a in accs)} |"
        )
    lines += [
        "",
        "**Epoch by epoch** (`python -m benchmarks.bench_paired` of each side; nnlab with every default on, "
        "and bare: no callbacks or logger; median of each run's epoch pairs; where a side ran twice, both runs):",
        "",
        "| case | epoch pairs | before: defaults vs raw loop | after: defaults vs raw loop, same update | "
        "after: defaults vs raw loop, PyTorch's update | before: bare | after: bare, same update |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case in result["epochs"]:
        cells = [ratios(case["runs"], *column) for column in COLUMNS]
        lines.append(f"| {case['case']} | {case['pairs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.defaults_before_after", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--before", help="the git revision to compare this checkout with (required unless --from-json)")
    parser.add_argument("--runs", type=int, default=7, help="rounds of the main job (default 7)")
    parser.add_argument("--rounds", type=int, default=2, help="bench_paired runs per side for the MLP (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rounds' shuffled order")
    parser.add_argument("--scale", type=float, default=1.0, help="epoch pairs x this (0.1: a quick trial)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "defaults_before_after.json")
    parser.add_argument("--write", action="store_true", help=f"put the tables into {DOC.relative_to(REPO)}")
    parser.add_argument("--from-json", type=Path, help="make the tables of saved results (no runs)")
    args = parser.parse_args(argv)
    if args.from_json:
        return report(json.loads(args.from_json.read_text()), args.write)
    if not args.before:
        parser.error("--before REVISION is required (or --from-json FILE)")
    commit = git("rev-parse", "--verify", f"{args.before}^{{commit}}")
    after = git("rev-parse", "HEAD") + (
        " + uncommitted edits" if git("status", "--porcelain", "src", "benchmarks") else ""
    )
    with tempfile.TemporaryDirectory(prefix="before_after_") as tmp:
        checkout = Path(tmp) / "before"
        git("worktree", "add", "--detach", str(checkout), commit)
        try:
            sides = {"before": checkout, "after": REPO}
            for root in sides.values():
                check_side(root)
            env = environment(["torch", "hydra-core"])
            result = {
                "command": "python -m benchmarks.defaults_before_after " + " ".join(argv or sys.argv[1:]),
                "date": str(date.today()),
                "before": commit[:12],
                "after": after[:12] + after[40:],
                "environment": env,
                "start_up": start_up(sides, args.runs, Path(tmp), args.seed),
                "epochs": epochs(sides, args.rounds, args.scale),
            }
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(checkout)], check=False)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return report(result, args.write)


def report(result: dict, write: bool) -> int:
    """Print the tables of `result`, and with `write` put them between the markers of the doc."""
    table = tables(result)
    print("\n" + table)
    if write:
        write_between(DOC, START, END, table)
        print(f"\nwrote the tables into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
