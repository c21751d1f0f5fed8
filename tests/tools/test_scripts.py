"""The measurement scripts under benchmarks/ run and print their tables (a short run each: the
figures themselves are for docs/benchmarks.md, not for tests). Each runs as a user runs it:
`python -m benchmarks.<name>` from the root of the checkout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import CLI_TIMEOUT_S

ROOT = Path(__file__).resolve().parents[2]  # the checkout, where benchmarks/ lives


def run_script(name: str, *args: str) -> str:
    """`python -m benchmarks.<name> <args>` from the root of the checkout; its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_fused_times_each_optimizer_both_ways() -> None:
    out = run_script("bench_fused", "--epochs", "1", "--optimizers", "adam,sgd_plain")
    assert "the default experiment (51,210 parameters): median of 1 epochs each, 1 torch thread(s)" in out
    rows = re.findall(r"^\| (\w+) \| ([\d.]+) ms/epoch \| ([\d.]+) ms/epoch \| ([\d.]+)x \|$", out, flags=re.M)
    assert [r[0] for r in rows] == ["adam", "sgd_plain"]
    for _, default, fused, speedup in rows:
        assert float(default) > 0 and float(fused) > 0
        assert float(speedup) == pytest.approx(float(default) / float(fused), abs=0.01)


@pytest.mark.slow
def test_bench_paired_compares_nnlab_with_the_raw_loop_epoch_by_epoch() -> None:
    out = run_script("bench_paired", "--epochs", "2")
    assert "experiment=digits_mlp: 2 epoch pairs" in out
    # The default update is fused: nnlab against the raw loop making it, then the raw loop making PyTorch's own.
    assert "against the raw loop (the same update as nnlab): median" in out
    assert "against the raw loop with PyTorch's per-tensor update (optimizer.fused=null): median" in out
    rows = re.findall(r"^\| (defaults|bare) \| (-?[\d.]+) ms \| .* \| ([\d.]+)x \|$", out, flags=re.M)
    assert [r[0] for r in rows] == ["defaults", "bare", "defaults", "bare"]
    assert all(float(ratio) > 0 for _, _, ratio in rows)


@pytest.mark.slow
def test_bench_paired_costs_drops_one_part_at_a_time() -> None:
    out = run_script("bench_paired", "--epochs", "2", "--costs")
    parts = re.findall(r"^\| ([a-zA-Z() -]+) \| (-?[\d.]+) ms \|$", out, flags=re.M)
    names = ["the health monitor", "checkpoints", "the progress bar", "the TensorBoard logger", "the non-finite check"]
    assert [p[0] for p in parts] == [*names, "every callback and the logger (bare)"] * 2  # (one table per raw loop)


@pytest.mark.slow
def test_time_main_job_pairs_each_run_with_the_plain_pytorch_floor(tmp_path: Path) -> None:
    import json

    from nnlab.commands.train import compose_run
    from nnlab.runs.build import build_model

    out = run_script(
        "time_main_job", "--runs", "1", "--floor", "--json", str(tmp_path / "t.json"), "trainer.max_epochs=1"
    )
    result = json.loads((tmp_path / "t.json").read_text())
    (run,) = result["runs"]
    assert 0 < run["floor_s"] < run["wall_s"] and 0 < run["to_first_step_s"] < run["wall_s"]
    assert result["median"]["nnlab_over_floor_s"] == pytest.approx(run["to_first_step_s"] - run["floor_s"])
    # The floor script builds the default experiment's model: the same number of parameters.
    _, model, _ = build_model(compose_run([], tmp_path / "run"))
    assert run["floor_params"] == sum(p.numel() for p in model.parameters())
    assert f"plain PyTorch script ({run['floor_params']:,} parameters) to its first step" in out


