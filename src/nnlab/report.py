"""`nnlab-report` (also `python -m nnlab.report`): one table of the trials of a sweep.

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
  (`nnlab.curves`), for the scalars --curves names or, by default, the config's `report.curves`;
- shows the config's `report.metrics` (or --columns) as extra columns;
- prints the best trial's folder and the `nnlab-train ...` command that reruns it.

TensorBoard's HParams tab shows the same trials interactively: `tensorboard --logdir <sweep dir>`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text

from nnlab.console import console
from nnlab.errors import UserError, did_you_mean
from nnlab.untrusted import printable, read_yaml_file

REPORTS = ("report.md", "report.csv", "report.png", "curves.png")
SWEEP_LAYOUT = (
    "nnlab-report reads the folder of a sweep (`nnlab-train -m ...`), e.g. outputs/multiruns/<date>_<time>/, "
    "which holds Hydra's multirun.yaml and one folder per trial (0/, 1/, ...), each with its status.json, "
    "metrics.json and .hydra/overrides.yaml."
)
# Metrics where higher is better, for --metric without --mode (by the last part of the name).
HIGHER_IS_BETTER = ("acc", "accuracy", "macro_f1", "f1", "roc_auc", "auc", "r2", "precision", "recall")


@dataclass
class Trial:
    """One trial folder: what it ran (overrides, in command-line order), how it ended, its metrics."""

    name: str  # the folder, relative to the sweep dir: the trial number for Hydra's default sweep.subdir
    dir: Path
    overrides: list[str] = field(default_factory=list)
    status: str = "unknown"
    wall_s: float | None = None
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    optimized: tuple[str, str] | None = None  # (optimized_metric, optimized_mode) of its config
    shows: tuple[list[str], list[str]] = ([], [])  # its config's report.metrics and report.curves

    def value(self, key: str) -> str | None:
        """This trial's override of `key` ('0.01' for optimizer.lr=0.01), None when not overridden."""
        return dict(split_override(o) for o in self.overrides).get(key)


