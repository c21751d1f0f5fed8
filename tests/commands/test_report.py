"""`nnlab-report` over real sweeps: a 4-trial grid (optimizer.lr x model.dropout) shared by the
module, and a 2-trial sweep whose second trial is rejected at validation."""

from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from helpers import CLI_TIMEOUT_S, TINY, cli_env, run_cli
from nnlab.commands.report import main

QUIET = (*TINY, "trainer.summary=false")
# 0.01 listed second: it wins on digits, so the best trial is not the first one the sweep ran and its
# rerun also checks that a trial does not depend on the trials before it.
SWEPT = {"optimizer.lr": ("0.001", "0.01"), "model.dropout": ("0.0", "0.2")}


@dataclass
class Report:
    """What one `python -m nnlab.commands.report` left: its output and the files it wrote (read at once,
    since the next report of the same sweep overwrites them)."""

    result: subprocess.CompletedProcess[str]
    rows: list[dict[str, str]]  # report.csv
    markdown: str

    def order(self) -> list[str]:
        return [row["trial"] for row in self.rows]


def report(sweep: Path, *args: str) -> Report:
    result = subprocess.run(
        [sys.executable, "-m", "nnlab.commands.report", str(sweep), *args],
        cwd=sweep.parent,
        env=cli_env(sweep.parent),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    with (sweep / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    return Report(result, rows, (sweep / "report.md").read_text())


def sweep_of(tmp: Path, *overrides: str) -> Path:
    sweep = tmp / "sweep"
    result = run_cli(["-m", *overrides, *QUIET, f"hydra.sweep.dir={sweep}"], tmp)
    assert (sweep / "multirun.yaml").is_file(), result.stderr
    return sweep


def final_metrics(sweep: Path) -> dict[str, dict[str, float]]:
    """{trial folder name: metrics.json} of the trials that finished."""
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lr, dropout = (f"{k}={','.join(v)}" for k, v in SWEPT.items())
    return sweep_of(tmp_path_factory.mktemp("grid"), lr, dropout)


@pytest.fixture(scope="module")
def grid_report(grid: Path) -> Report:
    return report(grid)


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sweep_of(tmp_path_factory.mktemp("failing"), "optimizer.lr=0.01,-1")


def test_each_trial_has_its_own_folder_and_event_file(grid: Path) -> None:
    trials = sorted(p.name for p in grid.iterdir() if p.is_dir())
    assert trials == ["0", "1", "2", "3"]
    event_files = [list((grid / t).glob("events.out.tfevents*")) for t in trials]
    assert all(len(files) == 1 for files in event_files), event_files
    assert len({files[0].parent for files in event_files}) == 4
    assert all(json.loads((grid / t / "status.json").read_text())["status"] == "completed" for t in trials)


def test_trials_sorted_by_val_loss(grid: Path, grid_report: Report) -> None:
    metrics = final_metrics(grid)
    expected = sorted(metrics, key=lambda t: metrics[t]["val/loss"])
    assert grid_report.order() == expected
    # The terminal table lists them in the same order, and names the swept hyperparameters.
    out = grid_report.result.stdout
    positions = [out.index(f"{metrics[t]['val/loss']:.4f}") for t in expected]
    assert positions == sorted(positions), out
    assert "optimizer.lr" in out and "model.dropout" in out and "test/acc" in out


def test_csv_holds_every_metric_of_every_trial(grid: Path, grid_report: Report) -> None:
    metrics = final_metrics(grid)
    assert len(grid_report.rows) == 4
    for row in grid_report.rows:
        assert {k: float(row[k]) for k in metrics[row["trial"]]} == metrics[row["trial"]]
        assert row["status"] == "completed" and float(row["wall_s"]) > 0
        overrides = (grid / row["trial"] / ".hydra" / "overrides.yaml").read_text()
        assert all(f"{k}={row[k]}" in overrides for k in SWEPT)
    assert list(grid_report.rows[0])[4:6] == list(SWEPT)  # swept hyperparameters first


def test_markdown_table_and_plot(grid: Path, grid_report: Report) -> None:
    metrics = final_metrics(grid)
    lines = grid_report.markdown.splitlines()
    header = next(line for line in lines if line.startswith("| #"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[2:5] == [*SWEPT, "val/loss"]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in lines[lines.index(header) + 2 :]]
    assert len(table) == 4
    for row in table:
        trial = metrics[row[1]]
        assert row[4] == f"{trial['val/loss']:.4f}"
        assert row[columns.index("test/acc")] == f"{trial['test/acc']:.4f}"
    assert (grid / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_best_command_reruns_the_best_trial(grid: Path, grid_report: Report, tmp_path: Path) -> None:
    best = grid_report.order()[0]
    out = grid_report.result.stdout
    assert str(grid / best) in out
    command = next(line for line in out.splitlines() if line.startswith("nnlab-train "))
    args = shlex.split(command)[1:]
    result = run_cli([*args, f"hydra.run.dir={tmp_path / 'rerun'}"], tmp_path)
    assert result.returncode == 0, result.stderr
    rerun = json.loads((tmp_path / "rerun" / "metrics.json").read_text())
    assert rerun["val/loss"] == final_metrics(grid)[best]["val/loss"]  # same seed on CPU: identical


def test_metric_and_mode_options(grid: Path) -> None:
    metrics = final_metrics(grid)
    highest_first = sorted(metrics, key=lambda t: (-metrics[t]["val/acc"], int(t)))
    by_acc = report(grid, "--metric", "val/acc", "--mode", "max")
    assert by_acc.order() == highest_first
    assert "val/acc (highest first)" in by_acc.result.stdout
    assert report(grid, "--metric", "val/acc").order() == highest_first  # an accuracy: higher is better


@pytest.fixture(scope="module")
def failing_report(failing: Path) -> Report:
    return report(failing)


def test_failed_trial_listed_last_with_its_error(failing: Path, failing_report: Report) -> None:
    assert not (failing / "1" / ".hydra").exists()  # rejected at validation, before nnlab wrote it
    rows = failing_report.rows
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "completed"), ("1", "failed")]
    assert rows[1]["optimizer.lr"] == "-1"  # recovered from Hydra's multirun.yaml
    assert "optimizer.lr=-1 is out of range" in rows[1]["error"]
    assert rows[1]["val/loss"] == ""


def test_failed_trial_in_the_terminal_table(failing_report: Report) -> None:
    out = failing_report.result.stdout
    assert "failed: optimizer.lr=-1 is out of range" in out
    assert out.index("completed") < out.index("failed:")


@pytest.mark.parametrize("case", ["missing", "empty", "file"])
def test_bad_path_is_one_paragraph(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / case
    if case == "empty":
        path.mkdir()
    elif case == "file":
        path.write_text("not a sweep")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {path}") and err.count("\n") == 1, err
    assert "multiruns" in err and "status.json" in err  # says what a sweep dir looks like


def test_bad_path_exit_code_from_the_command_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "nnlab.commands.report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


def test_console_script() -> None:
    (script,) = entry_points(group="console_scripts", name="nnlab-report")
    assert script.value == "nnlab.commands.report:cli"


def test_tensorboard_hparams_over_the_sweep_dir(grid: Path) -> None:
    """What `tensorboard --logdir <sweep>` loads: per trial, its curves and its HParams session
    (hyperparameters and headline metrics only), and no experiment summary anywhere."""
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(grid))
    mux.Reload()
    # Named by the trial's folder: everything logged along the way, the epoch curves, the HParams row.
    assert sorted(mux.Runs()) == sorted(
        [*"0123", *(f"{t}/{kind}" for t in "0123" for kind in ("train", "val", "hparams"))]
    )
    sessions = mux.PluginRunToTagToContent("hparams")
    assert sorted(sessions) == [f"{t}/hparams" for t in "0123"]
    for run, tags in sessions.items():
        assert "_hparams_/experiment" not in tags
        session = HParamsPluginData.FromString(tags["_hparams_/session_start_info"]).session_start_info
        lines = (grid / run.split("/")[0] / ".hydra" / "overrides.yaml").read_text().splitlines()
        overrides = dict(line.removeprefix("- ").split("=", 1) for line in lines)
        for key in SWEPT:
            assert session.hparams[key].number_value == pytest.approx(float(overrides[key])), key
        assert "val/loss" in mux.GetAccumulator(run).Tags()["scalars"]


def test_a_rejected_trial_records_its_own_overrides(failing: Path) -> None:
    """Any sweeper's rejected trial (Optuna writes no multirun.yaml) can be reported: its
    status.json names the overrides it ran with."""
    status = json.loads((failing / "1" / "status.json").read_text())
    assert status["status"] == "failed" and "optimizer.lr=-1" in status["overrides"]


def header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| #"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_curves_overlay_every_trial_from_its_tensorboard_events(grid: Path) -> None:
    from nnlab.runs.curves import read_scalars

    done = report(grid, "--curves", "val/loss,train/*", "--columns", "val/acc")
    assert (grid / "curves.png").stat().st_size > 10_000
    assert header(done.markdown)[4:6] == ["val/loss", "val/acc"]  # after #, trial and the two swept keys
    for trial, metrics in final_metrics(grid).items():
        scalars = read_scalars(grid / trial, ["val/loss", "train/*"])
        steps, values = scalars["val/loss"]
        assert steps == list(range(1, len(steps) + 1))  # one value per epoch
        assert values[-1] == pytest.approx(metrics["val/loss"], rel=1e-6)  # TensorBoard holds what metrics.json says
        assert {"train/loss", "train/acc"} <= set(scalars) and "val/acc" not in scalars
    again = report(grid)  # no --curves and no report.curves in the config: the old figure goes
    assert not (grid / "curves.png").exists() and "val/acc" not in header(again.markdown)


def test_curves_of_a_scalar_no_trial_logged_say_so(grid: Path) -> None:
    done = report(grid, "--curves", "val/no_such_metric")
    assert not (grid / "curves.png").exists()
    assert "No trial logged val/no_such_metric" in done.result.stdout


@pytest.mark.slow
def test_a_real_tensorboard_marks_the_swept_keys_and_lists_headline_metrics(grid: Path, tmp_path: Path) -> None:
    """`tensorboard --logdir <sweep>` as a user starts it, asked through its HTTP API what the
    HParams tab shows: the swept keys marked as differing (the columns shown without a click), and
    the headline metrics only (no per-class one)."""
    import socket
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(grid), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/data/plugin/hparams/experiment"
        body = json.dumps({"experimentName": ""}).encode()
        experiment: dict = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(experiment.get("hparamInfos", [])) == 0:
            try:
                with urllib.request.urlopen(
                    urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}), timeout=10
                ) as response:
                    experiment = json.loads(response.read())
            except OSError:  # not listening yet, or the logdir not loaded yet
                pass
            time.sleep(1)
        assert experiment, "TensorBoard did not answer"
        differs = {h["name"] for h in experiment["hparamInfos"] if h.get("differs")}
        assert set(SWEPT) <= differs
        assert "data" not in differs  # the same choice in every trial
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"val/loss", "val/acc", "val/macro_f1"} <= metrics
        assert not [m for m in metrics if m.count("/") > 1]  # no per-class metric
    finally:
        server.terminate()
        server.wait(timeout=30)