def test_rl_vs_sb3_reads_its_figures_and_writes_only_between_its_markers(tmp_path: Path) -> None:
    from benchmarks import rl_vs_sb3

    # A run that never reached 475 counts as larger than any step count in the median.
    assert rl_vs_sb3.median([3.0, None, 1.0]) == 3.0
    assert rl_vs_sb3.median([None, None, 1.0]) is None
    assert rl_vs_sb3.cell([25600, None, 12800], ",.0f") == "**25,600** (25,600, not reached, 12,800)"
    assert rl_vs_sb3.outcome([(256, 20.0), (512, 480.0), (768, 470.0)], 500, 1.0, 0.1, 768)["steps_to_475"] == 512
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"before\n{rl_vs_sb3.START}\nold\n{rl_vs_sb3.END}\nafter\n")
    rl_vs_sb3.write_between(doc, rl_vs_sb3.START, rl_vs_sb3.END, "| new |")
    assert doc.read_text() == f"before\n{rl_vs_sb3.START}\n| new |\n{rl_vs_sb3.END}\nafter\n"
    with pytest.raises(SystemExit):  # a smoke run's figures never reach the docs
        rl_vs_sb3.main(["--quick", "--write"])


@pytest.mark.slow
def test_rl_vs_sb3_quick_run_trains_both_libraries() -> None:
    pytest.importorskip("gymnasium")
    pytest.importorskip("stable_baselines3")
    out = run_script("rl_vs_sb3", "--quick", "--algorithms", "ppo")
    row = r"^\| PPO, 2,048 steps \| (Stable-Baselines3|nnlab) \| (.+?) \| ([\d.]+) \| ([\d.]+) \|$"
    rows = re.findall(row, out, flags=re.M)
    assert [r[0] for r in rows] == ["Stable-Baselines3", "nnlab"]
    for _, steps, final, seconds in rows:
        assert steps == "not reached" and 0 < float(final) <= 500 and float(seconds) > 0


def test_defaults_before_after_tables_and_writes_only_between_its_markers(tmp_path: Path, monkeypatch) -> None:
    from benchmarks import defaults_before_after as dba

    def side(first: float, wall: float) -> list[dict]:
        return [{"to_first_step_s": first + i / 10, "wall_s": wall, "test_acc": 0.9805} for i in range(3)]

    def paired(*ratios: float) -> dict:
        return {"defaults": [(1.0, r) for r in ratios], "bare": [(0.5, r + 0.01) for r in ratios]}

    result = {
        "command": "python -m benchmarks.defaults_before_after --before abc",
        "date": "2026-12-08",
        "before": "abc",
        "after": "def",
        "environment": {"cpu": "CPU", "cpu_count": 2, "load_average": [0.5, 0.5, 0.5]},
        "start_up": {
            "floor": [{"to_first_step_s": f} for f in (2.0, 2.1, 2.2)],
            "before": side(2.7, 6.0),
            "after": side(2.4, 5.5),
        },
        "epochs": [{"case": "MLP", "pairs": 150, "runs": {"before": [paired(0.91)], "after": [paired(0.90, 1.12)]}}],
    }
    table = dba.tables(result)
    # nnlab over the floor: the median of the rounds' differences (0.7 and 0.4 in every round).
    assert "| before | 2.80 s | **0.70 s** | 6.00 s | 0.9805 |" in table
    assert "| after | 2.50 s | **0.40 s** | 5.50 s | 0.9805 |" in table
    assert "| MLP | 150 | 0.910x | 0.900x | 1.120x | 0.920x | 0.910x |" in table
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{dba.START}\nold\n{dba.END}\noutro\n")
    monkeypatch.setattr(dba, "DOC", doc)
    dba.report(result, write=True)
    assert doc.read_text() == f"intro\n{dba.START}\n{table}\n{dba.END}\noutro\n"


@pytest.mark.slow
def test_startup_imports_times_each_import_after_the_floor() -> None:
    out = run_script("startup_imports", "--runs", "1", "--freeze")
    rows = re.findall(r"^\| ([^|]+) \| (\d+) ms \|$", out, flags=re.M)
    names = [r[0] for r in rows]
    assert names[0].startswith("OmegaConf") and names[1] == "Hydra" and names[-2] == "torch.utils.tensorboard"
    assert names[-1] == "all of them (sum of the medians)"
    assert int(rows[-1][1]) >= sum(int(ms) for _, ms in rows[:-1]) - len(rows)  # (each median rounded)
    assert "after torch and torch._dynamo, then gc.freeze()" in out
