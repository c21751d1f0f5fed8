"""Run the concept lab's experiments (docs/concepts.md) as a user would, time them, and keep
their reports for the docs.

    python scripts/concepts.py optimizers batch_norm      # named experiments
    python scripts/concepts.py --all                      # every experiment with a `report:` section
    python scripts/concepts.py optimizers -- trainer.max_epochs=2   # extra overrides for every trial

For each name: `nnlab-train -m experiment=<name>` when the experiment sweeps something
(`hydra.sweeper.params` in its YAML), else `nnlab-train experiment=<name>`, into
outputs/concepts/<name>/<date>_<time>/; then `nnlab-report` on that folder. The report's files
(report.md, report.png, curves.png) and timing.json (the command, wall and CPU seconds, the
machine's load when it started) are copied to docs/figures/concepts/<name>/.

The issue's budget is 3 minutes per experiment on a 2-core CPU; the summary marks any over it.
CPU seconds (user + system of the command) say how much of a wall time was the machine being busy
with something else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "configs" / "experiment"
BUDGET_S = 180.0
KEPT = ("report.md", "report.png", "curves.png")


def sweeps(name: str) -> bool:
    """Whether the experiment's YAML sets `hydra.sweeper.params` (a comparison)."""
    cfg = OmegaConf.load(EXPERIMENTS / f"{name}.yaml")
    return bool(OmegaConf.select(cfg, "hydra.sweeper.params"))


def with_report_section() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.yaml") if "report" in OmegaConf.load(p))


def command(name: str, out: Path, extra: list[str]) -> list[str]:
    exe = shutil.which("nnlab-train") or sys.exit("nnlab-train is not on PATH: install the project first.")
    if sweeps(name):
        return [exe, "-m", f"experiment={name}", f"hydra.sweep.dir={out}", *extra]
    return [exe, f"experiment={name}", f"hydra.run.dir={out}", *extra]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timing_record(name: str, command: str, returncode: int, wall: float, cpu: float, load: float, out: Path) -> dict:
    """What timing.json says of one command (or pipeline): how long, on what, how busy the machine was."""
    return {
        "experiment": name,
        "command": command,
        "returncode": returncode,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_1min_at_start": round(load, 2),
        "cores": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "date": datetime.now().isoformat(timespec="seconds"),
        "run_dir": str(out.relative_to(ROOT) if out.is_relative_to(ROOT) else out),
    }


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the script's own arguments, the overrides after `--` for every training command)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    return argv[:cut], argv[cut + 1 :]


def print_summary(results: list[dict], what: str) -> None:
    print(f"\n| {what} | exit | wall s | CPU s | load at start | within 3 min |\n|---|---:|---:|---:|---:|---|")
    for r in results:
        ok = "yes" if r["wall_s"] <= BUDGET_S else ("CPU only" if r["cpu_s"] <= BUDGET_S else "NO")
        cells = [r["experiment"], r["returncode"], r["wall_s"], r["cpu_s"], r["load_1min_at_start"], ok]
        print("| " + " | ".join(str(c) for c in cells) + " |")


def run(name: str, runs_dir: Path, docs_dir: Path, extra: list[str]) -> dict:
    out = runs_dir / name / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    cmd = command(name, out, extra)
    shown = " ".join(["nnlab-train", *cmd[1:]])
    print(f"\n=== {name}: {shown}", flush=True)
    load = os.getloadavg()[0]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    timing = timing_record(name, shown, done.returncode, wall, cpu, load, out)
    if out.is_dir():
        exe = shutil.which("nnlab-report") or sys.exit("nnlab-report is not on PATH: install the project first.")
        subprocess.run([exe, str(out)], cwd=ROOT)
        target = docs_dir / name
        target.mkdir(parents=True, exist_ok=True)
        for file in KEPT:
            (target / file).unlink(missing_ok=True)  # no figure left from an earlier version of the experiment
            if (out / file).is_file():
                shutil.copy2(out / file, target / file)
        (target / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="experiment names (configs/experiment/<name>.yaml)")
    parser.add_argument("--all", action="store_true", help="every experiment with a `report:` section")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "outputs" / "concepts")
    parser.add_argument("--docs-dir", type=Path, default=ROOT / "docs" / "figures" / "concepts")
    own, extra = split_argv(sys.argv[1:])
    args = parser.parse_args(own)
    names = with_report_section() if args.all else args.names
    unknown = [n for n in names if not (EXPERIMENTS / f"{n}.yaml").is_file()]
    if not names or unknown:
        known = " ".join(p.stem for p in sorted(EXPERIMENTS.glob("*.yaml")))
        parser.error(f"unknown experiment(s) {unknown}; choose from: {known}")
    results = [run(n, args.runs_dir, args.docs_dir, extra) for n in names]
    print_summary(results, "experiment")
    sys.exit(max((r["returncode"] for r in results), default=0))


if __name__ == "__main__":
    main()
