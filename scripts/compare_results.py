"""Prove that a refactor left nnlab's results unchanged: the same commands on two revisions, on this
machine, in one invocation, and their metrics.json files compared bitwise.

    python scripts/compare_results.py --before HEAD                  # HEAD against the checkout's files
    python scripts/compare_results.py --before main --after my-branch --out results.json --markdown results.md
    python scripts/compare_results.py --before HEAD --after HEAD     # both sides alike: proves determinism
    python scripts/compare_results.py --list                         # the commands and what each covers
    python scripts/compare_results.py --before HEAD --only default csv_impute_minmax
    python scripts/compare_results.py --record /tmp/rec --before HEAD   # keep one side's metrics ...
    python scripts/compare_results.py --before /tmp/rec               # ... and compare with them later

A side is a git revision, `worktree` (this checkout's src/ as it is at the start, uncommitted edits
included, copied so that edits saved during the comparison do not reach it) or a folder written by
--record. A revision is checked out with `git worktree add --detach` into a temporary
folder (removed at the end); its commands run as `python -m nnlab.commands.train ...` (`nnlab.train` where the commands
were still at the top level) subprocesses with
PYTHONPATH=<that checkout>/src in front, so nnlab comes from there while torch, Hydra and the rest
come from this virtual environment. Before any command, `import nnlab` is checked to resolve to that
checkout, and every run's run_info.json must name its train.py and commit: a side that silently ran
another nnlab would prove nothing.

Every command runs in a fresh hydra.run.dir under a temporary NNLAB_ROOT, without the progress bar,
with OMP_NUM_THREADS=1 (one intra-op thread: the fastest for these small models on 2 cores, and the
same on both sides, so the floating-point reductions are the same), and its run is short (a few
epochs). Runs on CPU with a fixed seed are bitwise repeatable (`--before HEAD --after HEAD` is the
check), so *any* difference in metrics.json is a change of behaviour.

Two metrics.json files are equal when they hold the same keys and every value is the same JSON value
bit for bit: floats by `float.hex` (so 0.1 and its neighbour one ulp away differ, and NaN equals NaN),
other values by type and value. An entry of COMMANDS with an `expected_change` note is one the change
under test is meant to alter: its difference is reported with its figures and does not fail the
comparison. The exit status is 0 when every other entry is equal, 1 otherwise (a difference, a failed
run, a run of the wrong nnlab), 2 for a mistake on the command line.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WORKTREE = "worktree"
RECORD_FILE = "record.json"  # what marks a folder written by --record
RUN_TIMEOUT_S = 600  # one command; the longest here takes ~20 s on 2 cores
QUIET = ("callbacks.progress=null",)  # the live bar is terminal output only: metrics are the same


@dataclass(frozen=True)
class Command:
    """One command run on both sides: `python -m <module> <args>` in its own run folder.

    name: short, unique, used on the command line (--only) and as the run folder's name.
    covers: what part of nnlab this run exercises (for the table and --list).
    expected_change: None, or why the change under test is meant to alter this run's metrics.
    legacy_args: the same command as spelled before the row edits became the `data_edit` group
        (data.imbalance=..., data.cv_folds=...), for a side whose configs have no data_edit/ folder.
    """

    name: str
    covers: str
    args: tuple[str, ...]
    command: str = "train"  # the module under nnlab/commands/ (nnlab/ before the commands moved there)
    expected_change: str | None = None
    legacy_args: tuple[str, ...] | None = None

    def module_for(self, src: Path) -> str:
        """The command's module as the nnlab in `src` lays it out."""
        if (src / "nnlab" / "commands").is_dir():
            return f"nnlab.commands.{self.command}"
        return f"nnlab.{self.command}"

    def args_for(self, src: Path) -> tuple[str, ...]:
        """The arguments as the nnlab in `src` spells them."""
        if self.legacy_args is not None and not (src / "nnlab" / "configs" / "data_edit").is_dir():
            return self.legacy_args
        return self.args


CSV_FILE = "table.csv"  # written by `write_csv` into the root both sides share; {csv} in args is its path

