"""`python -m benchmarks.bench`: time one model through nnlab and the alternatives, in one process.

Run from the root of a checkout (`pip install -e ".[bench]"` adds Lightning and MiniSom):

    python -m benchmarks.bench                    # every case that can run here (~3 min on 2 CPU cores)
    python -m benchmarks.bench --cases mlp_digits --epochs 10 --repeats 5 --out bench.json
    python -m benchmarks.bench --markdown docs/benchmarks_table.md   # the tables of docs/benchmarks.md
    python -m benchmarks.bench --cases mlp_digits --profile   # where nnlab's fit spends its time (cProfile)
    python -m benchmarks.bench --cases mlp_digits -- optimizer=adamw 'model.hidden_sizes=[512,256]'

For each case (`benchmarks.cases`) every implementation (`benchmarks.loops`) trains the same
model on the same rows with the same batch size, seed and number of epochs. Each is run once as a
warm-up (one epoch: imports, allocator, lazy initialisation), then `--repeats` times, the
implementations taking turns so a change in the machine's load hits them alike; a row reports
the median. Only the training loop is timed (`time.perf_counter`, or CUDA events with a
synchronize on a GPU): building the run before it and testing after it are not.

Columns: steps/s (optimizer steps per second), samples/s, time per epoch, the ratio of steps/s
to the raw PyTorch loop's (the limit: 1.00 means no framework overhead), the test accuracy of the
final weights, and the last epoch's mean training loss.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.cases import CASES, Case, compose
from benchmarks.provenance import environment

LABELS = {
    "nnlab": "nnlab defaults (TB logger, progress bar, checkpoints, health monitor)",
    "nnlab_lean": "nnlab, no checkpoints or health monitor",
    "raw": "raw PyTorch loop (the limit)",
    "raw_pytorch_update": "raw PyTorch loop, PyTorch's per-tensor update (optimizer.fused=null)",
    "dataloader": "PyTorch DataLoader loop",
    "lightning": "PyTorch Lightning",
    "sklearn": "scikit-learn MLPClassifier",
}


def loops() -> dict[str, Callable[..., Any]]:
    """Name -> loop function (imported here: `--help` needs no torch)."""
    from benchmarks.lightning_loop import lightning_loop
    from benchmarks.loops import (
        dataloader_loop,
        nnlab_lean_loop,
        nnlab_loop,
        raw_loop,
        raw_pytorch_update_loop,
        sklearn_loop,
    )

    return {
        "nnlab": nnlab_loop,
        "nnlab_lean": nnlab_lean_loop,
        "raw": raw_loop,
        "raw_pytorch_update": raw_pytorch_update_loop,
        "dataloader": dataloader_loop,
        "lightning": lightning_loop,
        "sklearn": sklearn_loop,
    }


def run_torch_case(
    case: Case, epochs: int, repeats: int, device: str, workdir: Path, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Warm up each implementation, time `repeats` turns of all of them; one row each. `overrides`
    (nnlab-train's syntax) apply after the case's own, to every implementation alike."""
    from benchmarks.loops import Unavailable

    table = loops()
    base = [*case.overrides, *overrides, f"trainer.device={device}"]
    active, notes = [], []
    for name in case.implementations:
        try:
            table[name](compose([*base, "trainer.max_epochs=1"], workdir / f"{name}_warmup"), device)
            active.append(name)
        except Unavailable as e:
            notes.append(str(e))
            print(f"  {name}: skipped. {e}")
    outcomes: dict[str, list[Any]] = {name: [] for name in active}
    for r in range(repeats):
        for name in active:
            cfg = compose([*base, f"trainer.max_epochs={epochs}"], workdir / f"{name}_{r}")
            outcomes[name].append(table[name](cfg, device))
            print(f"  {name} run {r + 1}/{repeats}: {outcomes[name][-1].seconds:.3f} s")
    rows = []
    for name in active:
        last = outcomes[name][-1]
        times = [o.seconds for o in outcomes[name]]
        median = statistics.median(times)
        rows.append(
            {
                "implementation": name,
                "label": LABELS[name],
                "epochs": last.epochs,
                "steps": last.steps,
                "time_s": median,
                "times_s": times,
                "steps_per_s": last.steps / median,
                "samples_per_s": last.samples / median,
                "epoch_s": median / max(last.epochs, 1),
                "test_acc": last.test_acc,
                "train_loss": last.train_loss,
                **last.extra,
            }
        )
    raw = next((r for r in rows if r["implementation"] == "raw"), None)
    for row in rows:
        row["ratio_to_raw"] = row["steps_per_s"] / raw["steps_per_s"] if raw else None
    return {"status": "ok", "kind": "steps", "rows": rows, "notes": notes}


