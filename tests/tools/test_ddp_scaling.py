"""benchmarks/ddp_scaling.py: its tables, its markers in the docs, its checks of the command line,
a real communication sweep on 2 gloo processes, and (slow) its --quick run end to end. No timing is
asserted: only that each figure is measured and that the columns agree with one another."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import CLI_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]  # the checkout, where benchmarks/ lives
needs_two_cores = pytest.mark.skipif(
    sys.platform == "win32" or (os.cpu_count() or 1) < 2, reason="2 gloo processes, one core each (POSIX)"
)


def mlp_params(hidden: int) -> int:
    """Parameters of MLP [hidden, hidden] from 2 inputs to 2 classes."""
    return (2 * hidden + hidden) + (hidden * hidden + hidden) + (hidden * 2 + 2)


def results() -> dict:
    """Saved results as the benchmark writes them, with made-up figures."""
    scaling = [
        {"procs": 1, "threads": 1, "per_rank_batch": 64, "epoch_s": [2.0, 1.0, 1.2], "median_epoch_s": 1.1,
         "speedup": 1.0, "speedup_same_cores": None, "max_abs_diff": 0.0, "weights_match": True},
        {"procs": 1, "threads": 2, "per_rank_batch": 64, "epoch_s": [2.0, 0.8, 0.8], "median_epoch_s": 0.8,
         "speedup": 1.375, "speedup_same_cores": None, "max_abs_diff": 0.0, "weights_match": True},
        {"procs": 2, "threads": 1, "per_rank_batch": 32, "epoch_s": [2.0, 0.6, 0.5], "median_epoch_s": 0.55,
         "speedup": 2.0, "speedup_same_cores": 0.8 / 0.55, "max_abs_diff": 3e-7, "weights_match": True},
    ]  # fmt: skip
    communication = [
        {"procs": 2, "hidden": 64, "params": mlp_params(64), "per_rank_batch": 8, "compute_ms": 0.2,
         "allreduce_ms": 0.4, "ddp_step_ms": 0.8, "single_step_ms": 0.3, "speedup": 0.375, "speedup_no_overlap": 0.5},
    ]  # fmt: skip
    return {
        "command": "python -m benchmarks.ddp_scaling --write",
        "date": "2026-01-01",
        "settings": {"samples": 1000, "hidden": [16], "global_batch": 64, "epochs": 3},
        "procs": [1, 2],
        "atol": 1e-5,
        "reps": 20,
        "scaling_params": 82,
        "scaling": scaling,
        "communication": communication,
        "environment": {
            "cpu": "a CPU",
            "cpu_count": 2,
            "load_average": [0.1, 0.2, 0.3],
            "platform": "x",
            "versions": {"python": "3.11", "torch": "2.x", "nnlab": "0.1.0", "numpy": "2"},
        },  # fmt: skip
    }


def test_the_tables_show_every_run_and_the_docs_change_only_between_the_markers(tmp_path: Path) -> None:
    from benchmarks import ddp_scaling

    table = ddp_scaling.markdown(results())
    assert "| 1 x 1 | 64 | 1.100 | 1.00x |  | (the reference) |" in table
    assert "| 2 x 1 | 32 | 0.550 | 2.00x | 1.45x | match, max 3.0e-07 |" in table
    assert "| 2 | 64 | 4,482 | 8 | 0.20 | 0.40 | 2.00 | 0.80 | 0.30 | 0.38x |" in table
    assert "![Scaling and communication cost](figures/ddp_scaling.png)" in table
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"before\n{ddp_scaling.START}\nold\n{ddp_scaling.END}\nafter\n")
    ddp_scaling.write_between(doc, ddp_scaling.START, ddp_scaling.END, table)
    assert doc.read_text() == f"before\n{ddp_scaling.START}\n{table}\n{ddp_scaling.END}\nafter\n"
    other = tmp_path / "other.md"
    other.write_text(f"no markers, or {ddp_scaling.END} before {ddp_scaling.START}")
    with pytest.raises(SystemExit):  # a page without the markers in order is refused, not rewritten
        ddp_scaling.write_between(other, ddp_scaling.START, ddp_scaling.END, table)
    assert other.read_text() == f"no markers, or {ddp_scaling.END} before {ddp_scaling.START}"


def test_saved_results_give_the_same_tables_and_a_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from benchmarks import ddp_scaling

    saved = tmp_path / "ddp_scaling.json"
    saved.write_text(json.dumps(results()))
    figure = tmp_path / "fig.png"
    assert ddp_scaling.main(["--from-json", str(saved), "--figure", str(figure)]) == 0
    assert ddp_scaling.markdown(results()) in capsys.readouterr().out
    assert figure.read_bytes().startswith(b"\x89PNG")


def test_weights_are_compared_tensor_by_tensor_against_the_one_process_run() -> None:
    from benchmarks import ddp_scaling

    reference = {"w": torch.zeros(3, 2), "b": torch.zeros(2)}
    near = {"w": torch.full((3, 2), 1e-7), "b": torch.zeros(2)}
    far = {"w": torch.zeros(3, 2), "b": torch.tensor([0.0, -2e-3])}
    runs = [
        {"procs": 1, "threads": 1, "per_rank_batch": 8, "epoch_s": [9.0, 2.0, 2.0], "weights": reference},
        {"procs": 2, "threads": 1, "per_rank_batch": 4, "epoch_s": [9.0, 1.0, 1.0], "weights": near},
        {"procs": 1, "threads": 2, "per_rank_batch": 8, "epoch_s": [9.0, 4.0, 4.0], "weights": far},
    ]
    rows = ddp_scaling.summarize_scaling(runs, atol=1e-5)
    assert [r["median_epoch_s"] for r in rows] == [2.0, 1.0, 4.0]  # the first epoch left out
    assert [r["speedup"] for r in rows] == [1.0, 2.0, 0.5]
    assert rows[1]["speedup_same_cores"] == 4.0 and rows[2]["speedup_same_cores"] is None
    assert rows[1]["max_abs_diff"] == pytest.approx(1e-7) and rows[1]["weights_match"]
    assert rows[2]["max_abs_diff"] == pytest.approx(2e-3) and not rows[2]["weights_match"]
    assert all("weights" not in r for r in rows)
    assert ddp_scaling.max_abs_diff(reference, {"w": torch.zeros(3, 2)}) == float("inf")  # a missing tensor


def test_bad_process_counts_are_refused_with_the_fix() -> None:
    from benchmarks import ddp_scaling
    from nnlab.errors import UserError

    with pytest.raises(UserError, match="including 1"):
        ddp_scaling.check_procs([2, 4], 64, cores=4)
    with pytest.raises(UserError, match="--procs 4 needs 4 cores .* has 2"):
        ddp_scaling.check_procs([1, 2, 4], 64, cores=2)
    with pytest.raises(UserError, match="--global-batch 30 does not split evenly over 4 processes"):
        ddp_scaling.check_procs([1, 2, 4], 30, cores=4)
    ddp_scaling.check_procs([1, 2, 4], 64, cores=4)
    with pytest.raises(SystemExit):  # a smoke run's figures never reach the docs
        ddp_scaling.main(["--quick", "--write"])


def test_run_overrides_keep_the_global_batch_and_the_reference_drops_the_last_one() -> None:
    from benchmarks import ddp_scaling

    one = ddp_scaling.train_overrides(1000, [16, 16], 64, 3, procs=1)
    two = ddp_scaling.train_overrides(1000, [16, 16], 64, 3, procs=2)
    assert {"data.batch_size=64", "data.drop_last=true"} <= set(one) and "trainer=ddp" not in one
    assert {"data.batch_size=32", "trainer=ddp"} <= set(two)
    assert "model.hidden_sizes=[16,16]" in one and set(one) - set(two) == {"data.batch_size=64", "data.drop_last=true"}


@needs_two_cores
def test_the_communication_sweep_times_real_gloo_steps() -> None:
    from benchmarks import ddp_scaling

    (row,) = ddp_scaling.spawn_sweep(2, [[16, 4]], reps=1)
    assert row["hidden"] == 16 and row["rows"] == 4 and row["params"] == mlp_params(16)
    assert all(row[k] > 0 for k in ("compute_ms", "allreduce_ms", "ddp_step_ms"))


@pytest.mark.slow
@needs_two_cores
def test_the_quick_run_trains_with_one_and_two_processes_to_the_same_weights(tmp_path: Path) -> None:
    work, out, figure = tmp_path / "work", tmp_path / "results.json", tmp_path / "fig.png"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ddp_scaling", "--quick", "--procs", "1,2", "--workdir", str(work),
         "--out", str(out), "--figure", str(figure)],
        cwd=ROOT, capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    rows = saved["scaling"]
    assert [(r["procs"], r["threads"], r["per_rank_batch"]) for r in rows] == [(1, 1, 32), (1, 2, 32), (2, 1, 16)]
    assert all(len(r["epoch_s"]) == saved["settings"]["epochs"] and r["median_epoch_s"] > 0 for r in rows)
    assert rows[0]["max_abs_diff"] == 0.0
    assert all(r["weights_match"] and r["max_abs_diff"] <= saved["atol"] for r in rows)
    # The 2-process run was data-parallel, and took one step per global batch of 32 of the 70% train split.
    from nnlab.engine.checkpoint import load_checkpoint

    assert "DistributedDataParallel: rank 0 of 2" in (work / "procs2_threads1" / "train.log").read_text()
    last = load_checkpoint(work / "procs2_threads1" / "checkpoints" / "last.ckpt")
    assert last["global_step"] == saved["settings"]["epochs"] * (saved["settings"]["samples"] * 7 // 10 // 32)
    (comm,) = saved["communication"]
    assert comm["procs"] == 2 and comm["params"] == mlp_params(comm["hidden"])
    assert comm["speedup"] == pytest.approx(comm["single_step_ms"] / comm["ddp_step_ms"])
    assert "| 2 x 1 | 16 |" in proc.stdout and figure.read_bytes().startswith(b"\x89PNG")