# The commands, chosen from configs/experiment/ and configs/data/: every task, the k-fold loop, the
# DataModule's row edits in combination, the CSV loader and one command besides nnlab-train. Epochs
# are cut to a few (the results only need to be repeatable, not good); each run takes 5-20 s.
COMMANDS: tuple[Command, ...] = (
    Command("default", "nnlab-train as installed: digits MLP, supervised classification", ("trainer.max_epochs=3",)),
    Command(
        "digits_cnn",
        "supervised classification of images with a CNN (conv blocks, batch norm, pooling)",
        ("experiment=digits_cnn", "trainer.max_epochs=2"),
    ),
    Command(
        "regression",
        "supervised regression (diabetes MLP): standardized target, MAE and R^2, AdamW + plateau scheduler",
        ("experiment=diabetes_mlp", "trainer.max_epochs=5"),
    ),
    Command(
        "perceptron",
        "model=perceptron: the perceptron task's update rule (no optimizer), on blobs",
        ("experiment=perceptron_vs_mlp", "trainer.max_epochs=5"),
    ),
    Command(
        "autoencoder",
        "reconstruction with a dense autoencoder (kNN probe of the code, PCA baseline)",
        ("experiment=digits_autoencoder", "trainer.max_epochs=3"),
    ),
    Command(
        "vae",
        "reconstruction with a VAE (ELBO: reconstruction + KL)",
        ("experiment=digits_vae", "trainer.max_epochs=3"),
    ),
    Command(
        "anomaly",
        "reconstruction as anomaly detection: the anomaly row edit, ROC-AUC and F1 at a val threshold",
        ("experiment=breast_cancer_anomaly", "trainer.max_epochs=5"),
    ),
    Command("gan", "GAN: the D and G updates, sample metrics (FD)", ("experiment=digits_gan", "trainer.max_epochs=2")),
    Command(
        "som",
        "SOM: the self-organizing map's update, quantization error",
        ("experiment=digits_som", "trainer.max_epochs=5"),
    ),
    Command(
        "cross_validation",
        "data_edit=kfold: the k-fold loop (three runs, metrics averaged over folds)",
        ("experiment=iris_mlp", "data_edit=kfold", "data_edit.kfold.folds=3", "trainer.max_epochs=5"),
        legacy_args=("experiment=iris_mlp", "data.cv_folds=3", "trainer.max_epochs=5"),
    ),
    Command(
        "imbalance_missing",
        "row edits combined, classification: missing + imbalance + impute (with indicators) + balanced sampling",
        (
            "data=wine",
            "data_edit=[missing,imbalance,impute,balanced_sampling]",
            "data_edit.imbalance.ratio=0.3",
            "data_edit.missing.fraction=0.2",
            "data_edit.impute.indicator=true",
            "trainer.max_epochs=5",
        ),
        legacy_args=(
            "data=wine",
            "data.imbalance=0.3",
            "data.missing=0.2",
            "data.impute=mean_indicator",
            "data.sampler=weighted",
            "trainer.max_epochs=5",
        ),
    ),
    Command(
        "outliers_missing",
        "row edits combined, regression: missing (mnar) + impute (drop) + outliers",
        (
            "experiment=missing_data",
            "data_edit=[missing,impute,outliers]",
            "data_edit.impute.strategy=drop",
            "data_edit.outliers.fraction=0.1",
            "trainer.max_epochs=5",
        ),
        legacy_args=("experiment=missing_data", "data.impute=drop", "data.outliers=0.1", "trainer.max_epochs=5"),
    ),
    Command(
        "few_labels",
        "row edits combined: classes + imbalance + few_labels (digits 5-9)",
        (
            "experiment=digits59_few_labels",
            "data_edit=[classes,imbalance,few_labels]",
            "data_edit.imbalance.ratio=0.5",
            "trainer.max_epochs=5",
        ),
        legacy_args=("experiment=digits59_few_labels", "data.imbalance=0.5", "trainer.max_epochs=5"),
    ),
    Command(
        "ensemble",
        "nnlab-ensemble: two members on bootstrap resamples, mean and vote",
        ("data=iris", "ensemble.members=2", "ensemble.vary=bootstrap", "ensemble.combine=[mean,vote]")
        + ("trainer.max_epochs=3",),
        command="ensemble",
    ),
    Command(
        "csv_impute_minmax",
        "data=csv: mean imputation and min-max scaling of a table with missing cells",
        ("data=csv", "data.dataset.path={csv}", "data.dataset.target=label", "data_edit=impute")
        + ("data.normalize=minmax", "trainer.max_epochs=5"),
        expected_change=(
            "issue 23 fits the imputation means and min-max ranges on the training split (the CSV loader "
            "took them over all rows, test rows included), and a missing text cell becomes an all-zero "
            "one-hot (it took the column's most frequent value), so the inputs change"
        ),
        legacy_args=(
            "data=csv",
            "data.dataset.path={csv}",
            "data.dataset.target=label",
            "data.dataset.impute=mean",
            "data.dataset.scale=minmax",
            "data.standardize=false",  # the min-max scaling is the input scaling (the z-score would undo it)
            "trainer.max_epochs=5",
        ),
    ),
)