# -- the best classical baseline beside the best trial (nnlab.analysis.classical) -------------------


def test_no_baseline_line_without_baselines(grid_report: Report) -> None:
    """The grid's trials ran with baselines=[] (the tests' default): nothing to set beside them."""
    assert "best baseline" not in grid_report.result.stdout
    assert "best baseline" not in grid_report.markdown


def test_the_best_baseline_is_read_from_the_trials_own_metrics() -> None:
    from nnlab.analysis.sweep_table import baseline_line, best_baseline
    from nnlab.runs.sweepfolder import Trial

    metrics = {
        "val/loss": 0.30,
        "val/acc": 0.90,
        "baselines/logistic/val/loss": 0.25,
        "baselines/logistic/val/acc": 0.93,
        "baselines/random_forest/val/loss": 0.40,
        "baselines/random_forest/val/acc": 0.95,
        "baselines/hist_gradient_boosting/val/loss": float("nan"),  # not finite: never the best
        "baselines/random_forest/val/loss_std": 0.01,  # a k-fold spread, not a score
        "fold_0/baselines/random_forest/val/loss": 0.01,  # one fold's, not the mean
        "baselines/logistic/test/loss": 0.01,  # another split
    }
    trial = Trial(name="3", dir=Path("3"), status="completed", metrics=metrics)
    assert best_baseline(trial, "val/loss", "min") == ("logistic", 0.25)
    assert best_baseline(trial, "val/acc", "max") == ("random_forest", 0.95)
    assert best_baseline(trial, "train/loss", "min") is None
    assert baseline_line(trial, "val/loss", "min") == (
        "best trial 3: val/loss = 0.3000; best baseline on its split: logistic val/loss = 0.2500 "
        "(the baseline is better)"
    )
    trial.metrics["val/acc"] = 0.99
    assert baseline_line(trial, "val/acc", "max").endswith("random_forest val/acc = 0.9500 (the network is better)")


def test_a_baseline_column_is_named_so_a_terminal_can_wrap_it() -> None:
    from nnlab.analysis.sweep_table import header

    assert header("baselines/hist_gradient_boosting/test/acc") == "hist_gradient_boosting test/acc"
    assert header("val/loss") == "val/loss"
    assert header("baselines/random_forest/fit_s") == "baselines/random_forest/fit_s"  # not a split's metric