def split_override(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key, value


# -- reading the sweep -----------------------------------------------------------------------


def find_trials(sweep: Path) -> list[Trial]:
    """Every trial folder under `sweep` (a folder with status.json, metrics.json or .hydra/)."""
    if not sweep.exists():
        raise UserError(f"{sweep}: no such folder. {SWEEP_LAYOUT}")
    if not sweep.is_dir():
        raise UserError(f"{sweep} is a file, not a sweep folder. {SWEEP_LAYOUT}")
    marked = {p.parent for name in ("status.json", "metrics.json", ".hydra") for p in sweep.rglob(name)}
    folders = [d for d in marked if not any(parent in marked for parent in d.parents)]  # not nested in a trial
    if not folders:
        raise UserError(
            f"{sweep} holds no trials: no folder in it has a status.json, metrics.json or .hydra/. {SWEEP_LAYOUT}"
        )
    recovered = sweeper_overrides(sweep)
    order = sorted(folders, key=lambda d: (len(d.parts), int(d.name) if d.name.isdigit() else math.inf, str(d)))
    return [read_trial(d, sweep, recovered) for d in order]


def read_trial(folder: Path, sweep: Path, recovered: dict[str, list[str]]) -> Trial:
    """One trial's files. A sweep folder may come from elsewhere: its YAML files pass the gate for
    untrusted files (`nnlab.untrusted.read_yaml_file`: plain values only, nothing resolved or
    built), and every string from them is kept in its `printable` form, so the table, the files
    and the rerun command cannot carry terminal escape sequences."""
    name = folder.relative_to(sweep).as_posix() if folder != sweep else "."
    trial = Trial(name=printable(name), dir=folder)
    hydra_dir = folder / ".hydra"
    if (hydra_dir / "overrides.yaml").is_file():
        trial.overrides = overrides_in(read_yaml_file(hydra_dir / "overrides.yaml"), hydra_dir / "overrides.yaml")
    else:  # rejected before nnlab wrote .hydra/: the sweep's own record of the trial
        trial.overrides = recovered.get(name, [])
    if (hydra_dir / "config.yaml").is_file():
        cfg = read_yaml_file(hydra_dir / "config.yaml")
        if not isinstance(cfg, dict):
            raise UserError(f"{hydra_dir / 'config.yaml'} is not a run config (a mapping). {REPAIR}")
        if cfg.get("optimized_metric"):
            trial.optimized = (printable(cfg["optimized_metric"]), printable(cfg.get("optimized_mode") or "min"))
        shows = cfg.get("report") if isinstance(cfg.get("report"), dict) else {}
        trial.shows = (strings(shows.get("metrics")), strings(shows.get("curves")))
    if (folder / "metrics.json").is_file():
        trial.metrics = numbers(read_json(folder / "metrics.json"), folder / "metrics.json")
        trial.status = "completed"
    if (folder / "status.json").is_file():
        status = read_json(folder / "status.json")
        trial.status = printable(status.get("status", "unknown"), 40)
        wall_s = status.get("wall_s")
        trial.wall_s = float(wall_s) if isinstance(wall_s, (int, float)) and not isinstance(wall_s, bool) else None
        trial.error = printable(status["error"]) if status.get("error") is not None else None
        if not trial.overrides and status.get("overrides"):  # a rejected trial records its own
            trial.overrides = overrides_in(status["overrides"], folder / "status.json")
    return trial


# What to do about a damaged file in a trial folder.
REPAIR = "Delete the damaged file (or the trial's folder) and rerun that trial, or report the sweep without it."


def overrides_in(value: object, path: Path) -> list[str]:
    """A trial's overrides as read from `path`: a list of strings, else a UserError."""
    if not isinstance(value, list) or not all(isinstance(o, (str, int, float, bool)) for o in value):
        raise UserError(f"{path} is not a list of overrides (key=value strings). {REPAIR}")
    return [printable(o) for o in value]


def strings(value: object) -> list[str]:
    return [printable(v) for v in value] if isinstance(value, list) else []


def numbers(values: dict, path: Path) -> dict[str, float]:
    """metrics.json: names and numbers, else a UserError naming the file."""
    try:
        return {printable(k): float(v) for k, v in values.items() if not isinstance(v, bool)}
    except (TypeError, ValueError):
        raise UserError(f"{path} holds a metric that is not a number. {REPAIR}") from None


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not readable JSON ({printable(e, 200)}). {REPAIR}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object. {REPAIR}")
    return value


def sweeper_overrides(sweep: Path) -> dict[str, list[str]]:
    """{"<job num>": overrides} of every job of a grid sweep, rebuilt from Hydra's multirun.yaml the
    way its basic sweeper expands the command line (the cartesian product, in order). Covers the
    trials rejected before nnlab wrote their .hydra/; other sweepers (Optuna) give {}."""
    path = sweep / "multirun.yaml"
    if not path.is_file():
        return {}
    try:
        hydra_cfg = read_yaml_file(path)["hydra"]  # plain values, as written: ${hydra.job.num} stays text
        sweeper = hydra_cfg["sweeper"]
        if not sweeper["_target_"].endswith("BasicSweeper") or hydra_cfg["sweep"]["subdir"] != "${hydra.job.num}":
            return {}
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
        parsed = OverridesParser.create().parse_overrides([*params, *hydra_cfg["overrides"]["task"]])
        jobs = BasicSweeper.split_arguments(parsed, None)[0]
    except Exception:  # an unusual or damaged multirun.yaml only costs the overrides of rejected trials
        return {}
    return {str(num): [printable(o) for o in overrides] for num, overrides in enumerate(jobs)}


def swept_keys(trials: list[Trial]) -> list[str]:
    """The override keys whose value differs between trials, in command-line order."""
    keys = list(dict.fromkeys(split_override(o)[0] for t in trials for o in t.overrides))
    return [k for k in keys if len({t.value(k) for t in trials}) > 1]


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


def rerun_command(trial: Trial) -> str:
    return shlex.join(["nnlab-train", *trial.overrides])


# -- output -----------------------------------------------------------------------------------


def cell(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def outcome(trial: Trial, width: int = 80) -> str:
    """'completed', or 'failed: <error, truncated>'."""
    if not trial.error:
        return trial.status
    error = " ".join(trial.error.split())
    return f"{trial.status}: {error if len(error) <= width else error[: width - 3] + '...'}"


def rows(trials: list[Trial], swept: list[str], columns: list[str]) -> list[list[str]]:
    """One row of text cells per trial: rank, trial, swept values, metrics, wall time, status."""
    return [
        [
            str(rank),
            t.name,
            *(t.value(k) or "" for k in swept),
            *(cell(t.metrics.get(m)) for m in columns),
            "" if t.wall_s is None else f"{t.wall_s:.1f}",
            outcome(t),
        ]
        for rank, t in enumerate(trials, 1)
    ]


def print_table(trials: list[Trial], swept: list[str], columns: list[str], fixed: list[str], title: str, top: int):
    table = Table(title=title, caption=f"same in every trial: {' '.join(fixed)}" if fixed else None)
    for name in ["#", "trial", *swept]:
        table.add_column(name, style="bold cyan" if name in swept else None)
    for name in columns:
        table.add_column(name, justify="right", style="bold" if name == columns[0] else None)
    table.add_column("wall s", justify="right")
    table.add_column("status")
    for t, row in zip(trials[:top], rows(trials[:top], swept, columns)):
        best = row[0] == "1" and t.status == "completed"
        # Text cells: a value from a trial's files is shown as written, never read as rich markup.
        table.add_row(*map(Text, row), style="green" if best else "red" if t.status == "failed" else None)
    console().print(table)
    if len(trials) > top:
        console().print(f"... and {len(trials) - top} more trials in report.md")


def write_markdown(
    path: Path, trials: list[Trial], swept: list[str], columns: list[str], fixed: list[str], title: str
) -> None:
    header = ["#", "trial", *swept, *columns, "wall s", "status"]
    lines = [f"# {title}", ""]
    if fixed:
        lines += [f"Same in every trial: `{' '.join(fixed)}`", ""]
    if trials and trials[0].status == "completed":
        lines += ["Best trial, to rerun:", "", f"    {rerun_command(trials[0])}", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows(trials, swept, columns):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    path.write_text("\n".join(lines) + "\n")


def write_csv(path: Path, trials: list[Trial], metric: str) -> None:
    """Every override and every metric, full precision; one row per trial, best first."""
    keys = swept_keys(trials)
    keys += [k for k in dict.fromkeys(split_override(o)[0] for t in trials for o in t.overrides) if k not in keys]
    metrics = [metric, *sorted({m for t in trials for m in t.metrics} - {metric})]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "trial", "status", "wall_s", *keys, *metrics, "error", "run_dir"])
        for rank, t in enumerate(trials, 1):
            values = [repr(t.metrics[m]) if m in t.metrics else "" for m in metrics]
            wall_s = "" if t.wall_s is None else t.wall_s
            overrides = [t.value(k) or "" for k in keys]
            writer.writerow([rank, t.name, t.status, wall_s, *overrides, *values, t.error or "", t.dir])


def plot(path: Path, trials: list[Trial], swept: list[str], metric: str) -> None:
    """The metric against each swept hyperparameter, one panel each (the trial number when none):
    numbers on a log axis when they span two decades or more, other values one column per choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in trials if math.isfinite(t.metrics.get(metric, math.nan))]  # best first
    keys = swept or ["trial"]
    cols = min(3, len(keys))
    rows_ = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        labels = [t.name if key == "trial" else (t.value(key) or "(default)") for t in done]
        y = [t.metrics[metric] for t in done]
        numbers = [as_number(v) for v in labels]
        if key != "trial" and all(n is not None for n in numbers):
            ax.scatter(numbers, y, alpha=0.7)
            positive = [n for n in numbers if n > 0]
            if len(positive) == len(numbers) and max(positive) / min(positive) >= 100:
                ax.set_xscale("log")
            best_x = numbers[0]
        else:
            choices = sorted(set(labels), key=lambda v: (as_number(v) is None, as_number(v) or 0, v))
            xs = strip(labels, choices)
            ax.scatter(xs, y, alpha=0.7)
            ax.set_xticks(range(len(choices)), choices, rotation=30 if len(choices) > 4 else 0)
            ax.set_xlim(-0.5, len(choices) - 0.5)
            best_x = xs[0]
        ax.scatter([best_x], [y[0]], marker="*", s=180, color="tab:red", label="best", zorder=3)
        ax.set(xlabel=key, ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    axes.flat[0].legend()
    left_out = len(trials) - len(done)
    fig.suptitle(
        f"{metric} of {len(done)} trials" + (f" ({left_out} failed or unfinished, not shown)" if left_out else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def strip(labels: list[str], choices: list[str]) -> list[float]:
    """x of each point of a strip plot: its choice's column, the points of a column spread across
    the middle 40% of its width so that equal values stay visible."""
    counts = {c: labels.count(c) for c in choices}
    seen = dict.fromkeys(choices, 0)
    xs = []
    for label in labels:
        n, j = counts[label], seen[label]
        seen[label] += 1
        xs.append(choices.index(label) + (0.4 * (j / (n - 1) - 0.5) if n > 1 else 0.0))
    return xs


def as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


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

    print_table(trials, swept, columns, fixed, title, top or len(trials))
    write_markdown(sweep / "report.md", trials, swept, columns, fixed, title)
    write_csv(sweep / "report.csv", trials, metric)
    if any(math.isfinite(t.metrics.get(metric, math.nan)) for t in trials):
        plot(sweep / "report.png", trials, swept, metric)
    (sweep / "curves.png").unlink(missing_ok=True)  # (from an earlier report with other curves)
    if curves:
        from nnlab.curves import plot_curves

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