def write_csv(path: Path) -> Path:
    """A small seeded table for data=csv: 240 rows, three numeric features, one text feature, a
    3-class label; about 10% of the feature cells are empty (missing). Written with `random`
    alone, so the bytes are the same on any machine; both sides read this one file."""
    rng = random.Random(23)
    lines = ["width,height,weight,colour,label"]
    for _ in range(240):
        label = rng.randrange(3)
        width = rng.gauss(2.0 + label, 0.7)
        height = rng.gauss(10.0 - 2.0 * label, 1.5)
        weight = rng.uniform(0.0, 100.0) + 20.0 * label  # a wide range: min-max scaling matters
        colour = rng.choice(["red", "green", "blue"] if label else ["red", "red", "green"])
        cells = [f"{width:.3f}", f"{height:.3f}", f"{weight:.2f}", colour]
        cells = ["" if rng.random() < 0.1 else c for c in cells]
        lines.append(",".join([*cells, str(label)]))
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------------
# The comparison


@dataclass(frozen=True)
class Difference:
    """One key whose value differs; `before`/`after` is None where the key is missing."""

    key: str
    before: Any
    after: Any

    def describe(self) -> str:
        return f"{self.key}: {_show(self.before)} -> {_show(self.after)}"


MISSING = "(missing)"


def _exact(value: Any) -> Any:
    """A form of a JSON value that is equal exactly when the values are bit for bit: floats by
    their hex form (0.0 and -0.0 differ, NaN equals NaN), 1 and 1.0 differ by type."""
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, list):
        return ("list", tuple(_exact(v) for v in value))
    if isinstance(value, dict):
        return ("dict", tuple((k, _exact(v)) for k, v in sorted(value.items())))
    return (type(value).__name__, value)


def is_timing(key: str) -> bool:
    """A metric that is a duration in seconds (`baselines/<name>/fit_s`, `.../predict_s`, and
    their `_std` over folds): it differs between any two runs, so it is not a result to compare."""
    return key.rsplit("/", 1)[-1].removesuffix("_std").endswith("_s")


def compare_metrics(before: dict[str, Any], after: dict[str, Any]) -> list[Difference]:
    """The keys of two metrics.json maps whose values are not bitwise equal, in sorted order
    (a key on one side only counts, its other side shown as None), timings left out. [] means equal."""
    diffs = []
    for key in sorted(k for k in before.keys() | after.keys() if not is_timing(k)):
        if key not in before or key not in after:
            diffs.append(Difference(key, before.get(key), after.get(key)))
        elif _exact(before[key]) != _exact(after[key]):
            diffs.append(Difference(key, before[key], after[key]))
    return diffs


def _show(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)  # the shortest repr that round-trips: every bit that differs shows
    return json.dumps(value)


# ---------------------------------------------------------------------------------------------------
# The sides


@dataclass
class Side:
    """Where one side's commands run: a checkout's src (`src`), or a folder of recorded metrics."""

    label: str  # "before" or "after"
    spec: str  # as given: a revision, "worktree" or a --record folder
    commit: str | None = None  # the revision's commit (for worktree: HEAD, with the edits on top)
    src: Path | None = None  # <checkout>/src; None for a record
    record: Path | None = None  # a --record folder
    checkout: Path | None = None  # a `git worktree add` folder to remove at the end

    def describe(self) -> str:
        if self.record is not None:
            return f"record {self.record} (of {(self.commit or '?')[:12]})"
        if self.spec == WORKTREE:
            return f"worktree {REPO} (HEAD {self.commit[:12]} + uncommitted edits, as at the start)"
        return f"{self.spec} ({self.commit[:12]})"


