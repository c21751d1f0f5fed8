"""A sweep's folder read back: one `Trial` per trial folder, for `nnlab-report` and the scripts
that build on a sweep (scripts/concept_pipelines.py).

    <sweep>/multirun.yaml            Hydra's record of the sweep (its command line, its sweeper)
    <sweep>/<n>/.hydra/overrides.yaml    what trial n ran (key=value, in command-line order)
    <sweep>/<n>/.hydra/config.yaml       its config: optimized_metric, report.metrics ...
    <sweep>/<n>/status.json              how it ended (`nnlab.runs.runinfo.write_status`)
    <sweep>/<n>/metrics.json             its final metrics

A sweep folder may come from someone else, so every file is read through the gate for untrusted
files (`nnlab.checks.untrusted`), and a damaged one ends in one paragraph that names it.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from nnlab.checks.untrusted import printable, read_yaml_file
from nnlab.errors import UserError

SWEEP_LAYOUT = (
    "nnlab-report reads the folder of a sweep (`nnlab-train -m ...`), e.g. outputs/multiruns/<date>_<time>/, "
    "which holds Hydra's multirun.yaml and one folder per trial (0/, 1/, ...), each with its status.json, "
    "metrics.json and .hydra/overrides.yaml."
)
# What to do about a damaged file in a trial folder.
REPAIR = "Delete the damaged file (or the trial's folder) and rerun that trial, or report the sweep without it."


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


def swept_keys(trials: list[Trial]) -> list[str]:
    """The override keys whose value differs between trials, in command-line order."""
    keys = list(dict.fromkeys(split_override(o)[0] for t in trials for o in t.overrides))
    return [k for k in keys if len({t.value(k) for t in trials}) > 1]


def rerun_command(trial: Trial) -> str:
    return shlex.join(["nnlab-train", *trial.overrides])


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
    untrusted files (`nnlab.checks.untrusted.read_yaml_file`: plain values only, nothing resolved or
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
