"""What `nnlab-train`'s process imports beyond the plain-PyTorch floor, and what each import costs.

    python -m benchmarks.startup_imports             # 7 fresh processes, medians
    python -m benchmarks.startup_imports --freeze    # the same with gc.freeze() after torch's import

Each run is a fresh interpreter that first imports torch and torch._dynamo (the floor: every
PyTorch optimizer imports the latter), then, timed one after another, the modules a training
run imports before its first step: OmegaConf, Hydra, rich, nnlab's command line, nnlab's engine
(tasks, data, models, checks) and TensorBoard's writer. A full collection of the cyclic garbage
collector over the objects torch's import made can come due inside any of them; `--freeze` runs
`gc.freeze()` first, as `nnlab-train` does after its own imports, so they are no longer scanned.
Run it alone on the machine, with bytecode caches written (the first run writes them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CODE = """
import gc, json, time
import torch, torch._dynamo
if FREEZE:
    gc.freeze()
marks = []
start = time.perf_counter()
import omegaconf
marks.append(("OmegaConf (with PyYAML and the ANTLR runtime)", time.perf_counter()))
import hydra, hydra.utils, hydra.core.utils, hydra._internal.hydra, hydra._internal.utils
marks.append(("Hydra", time.perf_counter()))
import rich.console, rich.progress
marks.append(("rich", time.perf_counter()))
import nnlab.commands.train, nnlab.cli.app, nnlab.cli.console
marks.append(("nnlab's command line", time.perf_counter()))
import nnlab.runs.pipeline
marks.append(("nnlab's engine, tasks, data, models, checks", time.perf_counter()))
import torch.utils.tensorboard
marks.append(("torch.utils.tensorboard", time.perf_counter()))
seconds, previous = {}, start
for name, at in marks:
    seconds[name], previous = at - previous, at
print(json.dumps(seconds))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup_imports", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh processes (default 7)")
    parser.add_argument("--freeze", action="store_true", help="gc.freeze() after torch's import")
    args = parser.parse_args(argv)
    code = f"FREEZE = {args.freeze}\n{CODE}"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # bytecode caches, not timed
    runs = [
        json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
        for _ in range(args.runs)
    ]
    after = "torch and torch._dynamo" + (", then gc.freeze()" if args.freeze else "")
    print(f"| import (after {after}) | median of {args.runs} |")
    print("|---|---:|")
    total = 0.0
    for name in runs[0]:
        median = statistics.median(run[name] for run in runs)
        total += median
        print(f"| {name} | {median * 1e3:.0f} ms |")
    print(f"| all of them (sum of the medians) | {total * 1e3:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