def run_case(
    case: Case, epochs: int, repeats: int, device: str, workdir: Path, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """One case's result: its rows, or why it was skipped."""
    import torch

    result: dict[str, Any] = {
        "description": case.description + (f", with {' '.join(overrides)}" if overrides else ""),
        "overrides": [*case.overrides, *overrides],
        "epochs": epochs,
    }
    if case.needs_cuda and (device == "cpu" or not torch.cuda.is_available()):
        return {**result, "status": "skipped", "notes": ["needs a CUDA GPU; none here (or --device cpu)."]}
    missing = case.missing_configs()
    if missing:
        note = f"config {', '.join(missing)} not found in nnlab/configs: this nnlab version lacks it."
        return {**result, "status": "skipped", "notes": [note]}
    if case.implementations == ("som",):
        from benchmarks.bench_som import som_rows

        rows, notes = som_rows(epochs, device, repeats)
        if overrides:
            notes = [*notes, f"the overrides ({' '.join(overrides)}) do not apply to this comparison's fixed settings."]
            result["overrides"] = list(case.overrides)
        return {**result, "status": "ok", "kind": "som", "rows": rows, "notes": notes}
    return {**result, **run_torch_case(case, epochs, repeats, device, workdir / case.name, overrides)}


# ---------------------------------------------------------------------------------------------
def markdown_table(name: str, result: dict[str, Any]) -> str:
    """One case as a Markdown table (what docs/benchmarks.md shows)."""
    title = f"### `{name}`: {result['description']}, {result['epochs']} epochs\n\n"
    notes = "".join(f"\n_{note}_\n" for note in result.get("notes", []))
    if result["status"] != "ok":
        return title + f"{result['status'].capitalize()}.{notes}"
    if result["kind"] == "som":
        lines = [
            "| implementation | mode | iterations | train time | MiniSom time / nnlab time | qe | te |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        for r in result["rows"]:
            speedup = f"{r['speedup']:.1f}x" if "speedup" in r else ""
            lines.append(
                f"| {r['implementation']} | {r['mode']} | {r['iterations']} | {r['train_s'] * 1e3:.1f} ms "
                f"| {speedup} | {r['qe']:.4f} | {r['te']:.4f} |"
            )
        return title + "\n".join(lines) + "\n" + notes

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [
        "| implementation | steps/s | samples/s | time/epoch | vs raw loop | test acc | train loss |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {r['steps_per_s']:.0f} | {r['samples_per_s']:.0f} | {r['epoch_s'] * 1e3:.1f} ms "
            f"| {fmt(r['ratio_to_raw'], '.2f')}x | {fmt(r['test_acc'], '.4f')} | {fmt(r['train_loss'], '.4f')} |"
        )
    return title + "\n".join(lines) + "\n" + notes


def markdown_report(results: dict[str, Any]) -> str:
    env = results["environment"]
    v = env["versions"]
    load = ", ".join(f"{x:.2f}" for x in env["load_average"] or [])
    header = (
        f"Measured with `{results['command']}`: median of {results['repeats']} runs after a warm-up, device "
        f"{results['device']}.\n\n"
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch threads {env['torch_threads']}, "
        f"GPU: {env['gpu'] or 'none'}; load average at the end {load}.\n"
        f"Versions: Python {v['python']}, torch {v['torch']}, lightning {v['lightning']}, "
        f"scikit-learn {v['scikit-learn']}, minisom {v['minisom']}, nnlab {v['nnlab']}.\n\n"
    )
    return header + "\n".join(markdown_table(name, r) for name, r in results["cases"].items())


def profile_nnlab(case: Case, epochs: int, device: str, workdir: Path, top: int = 30) -> None:
    """cProfile of nnlab's fit on `case` (after a warm-up run): the functions inside nnlab with
    the most cumulative time, to show where the engine's overhead goes."""
    import cProfile
    import pstats

    from benchmarks.loops import nnlab_loop

    base = [*case.overrides, f"trainer.device={device}"]
    nnlab_loop(compose([*base, "trainer.max_epochs=1"], workdir / "profile_warmup"), device)
    cfg = compose([*base, f"trainer.max_epochs={epochs}"], workdir / "profile")
    profiler = cProfile.Profile()
    profiler.enable()
    outcome = nnlab_loop(cfg, device)
    profiler.disable()
    print(
        f"\ncProfile of nnlab's fit on {case.name}, {epochs} epochs ({outcome.steps} steps, {outcome.seconds:.2f} s):"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"nnlab|torch/optim|torch/nn/modules", top)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench",
        description=__doc__.split("\n\n")[0],
        epilog="Cases: " + "; ".join(f"{c.name}: {c.description}" for c in CASES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases (default: all)")
    parser.add_argument("--epochs", type=int, help="epochs of every case (default: each case's own)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per implementation, after a warm-up")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (as trainer.device)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's, from OMP_NUM_THREADS)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the tables as Markdown here (for docs/benchmarks.md)")
    parser.add_argument("--workdir", type=Path, help="keep the runs' folders here (default: a temporary folder)")
    parser.add_argument("--profile", action="store_true", help="also cProfile nnlab's fit on the first case")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="nnlab-train overrides applied to every case and implementation after the case's own "
        "(after --, e.g. -- optimizer=adamw 'model.hidden_sizes=[512,256]')",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()]
    from nnlab.errors import did_you_mean

    for n in names:
        if n not in CASES:
            parser.error(f"--cases: unknown case '{n}'.{did_you_mean(n, CASES)} Choose from: {', '.join(CASES)}.")
    args.cases = names
    if args.overrides:  # refused now if they do not compose or validate, not after the first cases ran
        from nnlab.checks.validation import validate_config

        for n in names:
            if CASES[n].implementations == ("som",) or CASES[n].missing_configs():
                continue
            try:
                validate_config(compose([*CASES[n].overrides, *args.overrides], Path(tempfile.gettempdir()) / "check"))
            except Exception as e:
                lines = [line for line in str(e).splitlines()[:3] if line.strip() and not line.startswith(" ")]
                reason = " ".join(lines) or type(e).__name__  # (Hydra's reason and hint, not its key dump)
                parser.error(f"the overrides {' '.join(args.overrides)} do not apply to case '{n}': {reason}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs={args.epochs}: give at least 1.")
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: give at least 1.")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "-m", "benchmarks.bench", *(sys.argv[1:] if argv is None else argv)])
    results: dict[str, Any] = {"command": command, "repeats": args.repeats, "device": args.device, "cases": {}}
    with tempfile.TemporaryDirectory(prefix="nnlab-benchmarks-") as tmp:
        workdir = args.workdir or Path(tmp)
        for name in args.cases:
            case = CASES[name]
            epochs = args.epochs or case.epochs
            print(f"\n== {name}: {case.description}, {epochs} epochs")
            try:
                result = run_case(case, epochs, args.repeats, args.device, workdir, args.overrides)
            except Exception as e:  # one broken case must not lose the others' results
                traceback.print_exc()
                result = {"description": case.description, "overrides": [*case.overrides, *args.overrides]}
                result["epochs"] = epochs
                result.update(status="failed", notes=[f"{type(e).__name__}: {e}".splitlines()[0]])
            results["cases"][name] = result
            print("\n" + markdown_table(name, result))
        if args.profile:
            case = CASES[args.cases[0]]
            profile_nnlab(case, args.epochs or case.epochs, args.device, workdir)
    results["environment"] = environment(("nnlab", "torch", "lightning", "scikit-learn", "minisom", "numpy"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"Wrote {args.out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_report(results))
        print(f"Wrote {args.markdown}")
    return results


def cli() -> None:
    """`python -m benchmarks.bench` (argv from the command line)."""
    main()


if __name__ == "__main__":
    cli()