class CompareError(Exception):
    """A failure that makes the comparison meaningless; its message says what and how to fix it."""


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompareError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def open_side(label: str, spec: str, tmp: Path) -> Side:
    """A revision checked out into `tmp` (detached worktree), this checkout, or a record folder."""
    if Path(spec).is_dir() and (Path(spec) / RECORD_FILE).is_file():
        info = json.loads((Path(spec) / RECORD_FILE).read_text())
        return Side(label, spec, commit=info.get("commit"), record=Path(spec))
    if spec == WORKTREE:
        # A snapshot of src/ as it is now: the runs take minutes, and an edit saved meanwhile (by
        # anyone working in this checkout) must not reach half of them.
        src = tmp / f"src-{label}" / "src"
        shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        return Side(label, spec, commit=git("rev-parse", "HEAD"), src=src)
    try:
        commit = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    except CompareError:
        raise CompareError(
            f"--{label} {spec}: not a revision of {REPO}, nor '{WORKTREE}', nor a folder written by --record. "
            "Give a commit, branch or tag (git log --oneline shows them)."
        ) from None
    checkout = tmp / f"src-{label}"
    git("worktree", "add", "--detach", str(checkout), commit)
    return Side(label, spec, commit=commit, src=checkout / "src", checkout=checkout)


def close_side(side: Side) -> None:
    if side.checkout is not None and side.checkout.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(side.checkout)], check=False)


def side_env(side: Side, root: Path) -> dict[str, str]:
    """The environment of a side's commands: its nnlab first on the path, a private NNLAB_ROOT."""
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)  # the runs behave as a user's do
    env["PYTHONPATH"] = str(side.src)  # replaces any other: nothing may come before it
    env["NNLAB_ROOT"] = str(root)
    env["OMP_NUM_THREADS"] = "1"
    return env


def check_nnlab(side: Side, root: Path) -> None:
    """Fail loudly unless `import nnlab` in the side's environment is the side's own checkout."""
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-c", "import nnlab; print(nnlab.__file__)"],
        cwd=root,
        env=side_env(side, root),
        capture_output=True,
        text=True,
    )
    found = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    want = (side.src / "nnlab" / "__init__.py").resolve()
    if found != want:
        raise CompareError(
            f"--{side.label} {side.spec}: `import nnlab` with PYTHONPATH={side.src} gives "
            f"{found or proc.stderr.strip()[-500:]}, not {want}: the comparison would run the wrong code. "
            "Check that the revision has src/nnlab and that nothing else puts nnlab first on sys.path."
        )


# ---------------------------------------------------------------------------------------------------
# Running


@dataclass
class Outcome:
    """One command on one side."""

    metrics: dict[str, Any] | None = None
    seconds: float | None = None  # None: read from a record, not run
    error: str | None = None  # why there are no metrics (or why they cannot be trusted)


def run_command(command: Command, side: Side, root: Path, csv: Path) -> Outcome:
    """`python -m <module> <args>` for one side in a fresh run folder; its metrics.json, checked to
    come from the side's nnlab (run_info.json: train.py's path and the commit)."""
    if side.record is not None:
        path = side.record / f"{command.name}.json"
        if not path.is_file():
            return Outcome(error=f"not in the record {side.record} (recorded with other --only names?)")
        return Outcome(metrics=json.loads(path.read_text()))
    run_dir = root / "runs" / command.name
    args = [a.replace("{csv}", str(csv)) for a in command.args_for(side.src)]
    argv = [sys.executable, "-m", command.module_for(side.src), *args, *QUIET, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    try:
        proc = subprocess.run(
            argv, cwd=root, env=side_env(side, root), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return Outcome(seconds=time.perf_counter() - started, error=f"timed out after {RUN_TIMEOUT_S} s")
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        return Outcome(seconds=seconds, error=f"exit {proc.returncode}: {_tail(proc.stderr or proc.stdout)}")
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return Outcome(seconds=seconds, error=f"no {metrics_file}")
    info_file = run_dir / "run_info.json"
    if not info_file.is_file():
        return Outcome(seconds=seconds, error=f"no {info_file}: which nnlab ran cannot be checked")
    wrong = _wrong_code(json.loads(info_file.read_text()), side)
    if wrong:
        return Outcome(seconds=seconds, error=wrong)
    return Outcome(metrics=json.loads(metrics_file.read_text()), seconds=seconds)


def _wrong_code(info: dict[str, Any], side: Side) -> str | None:
    """Why run_info.json says the run did not use the side's nnlab, or None."""
    entry = Path(info["command"][0]).resolve()
    if not entry.is_relative_to(side.src.resolve()):
        return f"ran {entry}, not a file of {side.src}"
    if side.spec != WORKTREE and info.get("git_commit") != side.commit:  # a snapshot is in no repository
        return f"run_info.json names commit {info.get('git_commit')}, not {side.commit}"
    return None


def _seconds(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f}"


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def run_all(commands: list[Command], sides: list[Side], tmp: Path, jobs: int) -> dict[tuple[str, str], Outcome]:
    """Every command on every side, `jobs` at a time; the outcomes by (command name, side label)."""
    csv = write_csv(tmp / CSV_FILE)
    roots = {side.label: tmp / side.label for side in sides}
    for side in sides:
        if side.src is not None:
            check_nnlab(side, roots[side.label])
    outcomes: dict[tuple[str, str], Outcome] = {}
    # Each command's sides run side by side: a pair finishes together, and any drift in the
    # machine's speed meets both (timings are reported, never compared).
    tasks = [(c, s) for c in commands for s in sides]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_command, c, s, roots[s.label], csv): (c, s) for c, s in tasks}
        for future in futures:  # in submission order, so the log reads command by command
            command, side = futures[future]
            outcome = outcomes[command.name, side.label] = future.result()
            state = f"{_seconds(outcome.seconds):>5} s" if outcome.error is None else f"FAILED: {outcome.error}"
            print(f"  {command.name:<20} {side.label:<6} {state}", file=sys.stderr, flush=True)
    return outcomes


