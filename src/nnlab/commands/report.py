"""`nnlab-report` (also `python -m nnlab.commands.report`): one table of the trials of a sweep.

    nnlab-train -m optimizer.lr=0.01,0.001 model.dropout=0.0,0.2     # a sweep, one folder per trial
    nnlab-report outputs/multiruns/2024-05-01_12-00-00                # best trial first
    nnlab-report <sweep dir> --metric val/acc --mode max --top 5

Each trial folder (`<sweep>/0/`, `<sweep>/1/`, ...) holds the trial's overrides
(.hydra/overrides.yaml), how it ended (status.json) and its final metrics (metrics.json). The
report sorts the trials by the metric they optimized (their config's `optimized_metric` and
`optimized_mode`, unless --metric/--mode say otherwise), failed and unfinished trials last, and

- prints the table, the swept hyperparameters (the overrides that differ between trials) first;
- writes report.md, report.csv (every metric) and report.png (the metric against each swept
  hyperparameter) into the sweep dir, and curves.png: the trials' training curves overlaid
  (`nnlab.runs.curves`), for the scalars --curves names or, by default, the config's `report.curves`;
- shows the config's `report.metrics` (or --columns) as extra columns;
- under the table, sets the best trial beside the best classical baseline fitted on its split
  (`baselines: auto` in train.yaml; `nnlab.analysis.classical`), by the same metric;
- prints the best trial's folder and the `nnlab-train ...` command that reruns it.

The parts: `nnlab.runs.sweepfolder` reads the trial folders (through the gate for untrusted files),
`nnlab.analysis.sweep_table` writes the table, `nnlab.analysis.sweep_plot` draws report.png and
`nnlab.runs.curves` curves.png; this module ranks the trials and runs the command.

TensorBoard's HParams tab shows the same trials interactively: `tensorboard --logdir <sweep dir>`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from nnlab.analysis.sweep_plot import plot
from nnlab.analysis.sweep_table import baseline_line, print_table, write_csv, write_markdown
from nnlab.checks.untrusted import printable
from nnlab.cli.console import console
from nnlab.errors import UserError, did_you_mean
from nnlab.runs.sweepfolder import Trial, find_trials, rerun_command, split_override, swept_keys

REPORTS = ("report.md", "report.csv", "report.png", "curves.png")
# Metrics where higher is better, for --metric without --mode (by the last part of the name).
HIGHER_IS_BETTER = ("acc", "accuracy", "macro_f1", "f1", "roc_auc", "auc", "r2", "precision", "recall")


# -- which trial is best, what the report shows ----------------------------------------------


def choose_metric(trials: list[Trial], metric: str | None, mode: str | None) -> tuple[str, str]:
    """--metric/--mode, else the trials' optimized_metric/optimized_mode (val/loss, min if unknown)."""
    configured = next((t.optimized for t in trials if t.optimized), ("val/loss", "min"))
    metric = metric or configured[0]
    if mode is None:
        higher = metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER
        mode = configured[1] if metric == configured[0] else ("max" if higher else "min")
    known = sorted({k for t in trials for k in t.metrics})
    if known and metric not in known:
        hint = did_you_mean(metric, known)
        raise UserError(
            f"--metric {metric}: no trial of the sweep has this metric.{hint} Choose one of: {', '.join(known)}."
        )
    return metric, mode


