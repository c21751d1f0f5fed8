"""The concept lab (docs/concepts.md): each comparison is an experiment config whose
`hydra.sweeper.params` lists the values of the one variable under study.

Every experiment already runs for two batches in test_smoke.py (its first choice); here every
trial of every comparison is composed and checked, one comparison runs as the real multirun
plus `nnlab-report`, and (with -m slow) every trial of every comparison runs for two batches.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from helpers import CONFIG_DIR, TINY, cli_env, compose_config, one_in, options, run_cli
from nnlab.checks.validation import validate_config
from nnlab.runs.build import preflight


def grid(name: str) -> list[list[str]]:
    """The overrides of each trial of `nnlab-train -m experiment=<name>`, expanded the way Hydra's
    basic sweeper expands its params (the cartesian product, in order); [] for a single run."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    raw = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml"), resolve=False)
    params = raw.get("hydra", {}).get("sweeper", {}).get("params")  # as written: ${...} left to the trial
    if not params:
        return []
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [list(trial) for trial in BasicSweeper.split_arguments(parsed, None)[0]]


COMPARISONS = [name for name in options("experiment") if grid(name)]


def test_the_lab_has_comparisons() -> None:
    assert len(COMPARISONS) >= 10, COMPARISONS


@pytest.mark.parametrize("name", one_in(2, COMPARISONS))
def test_every_trial_composes_and_its_options_are_valid(name: str, tmp_path: Path) -> None:
    trials = grid(name)
    assert len(trials) >= 2
    assert len({tuple(t) for t in trials}) == len(trials)  # no trial repeated
    for trial in trials:
        cfg = compose_config([f"experiment={name}", *trial], tmp_path)
        validate_config(cfg)
        preflight(cfg)  # the data module's and the model's option checks
        # A swept value (not a group choice) is the value the trial runs with; an interpolation
        # (${pretrained_ckpt}) resolves to what the command line gives. A mapping merges into its
        # node (data_edit.impute={strategy:drop} keeps the file's _target_ and indicator): the keys
        # it gives are the ones checked.
        for override in OverridesParser.create().parse_overrides(trial):
            if "." in override.key_or_group and "${" not in str(override.value()):
                ran = OmegaConf.select(cfg, override.key_or_group)
                ran = OmegaConf.to_container(ran) if OmegaConf.is_config(ran) else ran
                if isinstance(override.value(), dict) and isinstance(ran, dict):
                    ran = {k: ran.get(k, "<missing>") for k in override.value()}
                assert ran == override.value(), (name, override.input_line, ran)


@pytest.mark.parametrize("name", COMPARISONS)
def test_every_comparison_says_what_its_report_shows(name: str, tmp_path: Path) -> None:
    cfg = compose_config([f"experiment={name}"], tmp_path)
    assert cfg.report.metrics or cfg.report.curves, f"{name}: set report.metrics and/or report.curves"
    assert (CONFIG_DIR / "experiment" / f"{name}.yaml").read_text().splitlines()[1].startswith("# nnlab-train")


def test_a_comparison_runs_as_one_multirun_and_reports_its_curves(tmp_path: Path) -> None:
    """`nnlab-train -m experiment=batch_norm` (two batches a trial) then `nnlab-report`: one trial
    folder per swept value, trials that differ only in that value, the table and the curves."""
    name = "batch_norm"
    sweep = tmp_path / "sweep"
    done = run_cli(["-m", f"experiment={name}", *TINY, "trainer.summary=false", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    trials = grid(name)
    folders = sorted((p for p in sweep.iterdir() if p.is_dir()), key=lambda p: p.name)
    assert [p.name for p in folders] == [str(i) for i in range(len(trials))]
    swept = {o.partition("=")[0] for t in trials for o in t}
    for folder, trial in zip(folders, trials):
        ran = [str(o) for o in OmegaConf.load(folder / ".hydra" / "overrides.yaml")]
        assert set(trial) <= set(ran)
        common = sorted(o.lower() for o in ran if o.partition("=")[0] not in swept)  # (Hydra writes False)
        assert common == sorted(["experiment=" + name, *TINY, "trainer.summary=false"])  # nothing else differs
        metrics = json.loads((folder / "metrics.json").read_text())
        assert all(math.isfinite(v) for v in metrics.values())

    report = [sys.executable, "-m", "nnlab.commands.report", str(sweep)]
    shown = subprocess.run(report, cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert (sweep / "curves.png").stat().st_size > 10_000
    table = (sweep / "report.md").read_text()
    cfg = compose_config([f"experiment={name}"], tmp_path / "cfg")
    for metric in cfg.report.metrics:
        assert metric in table


@pytest.mark.slow
@pytest.mark.parametrize("name", COMPARISONS)
def test_every_trial_of_every_comparison_runs_tiny(name: str, train_run, tmp_path: Path) -> None:
    given: list[str] = []
    if "pretrained_ckpt" in OmegaConf.load(CONFIG_DIR / "experiment" / f"{name}.yaml"):
        # A fine-tuning comparison starts from a checkpoint given on the command line: a tiny run of
        # the same config (from scratch) stands in for the pretrained model.
        pretrained = train_run([f"experiment={name}", "transfer.init_from=null"], tmp_path / "pretrained")
        given = [f"pretrained_ckpt={pretrained.dir / 'checkpoints' / 'best.ckpt'}"]
    for i, trial in enumerate(grid(name)):
        run = train_run([f"experiment={name}", *given, *trial], tmp_path / str(i))
        assert run.metrics and all(math.isfinite(v) for v in run.metrics.values() if isinstance(v, float)), trial