# ---------------------------------------------------------------------------------------------------
# The verdict


@dataclass
class Row:
    command: Command
    status: str  # equal | differs | changed (expected) | failed
    differences: list[Difference] = field(default_factory=list)
    before_s: float | None = None
    after_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("equal", "changed (expected)")


def verdict(command: Command, before: Outcome, after: Outcome) -> Row:
    row = Row(command, "equal", before_s=before.seconds, after_s=after.seconds)
    if before.error or after.error:
        row.status = "failed"
        row.error = "; ".join(f"{label}: {o.error}" for label, o in (("before", before), ("after", after)) if o.error)
        return row
    row.differences = compare_metrics(before.metrics, after.metrics)
    if row.differences:
        row.status = "changed (expected)" if command.expected_change else "differs"
    return row


def show_differences(row: Row, limit: int | None) -> str:
    if row.error:
        return row.error
    lines = [d.describe() for d in row.differences]
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more"]
    if row.command.expected_change:
        lines.append(f"expected to change: {row.command.expected_change}")
    return "\n".join(lines)


def print_table(rows: list[Row], before: Side, after: Side) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"metrics.json, before: {before.describe()}; after: {after.describe()}")
    for column in ("command", "covers", "before s", "after s", "result", "differences"):
        table.add_column(column, overflow="fold")
    styles = {"equal": "green", "changed (expected)": "yellow", "differs": "bold red", "failed": "bold red"}
    for row in rows:
        result = f"[{styles[row.status]}]{row.status}[/]"
        n = len(row.differences)
        if row.status == "changed (expected)":
            result += f" ({n} keys)"
        table.add_row(
            row.command.name,
            escape(row.command.covers),
            _seconds(row.before_s),
            _seconds(row.after_s),
            result,
            escape(show_differences(row, limit=8)),  # values may hold [ ]: text, not rich markup
        )
    Console(width=200).print(table)


def markdown(rows: list[Row], before: Side, after: Side, wall_s: float) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = [
        f"before: {before.describe()}  ",
        f"after: {after.describe()}  ",
        f"wall time: {wall_s:.0f} s",
        "",
        "| command | covers | before s | after s | result | differences |",
        "|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.command.name} | {cell(row.command.covers)} | {_seconds(row.before_s)} | {_seconds(row.after_s)} | "
            f"{row.status} | {cell(show_differences(row, limit=None))} |"
        )
    return "\n".join(lines) + "\n"


def to_json(rows: list[Row], before: Side, after: Side, wall_s: float, outcomes: dict) -> dict[str, Any]:
    return {
        "before": {"spec": before.spec, "commit": before.commit},
        "after": {"spec": after.spec, "commit": after.commit},
        "wall_s": wall_s,
        "ok": all(r.ok for r in rows),
        "commands": [
            {
                "name": r.command.name,
                "command": r.command.command,
                "args": list(r.command.args),
                "covers": r.command.covers,
                "expected_change": r.command.expected_change,
                "status": r.status,
                "error": r.error,
                "before_s": r.before_s,
                "after_s": r.after_s,
                "differences": [{"key": d.key, "before": d.before, "after": d.after} for d in r.differences],
                "before_metrics": outcomes[r.command.name, "before"].metrics,
                "after_metrics": outcomes[r.command.name, "after"].metrics,
            }
            for r in rows
        ],
    }