def ranked(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Best first; trials without a finite value of `metric` after, failed ones last."""

    def key(t: Trial) -> tuple:
        value = t.metrics.get(metric, math.nan)
        if math.isfinite(value):
            return (0, value if mode == "min" else -value)
        return (2 if t.status == "failed" else 1, 0.0)

    return sorted(trials, key=key)  # stable: ties keep the trial order


def shown_metrics(trials: list[Trial], metric: str, extra: list[str]) -> list[str]:
    """The metric, the `extra` columns (report.metrics), then the split-level test metrics
    (test/acc, test/loss; not test/f1/<class>)."""
    tests = sorted({k for t in trials for k in t.metrics if k.startswith("test/") and k.count("/") == 1})
    return list(dict.fromkeys([metric, *extra, *tests]))


def configured(trials: list[Trial]) -> tuple[list[str], list[str]]:
    """The report.metrics and report.curves of the sweep's config (its first trial that has them)."""
    return next((t.shows for t in trials if t.shows[0] or t.shows[1]), ([], []))


def label(trial: Trial, swept: list[str]) -> str:
    """A trial's name in a legend: its swept values (`lr=0.01`, a path by its last two parts),
    else its folder."""

    def short(value: str | None) -> str:
        return "/".join(Path(value).parts[-2:]) if value and "/" in value else str(value)

    return " ".join(f"{k.rsplit('.', 1)[-1]}={short(trial.value(k))}" for k in swept) or trial.name


# -- the command --------------------------------------------------------------------------------


def report(
    sweep: Path,
    metric: str | None = None,
    mode: str | None = None,
    top: int | None = None,
    columns: list[str] | None = None,
    curves: list[str] | None = None,
) -> list[Trial]:
    """Read the sweep, print its table, write the report files; return the trials, best first.
    `columns` and `curves` replace the config's report.metrics and report.curves."""
    trials = find_trials(sweep)
    metric, mode = choose_metric(trials, metric, mode)
    in_order = list(trials)  # trial 0, 1, ...: the order of the legend
    trials = ranked(trials, metric, mode)
    swept = swept_keys(trials)
    fixed = [o for o in trials[0].overrides if split_override(o)[0] not in swept]
    shows = configured(trials)
    extra = columns if columns is not None else shows[0]
    curves = curves if curves is not None else shows[1]
    known = {k for t in trials for k in t.metrics}
    extra = [c for c in extra if c in known or not known]  # (a column no trial has would stay empty)
    columns = shown_metrics(trials, metric, extra)
    title = f"{len(trials)} trials of {sweep}, by {metric} ({'lowest' if mode == 'min' else 'highest'} first)"

    # The best trial beside the best classical baseline fitted on its own split, if its run had any.
    baseline = baseline_line(trials[0], metric, mode) if trials[0].status == "completed" else None
    print_table(trials, swept, columns, fixed, title, top or len(trials))
    if baseline:
        console().print(baseline, markup=False, highlight=False, soft_wrap=True)
    write_markdown(sweep / "report.md", trials, swept, columns, fixed, title, notes=[baseline] if baseline else [])
    write_csv(sweep / "report.csv", trials, metric)
    if any(math.isfinite(t.metrics.get(metric, math.nan)) for t in trials):
        plot(sweep / "report.png", trials, swept, metric)
    (sweep / "curves.png").unlink(missing_ok=True)  # (from an earlier report with other curves)
    if curves:
        from nnlab.runs.curves import plot_curves

        runs = [(label(t, swept), t.dir) for t in in_order]
        if not plot_curves(sweep / "curves.png", runs, curves, title=f"{len(runs)} trials of {sweep.name}"):
            console().print(f"No trial logged {', '.join(curves)} to TensorBoard: no curves.png.", markup=False)
    out = console()
    out.print(f"Wrote {', '.join(str(sweep / name) for name in REPORTS if (sweep / name).exists())}")
    best = trials[0]
    if best.status == "completed" and metric in best.metrics:
        out.print(
            f"Best trial: {best.name} ({metric} = {best.metrics[metric]:.4f}), run folder {printable(best.dir)}",
            markup=False,
        )
        out.print("Rerun it with:")
        out.print(rerun_command(best), markup=False, highlight=False, soft_wrap=True)
    else:
        out.print(f"No trial finished with a value of {metric}: no best trial.")
    out.print(f"All trials in TensorBoard's HParams tab: tensorboard --logdir {sweep}", markup=False, soft_wrap=True)
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnlab-report", description="Table, plot and best command of the trials of a sweep (nnlab-train -m)."
    )
    parser.add_argument("sweep_dir", type=Path, help="the sweep's folder, e.g. outputs/multiruns/<date>_<time>")
    parser.add_argument("--metric", help="the metric to sort by (default: the trials' optimized_metric)")
    parser.add_argument("--mode", choices=("min", "max"), help="lower or higher is better (default: optimized_mode)")
    parser.add_argument("--top", type=int, help="print only the best N trials (the files list all)")
    parser.add_argument("--columns", help="extra metric columns, comma-separated (default: report.metrics)")
    parser.add_argument(
        "--curves", help="TensorBoard scalars to overlay, comma-separated, * allowed (default: report.curves)"
    )
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error(f"--top {args.top}: give a positive number of trials, e.g. --top 5")
    try:
        report(args.sweep_dir, args.metric, args.mode, args.top, comma_list(args.columns), comma_list(args.curves))
    except UserError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


def comma_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def cli() -> None:
    """The `nnlab-report` command."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
