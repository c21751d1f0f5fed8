"""A sweep in which one trial failed ends, once the other trials ran, with one paragraph: which
trial, why, and where to see every trial (`nnlab.cli.app.TrialFailed`, a Hydra `CompactHydraException`:
Hydra prints its message without a traceback and exits with status 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import TINY, run_cli


@pytest.mark.slow
def test_a_failed_trial_ends_the_sweep_in_one_paragraph_after_the_others_ran(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "optimizer.lr=0.1,-1,0.01", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)

    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "TrialFailed" not in result.stderr
    # After Hydra's own two lines around it ("Error executing job with overrides: [...]" before,
    # "Set the environment variable HYDRA_FULL_ERROR=1 ..." after), the paragraph:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("Set the environment variable HYDRA_FULL_ERROR=1")
    assert lines[-3].startswith("Error executing job with overrides: ['optimizer.lr=-1'")
    last = lines[-2]
    assert last.startswith("Trial 1 of the sweep (optimizer.lr=-1 "), last
    assert "failed: optimizer.lr=-1" in last and "out of range" in last
    assert f"`nnlab-report {sweep}` shows every trial" in last and str(sweep / "1" / "status.json") in last
    status = {t: json.loads((sweep / t / "status.json").read_text()) for t in ("0", "1", "2")}
    assert [status[t]["status"] for t in ("0", "1", "2")] == ["completed", "failed", "completed"]
    assert "out of range" in status["1"]["error"]
    assert (sweep / "2" / "metrics.json").is_file()  # the trial after the failed one ran