# ---------------------------------------------------------------------------------------------------
# The command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    names = [c.name for c in COMMANDS]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", help="a revision (commit, branch, tag), 'worktree', or a --record folder")
    parser.add_argument("--after", help=f"as --before; default '{WORKTREE}': this checkout's files")
    parser.add_argument("--out", type=Path, help="write every figure as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the table as markdown here")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=names, help=f"run these only: {', '.join(names)}")
    parser.add_argument("--list", action="store_true", help="print the commands and what each covers, then stop")
    parser.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="run one side only (--before, else --after) and keep its metrics in DIR, for a later --before DIR",
    )
    parser.add_argument(
        "--jobs", type=int, default=2, help="runs at a time, one thread each (default 2: both sides of a command)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with every run folder")
    args = parser.parse_args(argv)
    if args.list:
        return args
    if args.record is not None:
        if args.before and args.after:
            parser.error("--record keeps one side: give --before or --after, not both")
    elif not args.before:
        parser.error("--before is required (e.g. --before HEAD); or --list, or --record DIR")
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    return args


def list_commands() -> None:
    for c in COMMANDS:
        command = f"nnlab-{c.command}"
        print(f"{c.name}: {c.covers}")
        print(f"    {command} {' '.join(c.args)}")
        if c.expected_change:
            print(f"    expected to change: {c.expected_change}")


def record(args: argparse.Namespace, commands: list[Command], tmp: Path) -> int:
    label = "before" if args.before else "after"
    side = open_side(label, args.before or args.after or WORKTREE, tmp)
    if side.record is not None:
        raise CompareError(f"--{label} {side.spec} is a record already; give a revision or '{WORKTREE}'.")
    try:
        started = time.perf_counter()
        outcomes = run_all(commands, [side], tmp, args.jobs)
    finally:
        close_side(side)
    args.record.mkdir(parents=True, exist_ok=True)
    recorded, failed = [], []
    for c in commands:
        outcome = outcomes[c.name, label]
        if outcome.error:
            failed.append(c.name)
            print(f"FAILED {c.name}: {outcome.error}", file=sys.stderr)
        else:
            (args.record / f"{c.name}.json").write_text(json.dumps(outcome.metrics, indent=2) + "\n")
            recorded.append(c.name)
    info = {"spec": side.spec, "commit": side.commit, "commands": recorded}
    (args.record / RECORD_FILE).write_text(json.dumps(info, indent=2) + "\n")
    wall_s = time.perf_counter() - started
    print(f"recorded {side.describe()} in {args.record}: {len(recorded)} commands ({wall_s:.0f} s)")
    return 1 if failed else 0


def compare(args: argparse.Namespace, commands: list[Command], tmp: Path) -> int:
    started = time.perf_counter()
    sides: list[Side] = []
    try:
        sides.append(open_side("before", args.before, tmp))
        sides.append(open_side("after", args.after or WORKTREE, tmp))
        before, after = sides
        print(f"before: {before.describe()}\nafter:  {after.describe()}", file=sys.stderr)
        outcomes = run_all(commands, sides, tmp, args.jobs)
    finally:
        for side in sides:
            close_side(side)
    wall_s = time.perf_counter() - started
    rows = [verdict(c, outcomes[c.name, "before"], outcomes[c.name, "after"]) for c in commands]
    print_table(rows, before, after)
    bad = [r.command.name for r in rows if not r.ok]
    expected = [r.command.name for r in rows if r.status == "changed (expected)"]
    print(
        f"{len(rows) - len(bad)} of {len(rows)} as they should be"
        + (f" ({', '.join(expected)} changed, as expected)" if expected else "")
        + (f"; NOT: {', '.join(bad)}" if bad else "")
        + f". Wall time {wall_s:.0f} s."
    )
    if args.out:
        args.out.write_text(json.dumps(to_json(rows, before, after, wall_s, outcomes), indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(rows, before, after, wall_s))
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_commands()
        return 0
    commands = [c for c in COMMANDS if args.only is None or c.name in args.only]
    tmp = Path(tempfile.mkdtemp(prefix="nnlab-compare-"))
    try:
        return record(args, commands, tmp) if args.record is not None else compare(args, commands, tmp)
    except CompareError as e:
        print(f"compare_results: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"run folders kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
