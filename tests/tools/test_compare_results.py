"""scripts/compare_results.py: the bitwise comparison of two metrics.json maps (fast, no
subprocess), and one real comparison of HEAD with the checkout's files (slow)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CLI_TIMEOUT_S

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_results.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


compare_results = load_script()
compare_metrics = compare_results.compare_metrics

METRICS = {"test/acc": 0.9415041782729805, "test/loss": 0.32366496324539185, "val/acc": 0.9776536312849162}


def test_equal_maps_have_no_difference() -> None:
    assert compare_metrics(METRICS, dict(METRICS)) == []
    # Read back from JSON text, as the script does: the shortest repr round-trips every bit.
    assert compare_metrics(METRICS, json.loads(json.dumps(METRICS))) == []


def test_a_value_one_ulp_away_differs() -> None:
    after = {**METRICS, "test/loss": math.nextafter(METRICS["test/loss"], math.inf)}
    assert after["test/loss"] == pytest.approx(METRICS["test/loss"], rel=1e-15)  # what a tolerance would miss
    (diff,) = compare_metrics(METRICS, after)
    assert (diff.key, diff.before, diff.after) == ("test/loss", METRICS["test/loss"], after["test/loss"])
    assert diff.describe() == "test/loss: 0.32366496324539185 -> 0.3236649632453919"


def test_timings_are_not_results() -> None:
    """A baseline's fit and predict seconds differ between any two runs: not compared."""
    before = {"test/acc": 0.98, "baselines/logistic/fit_s": 0.019, "baselines/logistic/predict_s": 0.001}
    after = {"test/acc": 0.98, "baselines/logistic/fit_s": 0.024, "baselines/logistic/fit_s_std": 0.002}
    assert compare_metrics(before, after) == []
    assert [d.key for d in compare_metrics(before, {**after, "test/acc": 0.97})] == ["test/acc"]


def test_a_missing_key_differs_on_either_side() -> None:
    fewer = {k: v for k, v in METRICS.items() if k != "val/acc"}
    (diff,) = compare_metrics(METRICS, fewer)
    assert (diff.key, diff.before, diff.after) == ("val/acc", METRICS["val/acc"], None)
    assert diff.describe().endswith("-> (missing)")
    (diff,) = compare_metrics(fewer, {**fewer, "train/loss": 0.5})
    assert (diff.key, diff.before, diff.after) == ("train/loss", None, 0.5)


def test_exact_json_values_sign_nan_and_type() -> None:
    assert compare_metrics({"a": float("nan")}, {"a": float("nan")}) == []  # the same bits, though nan != nan
    assert [d.key for d in compare_metrics({"a": 0.0}, {"a": -0.0})] == ["a"]
    assert [d.key for d in compare_metrics({"a": 1}, {"a": 1.0})] == ["a"]  # "1" and "1.0" differ in the file
    assert [d.key for d in compare_metrics({"a": [1.0, 2.0]}, {"a": [1.0, 2.0000000000000004]})] == ["a"]


def test_expected_change_is_reported_but_does_not_fail() -> None:
    commands = {c.name: c for c in compare_results.COMMANDS}
    csv, default = commands["csv_impute_minmax"], commands["default"]
    changed = compare_results.Outcome(metrics={**METRICS, "test/acc": 0.5})
    same = compare_results.Outcome(metrics=METRICS)
    row = compare_results.verdict(csv, same, changed)
    assert (row.status, row.ok) == ("changed (expected)", True)
    assert "test/acc: 0.9415041782729805 -> 0.5" in compare_results.show_differences(row, limit=None)
    row = compare_results.verdict(default, same, changed)  # not marked: the same change fails
    assert (row.status, row.ok) == ("differs", False)
    assert compare_results.verdict(default, same, same).status == "equal"
    assert not compare_results.verdict(default, same, compare_results.Outcome(error="exit 1")).ok


def test_the_commands_cover_every_task_and_have_unique_names() -> None:
    names = [c.name for c in compare_results.COMMANDS]
    assert len(names) == len(set(names)) and len(names) >= 11
    args = " ".join(a for c in compare_results.COMMANDS for a in c.args)
    config_dir = Path(compare_results.REPO) / "src" / "nnlab" / "configs"
    for c in compare_results.COMMANDS:  # every experiment and data choice named exists
        for a in c.args:
            group, _, choice = a.partition("=")
            if group in ("experiment", "data", "model"):
                assert (config_dir / group / f"{choice}.yaml").is_file(), a
    for needle in (
        "experiment=diabetes_mlp",
        "perceptron",
        "autoencoder",
        "vae",
        "gan",
        "som",
        "data_edit.kfold.folds=3",
    ):
        assert needle in args
    for c in compare_results.COMMANDS:  # a side from before the data_edit group runs the old spelling
        if any(a.startswith("data_edit") for a in c.args):
            assert c.legacy_args and not any("data_edit" in a for a in c.legacy_args), c.name
    assert [c.name for c in compare_results.COMMANDS if c.expected_change] == ["csv_impute_minmax"]


def test_a_side_without_the_data_edit_group_gets_the_legacy_spelling(tmp_path: Path) -> None:
    cv = {c.name: c for c in compare_results.COMMANDS}["cross_validation"]
    assert "data.cv_folds=3" in cv.args_for(tmp_path)  # an old src/: no nnlab/configs/data_edit/
    (tmp_path / "nnlab" / "configs" / "data_edit").mkdir(parents=True)
    assert cv.args_for(tmp_path) == cv.args and "data_edit.kfold.folds=3" in cv.args


@pytest.mark.slow
def test_head_against_the_checkout_is_equal(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    args = ["--before", "HEAD", "--after", "worktree", "--only", "default", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 of 1 as they should be" in proc.stdout
    result = json.loads(out.read_text())
    (row,) = result["commands"]
    assert (row["name"], row["status"], row["differences"]) == ("default", "equal", [])
    assert row["before_metrics"] == row["after_metrics"] and "test/acc" in row["before_metrics"]
    assert result["ok"] is True
