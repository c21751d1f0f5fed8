"""Data-parallel scaling on the CPU: what N gloo processes buy over one, and what the all-reduce costs.

    python -m benchmarks.ddp_scaling --write     # the tables into docs/benchmarks.md, the figure into docs/figures/
    python -m benchmarks.ddp_scaling --quick     # a smoke run: tiny model, 2 epochs, few steps; nothing written
    python -m benchmarks.ddp_scaling --procs 1,2,4 --out /tmp/ddp.json   # on a machine with 4 cores or more
    python -m benchmarks.ddp_scaling --from-json benchmarks/ddp_scaling.json --write   # saved results again

Two measurements:

Scaling (real `nnlab-train` runs). The same MLP trains on the same GLOBAL batches with 1, 2 (and
more: `--procs`) processes, each started by torchrun (`python -m torch.distributed.run
--standalone --nproc_per_node=N -m nnlab.commands.train trainer=ddp ...`), every process with one
torch thread (`OMP_NUM_THREADS=1`), so N processes use N cores. The global batch is fixed, each
rank gets `data.batch_size = global / N` rows of it (`DataModule.shard`), so every run takes the
same optimizer steps on the same rows, and the 1-process run (`data.drop_last=true`, the last
incomplete global batch dropped as DDP drops it) is the reference. For each N > 1, one process
with N threads also trains: what the same cores give a single process. Per run: `perf/epoch_s`
(rank 0's training loop, validation excluded) from its TensorBoard events, the median over the
epochs after the first; the speed-up against 1 process x 1 thread and against 1 process x N
threads; and the largest absolute difference of any parameter of its `last.ckpt` from the
reference's (read with `nnlab.engine.checkpoint.load_checkpoint`, `weights_only=True`):
data parallelism changes where the gradient is computed, not the update, so it stays at float
rounding (`--atol`).

Communication (a torch.distributed script, spawned with torch.multiprocessing, gloo, one thread
per process). For MLPs of several widths (`--sweep-hidden`) and per-rank batches
(`--sweep-batch`), with N processes: `compute` = one training step (forward, backward, SGD) on
the per-rank batch without any communication, every rank at once; `all-reduce` = one
`dist.all_reduce` of a float32 buffer of the model's size (its gradients); `DDP step` = the same
step through `DistributedDataParallel` (its all-reduce overlaps the backward). Against one
process stepping on the whole global batch (N x per-rank rows), the measured speed-up is
one-process step / DDP step: it falls below 1 when the all-reduce costs more than the compute
the other ranks take off rank 0. Each figure is rank 0's median over `--reps` steps after two
warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the checkout: docs/ and the benchmarks package
if str(ROOT) not in sys.path:  # run as `python benchmarks/ddp_scaling.py`, not only with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.provenance import environment, write_between  # noqa: E402  (after the path)

DOC = ROOT / "docs" / "benchmarks.md"
FIGURE = ROOT / "docs" / "figures" / "ddp_scaling.png"
RESULTS = ROOT / "benchmarks" / "ddp_scaling.json"
START, END = "<!-- ddp-scaling:begin -->", "<!-- ddp-scaling:end -->"
RUN_TIMEOUT_S = 600  # one nnlab-train run under torchrun; on expiry its whole process group is killed
WARMUP_STEPS = 2  # untimed steps before each timed series of the communication sweep

# The scaling runs' settings. No dropout and no batch norm: a rank's step depends on nothing but its
# rows, so N processes take exactly the single process's steps (tests/engine/test_ddp.py).
DEFAULT = {"samples": 24_000, "hidden": [512, 512], "global_batch": 256, "epochs": 5}
QUICK = {"samples": 2_000, "hidden": [32], "global_batch": 32, "epochs": 2}
SWEEP = {"hidden": [64, 512, 2048], "batch": [8, 64, 256], "reps": 20}
QUICK_SWEEP = {"hidden": [64], "batch": [8], "reps": 3}


# ---------------------------------------------------------------------------------------------
# Scaling: real nnlab-train runs under torchrun


def train_overrides(samples: int, hidden: list[int], global_batch: int, epochs: int, procs: int) -> list[str]:
    """`nnlab-train` overrides of one scaling run with `procs` processes: the same model, data,
    global batches and steps for every `procs`."""
    common = [
        "data=spirals",
        f"data.dataset.n_samples={samples}",
        f"model.hidden_sizes=[{','.join(map(str, hidden))}]",
        "model.dropout=0.0",
        "model.batch_norm=false",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "trainer.device=cpu",
        f"trainer.max_epochs={epochs}",
        "trainer.deterministic=true",
        "trainer.summary=false",
        "callbacks.progress=null",
        "callbacks.health=null",  # its periodic check runs on rank 0 alone: not data-parallel work
        "baselines=[]",  # classical models fitted beside the network: not what is timed, and slow
    ]
    if procs == 1:  # the reference: whole global batches, the last incomplete one dropped as DDP drops it
        return [*common, f"data.batch_size={global_batch}", "data.drop_last=true"]
    return [*common, "trainer=ddp", f"data.batch_size={global_batch // procs}"]


def torchrun(procs: int, threads: int, overrides: list[str], run_dir: Path) -> None:
    """`nnlab-train <overrides>` with `procs` processes of `threads` torch threads each, its run
    folder `run_dir`. On a failure or a timeout the whole process group goes (no orphan ranks)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
        "-m", "nnlab.commands.train", *overrides, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NNLAB_ROOT": str(run_dir.parent)}
    proc = subprocess.Popen(
        command, cwd=run_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {proc.returncode}:\n{output[-3000:]}")


def scaling_run(procs: int, threads: int, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """Train once with `procs` processes x `threads` threads; its epoch times and final weights."""
    from nnlab.engine.checkpoint import load_checkpoint
    from nnlab.runs.curves import read_scalars

    run_dir = work / f"procs{procs}_threads{threads}"
    overrides = train_overrides(
        settings["samples"], settings["hidden"], settings["global_batch"], settings["epochs"], procs
    )
    torchrun(procs, threads, overrides, run_dir)
    scalars = read_scalars(run_dir, ["perf/epoch_s"])
    if "perf/epoch_s" not in scalars:
        raise RuntimeError(f"{run_dir}: no perf/epoch_s in its TensorBoard events")
    weights = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["model"]
    return {
        "procs": procs,
        "threads": threads,
        "per_rank_batch": settings["global_batch"] // procs,
        "epoch_s": scalars["perf/epoch_s"][1],
        "weights": weights,
    }


def max_abs_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The largest absolute difference of any tensor of two state dicts (inf when they do not pair up)."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        return float("inf")
    return max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)


def summarize_scaling(runs: list[dict[str, Any]], atol: float) -> list[dict[str, Any]]:
    """Each run's median epoch time (epochs after the first), its speed-ups and its distance from
    the 1-process, 1-thread run's weights; the weights themselves are dropped."""
    median = {(r["procs"], r["threads"]): statistics.median(r["epoch_s"][1:] or r["epoch_s"]) for r in runs}
    reference = next(r for r in runs if (r["procs"], r["threads"]) == (1, 1))
    rows = []
    for r in runs:
        key, cores = (r["procs"], r["threads"]), r["procs"] * r["threads"]
        same_cores = median.get((1, cores)) if r["procs"] > 1 else None
        diff = max_abs_diff(r["weights"], reference["weights"])
        rows.append(
            {
                **{k: v for k, v in r.items() if k != "weights"},
                "median_epoch_s": median[key],
                "speedup": median[(1, 1)] / median[key],
                "speedup_same_cores": None if same_cores is None else same_cores / median[key],
                "max_abs_diff": diff,
                "weights_match": diff <= atol,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# Communication: compute per step against the all-reduce, in a spawned torch.distributed group


def timed_ms(step: Any, reps: int) -> float:
    """Median milliseconds of `step()` over `reps` calls, after WARMUP_STEPS untimed ones."""
    for _ in range(WARMUP_STEPS):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def train_step(net: Any, optimizer: Any, x: Any, y: Any) -> None:
    """One SGD step on (x, y); through DistributedDataParallel, the backward also averages the gradients."""
    import torch.nn.functional as F

    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(net(x), y).backward()
    optimizer.step()


def comm_worker(rank: int, world: int, store: str, configs: list[list[int]], reps: int, out: str) -> None:
    """One rank of the sweep (torch.multiprocessing.spawn calls it with `rank` first): for each
    (hidden, rows) in `configs`, the step time without communication; with `world` > 1 also one
    all-reduce of the gradients' size and the step through DistributedDataParallel. Rank 0
    writes its medians to `out` (JSON)."""
    import datetime

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from nnlab.models.mlp import MLP

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    rows = []
    for hidden, batch in configs:
        torch.manual_seed(rank)  # each rank its own rows; the weights are broadcast from rank 0 by DDP
        model = MLP((2,), 2, [hidden, hidden])
        x, y = torch.randn(batch, 2), torch.randint(0, 2, (batch,))
        params = sum(p.numel() for p in model.parameters())
        plain = torch.optim.SGD(model.parameters(), lr=1e-3)
        dist.barrier()  # every rank computes at the same time, as in training
        row = {"hidden": hidden, "rows": batch, "params": params}
        row["compute_ms"] = timed_ms(lambda: train_step(model, plain, x, y), reps)  # noqa: B023 (called here)
        if world > 1:
            grads = torch.zeros(params)
            dist.barrier()
            row["allreduce_ms"] = timed_ms(lambda: dist.all_reduce(grads), reps)  # noqa: B023
            ddp = DistributedDataParallel(model)
            synced = torch.optim.SGD(ddp.parameters(), lr=1e-3)
            dist.barrier()
            row["ddp_step_ms"] = timed_ms(lambda: train_step(ddp, synced, x, y), reps)  # noqa: B023
        rows.append(row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows), encoding="utf-8")
    dist.barrier()
    dist.destroy_process_group()


def spawn_sweep(world: int, configs: list[list[int]], reps: int) -> list[dict[str, Any]]:
    """Run `comm_worker` in `world` fresh processes (each joins a gloo group through a file)."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="ddp_scaling_") as tmp:
        store, out = str(Path(tmp) / "store"), str(Path(tmp) / "rows.json")
        mp.spawn(comm_worker, args=(world, store, configs, reps, out), nprocs=world, join=True)
        return json.loads(Path(out).read_text(encoding="utf-8"))


def communication(procs: list[int], hidden: list[int], batches: list[int], reps: int) -> list[dict[str, Any]]:
    """The sweep for every N > 1 in `procs`, each row beside one process stepping on N x its rows."""
    many = [n for n in procs if n > 1]
    single_configs = sorted({(h, n * b) for n in many for h in hidden for b in batches})
    single = {
        (r["hidden"], r["rows"]): r["compute_ms"] for r in spawn_sweep(1, [list(c) for c in single_configs], reps)
    }
    rows = []
    for n in many:
        for r in spawn_sweep(n, [[h, b] for h in hidden for b in batches], reps):
            one = single[(r["hidden"], n * r["rows"])]
            rows.append(
                {
                    "procs": n,
                    "hidden": r["hidden"],
                    "params": r["params"],
                    "per_rank_batch": r["rows"],
                    "compute_ms": r["compute_ms"],
                    "allreduce_ms": r["allreduce_ms"],
                    "ddp_step_ms": r["ddp_step_ms"],
                    "single_step_ms": one,
                    "speedup": one / r["ddp_step_ms"],
                    # With no overlap of the all-reduce and the backward: the bound the table's columns give.
                    "speedup_no_overlap": one / (r["compute_ms"] + r["allreduce_ms"]),
                }
            )
    return rows


# ---------------------------------------------------------------------------------------------
# Output: the tables, the figure, the docs


def markdown(results: dict[str, Any]) -> str:
    env, s = results["environment"], results["settings"]
    v = env["versions"]
    hidden = ", ".join(map(str, s["hidden"]))
    lines = [
        f"Measured with `{results['command']}` on {results['date']}.",
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, device cpu, gloo; load average at the end "
        f"{', '.join(f'{x:.2f}' for x in env['load_average'] or [])}. "
        f"Versions: Python {v['python']}, torch {v['torch']}, nnlab {v['nnlab']}.",
        "",
        f"**Scaling**: MLP [{hidden}] ({results['scaling_params']:,} parameters) on `data=spirals` "
        f"({s['samples']:,} points), SGD, global batch {s['global_batch']}, {s['epochs']} epochs; epoch time = "
        f"`perf/epoch_s`, median of the epochs after the first; weights = the largest |difference| of any parameter "
        f"of `last.ckpt` from the 1-process, 1-thread run's (match: <= {results['atol']:g}).",
        "",
        "| processes x threads | per-rank batch | epoch, s | speed-up vs 1 x 1 "
        "| speed-up vs 1 process on the same cores | final weights vs 1 x 1 |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results["scaling"]:
        same = "" if r["speedup_same_cores"] is None else f"{r['speedup_same_cores']:.2f}x"
        if (r["procs"], r["threads"]) == (1, 1):
            verdict = "(the reference)"
        else:
            verdict = f"{'match' if r['weights_match'] else 'DIFFER'}, max {r['max_abs_diff']:.1e}"
        lines.append(
            f"| {r['procs']} x {r['threads']} | {r['per_rank_batch']} | {r['median_epoch_s']:.3f} "
            f"| {r['speedup']:.2f}x | {same} | {verdict} |"
        )
    lines += [
        "",
        f"**Communication**: MLP [h, h] on 2 inputs, one thread per process, medians of {results['reps']} steps. "
        "compute = a step on the per-rank batch with no communication (every rank at once); all-reduce = one "
        "gloo all_reduce of a buffer of the model's size; DDP step = the step through DistributedDataParallel; "
        "one process = one process stepping on the whole global batch (processes x per-rank batch). "
        "Speed-up = one process / DDP step.",
        "",
        "| processes | hidden h | parameters | per-rank batch | compute, ms | all-reduce, ms | all-reduce / compute "
        "| DDP step, ms | one process, ms | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["communication"]:
        lines.append(
            f"| {r['procs']} | {r['hidden']} | {r['params']:,} | {r['per_rank_batch']} | {r['compute_ms']:.2f} "
            f"| {r['allreduce_ms']:.2f} | {r['allreduce_ms'] / r['compute_ms']:.2f} | {r['ddp_step_ms']:.2f} "
            f"| {r['single_step_ms']:.2f} | {r['speedup']:.2f}x |"
        )
    lines += ["", "![Scaling and communication cost](figures/ddp_scaling.png)"]
    return "\n".join(lines)


def compact(n: int) -> str:
    """4482 -> "4.48k", 4206594 -> "4.21M": a figure's label."""
    for size, unit in ((1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def plot(results: dict[str, Any], path: Path) -> None:
    """Left: each scaling run's epoch time. Right: each sweep row's speed-up against its
    all-reduce / compute ratio, with the break-even line at 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    runs = results["scaling"]
    labels = [f"{r['procs']} x {r['threads']}" for r in runs]
    bars = left.bar(
        labels, [r["median_epoch_s"] for r in runs], color=["C0" if r["procs"] == 1 else "C1" for r in runs]
    )
    for bar, r in zip(bars, runs):
        left.annotate(f"{r['speedup']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                      va="bottom", fontsize=9)  # fmt: skip
    left.set_xlabel("processes x threads per process")
    left.set_ylabel("s per epoch (median)")
    left.set_title(f"nnlab-train, global batch {results['settings']['global_batch']}: speed-up vs 1 x 1")

    for n in sorted({r["procs"] for r in results["communication"]}):
        rows = [r for r in results["communication"] if r["procs"] == n]
        ratio = [r["allreduce_ms"] / r["compute_ms"] for r in rows]
        right.scatter(ratio, [r["speedup"] for r in rows], label=f"{n} processes", zorder=3)
        for x, r in zip(ratio, rows):
            right.annotate(f"{compact(r['params'])} weights, b={r['per_rank_batch']}", (x, r["speedup"]), fontsize=7,
                           xytext=(3, 3), textcoords="offset points")  # fmt: skip
        right.axhline(n, color="grey", lw=0.8, ls=":")
    right.axhline(1.0, color="C3", lw=1, ls="--", label="break-even (1 process)")
    right.set_xscale("log")
    right.set_xlabel("all-reduce time / compute time per step")
    right.set_ylabel("speed-up of a DDP step over one process")
    right.set_title("When data parallelism stops paying")
    right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def measure(
    settings: dict[str, Any],
    procs: list[int],
    sweep_hidden: list[int],
    sweep_batch: list[int],
    reps: int,
    atol: float,
    work: Path,
) -> dict[str, Any]:
    """Both measurements: the scaling runs, then the communication sweep; the results as saved."""
    # One thread per process; beside N processes, one process with N threads (the same cores).
    layout = [(1, 1)] + [pair for n in procs if n > 1 for pair in ((1, n), (n, 1))]
    work.mkdir(parents=True, exist_ok=True)
    runs = []
    for n, threads in layout:
        print(f"nnlab-train with {n} process(es) x {threads} thread(s) ...", file=sys.stderr, flush=True)
        runs.append(scaling_run(n, threads, settings, work))
    print("communication sweep ...", file=sys.stderr, flush=True)
    comm = communication(procs, sweep_hidden, sweep_batch, reps)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "settings": settings,
        "procs": procs,
        "atol": atol,
        "reps": reps,
        "scaling_params": sum(t.numel() for t in runs[0]["weights"].values()),
        "scaling": summarize_scaling(runs, atol),
        "communication": comm,
        "environment": environment(("nnlab", "torch", "numpy")),
    }


def check_procs(procs: list[int], global_batch: int, cores: int) -> None:
    """Raise UserError unless `procs` starts from 1, fits the cores (one thread per process, and
    one process with N threads beside N processes) and splits the global batch evenly."""
    from nnlab.errors import UserError

    if not procs or min(procs) < 1 or 1 not in procs:
        raise UserError(
            f"--procs {','.join(map(str, procs))}: give process counts of at least 1, including 1 (the reference "
            "every speed-up and weight difference is measured against), e.g. --procs 1,2."
        )
    if max(procs) > cores:
        raise UserError(
            f"--procs {max(procs)} needs {max(procs)} cores (one thread per process) but this machine has {cores}: "
            "more processes than cores measure the scheduler, not data parallelism. Drop it from --procs."
        )
    uneven = [n for n in procs if global_batch % n]
    if uneven:
        raise UserError(
            f"--global-batch {global_batch} does not split evenly over {uneven[0]} processes: every rank takes "
            f"global / N rows. Choose a multiple of every count in --procs ({', '.join(map(str, procs))})."
        )


def save(results: dict[str, Any], table: str, out: Path | None, figure: Path | None, write: bool) -> None:
    """The raw results to `out`, the figure to `figure`; with `write`, the tables into the docs and
    the figure they show into docs/figures/."""
    if out is not None:
        out.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        print(f"\nRaw results: {out}", file=sys.stderr)
    if figure is not None:
        plot(results, figure)
    if write:
        plot(results, FIGURE)
        write_between(DOC, START, END, table)
        print(f"Tables written into {DOC}, the figure into {FIGURE}", file=sys.stderr)


def parse_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated whole numbers, e.g. 1,2,4") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ddp_scaling", description=__doc__.split("\n\n")[0])
    cores = os.cpu_count() or 1
    parser.add_argument("--procs", type=parse_ints, help="process counts (default: those of 1,2,4 the cores allow)")
    parser.add_argument("--epochs", type=int, help=f"epochs of each scaling run (default {DEFAULT['epochs']})")
    parser.add_argument("--global-batch", type=int, help=f"rows per global batch (default {DEFAULT['global_batch']})")
    parser.add_argument(
        "--hidden",
        type=parse_ints,
        help=f"the scaling runs' MLP hidden sizes (default {','.join(map(str, DEFAULT['hidden']))})",
    )
    parser.add_argument("--samples", type=int, help=f"spirals points (default {DEFAULT['samples']:,})")
    parser.add_argument(
        "--sweep-hidden",
        type=parse_ints,
        help=f"communication sweep widths h (default {','.join(map(str, SWEEP['hidden']))})",
    )
    parser.add_argument(
        "--sweep-batch",
        type=parse_ints,
        help=f"communication sweep per-rank batches (default {','.join(map(str, SWEEP['batch']))})",
    )
    parser.add_argument("--reps", type=int, help=f"timed steps per sweep figure (default {SWEEP['reps']})")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest weight difference called a match")
    parser.add_argument("--quick", action="store_true", help="tiny settings: does it run? (nothing written)")
    parser.add_argument(
        "--write", action="store_true", help=f"the tables into {DOC.name}, the figure into docs/figures/"
    )
    parser.add_argument("--out", type=Path, help=f"raw results as JSON (default: {RESULTS.name} without --quick)")
    parser.add_argument(
        "--figure", type=Path, help=f"also draw the figure here (--write draws it into docs/figures/{FIGURE.name})"
    )
    parser.add_argument("--workdir", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    parser.add_argument("--from-json", type=Path, help="make the tables (and figure) of saved results (no runs)")
    args = parser.parse_args(argv)
    if args.quick and args.write:
        parser.error("--write puts measured figures into the docs; a --quick run is only a smoke test")
    if args.from_json:
        results = json.loads(args.from_json.read_text(encoding="utf-8"))
        table = markdown(results)
        print(table)
        save(results, table, None, args.figure, args.write)
        return 0

    base, sweep = (QUICK, QUICK_SWEEP) if args.quick else (DEFAULT, SWEEP)
    settings = {key: base[key] if getattr(args, key) is None else getattr(args, key) for key in base}
    procs = sorted(set(args.procs or [n for n in (1, 2, 4) if n <= cores]))
    reps = sweep["reps"] if args.reps is None else args.reps
    from nnlab.errors import UserError

    try:
        check_procs(procs, settings["global_batch"], cores)
        if settings["epochs"] < 2:
            raise UserError(f"--epochs {settings['epochs']}: give at least 2 (the first is left out of the median).")
        if reps < 1:
            raise UserError(f"--reps {reps}: give at least 1 timed step per figure.")
    except UserError as e:
        parser.error(str(e))

    work = args.workdir or Path(tempfile.mkdtemp(prefix="ddp_scaling_"))
    sweep_hidden, sweep_batch = args.sweep_hidden or sweep["hidden"], args.sweep_batch or sweep["batch"]
    results = measure(settings, procs, sweep_hidden, sweep_batch, reps, args.atol, work)
    results["command"] = "python -m benchmarks.ddp_scaling " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(results)
    print(table)
    save(results, table, args.out or (None if args.quick else RESULTS), args.figure, args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
