"""`python -m benchmarks.bench` (benchmarks/, run from a checkout): the raw loop is nnlab's
computation without the framework, so the two reach the same weights; the other loops learn
alike; the SOM case compares with MiniSom; the command writes sane results."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.bench import main, run_torch_case
from benchmarks.bench_som import MINISOM_SIGMAS, som_rows
from benchmarks.cases import CASES, Case, compose
from benchmarks.lightning_loop import INSTALL, lightning_loop
from benchmarks.loops import Unavailable, dataloader_loop, nnlab_loop, raw_loop
from helpers import CLI_TIMEOUT_S, cli_env

ROOT = Path(__file__).resolve().parents[2]  # the checkout, where benchmarks/ lives

# Two epochs of the default experiment (20 steps each), with its dropout and batch norm.
MLP_2_EPOCHS = [*CASES["mlp_digits"].overrides, "trainer.max_epochs=2", "trainer.device=cpu"]


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    """nnlab's engine (logger, checkpoints, progress bar on) and the raw loop on the same case."""
    root = tmp_path_factory.mktemp("bench")
    nnlab = nnlab_loop(compose(MLP_2_EPOCHS, root / "nnlab"), "cpu")
    raw = raw_loop(compose(MLP_2_EPOCHS, root / "raw"), "cpu")
    return nnlab, raw


def test_raw_loop_matches_nnlab(mlp_runs):
    """Same init draws, optimizer, batches in the same order, dropout draws in the same order:
    the same final training loss (5 decimals) and the same weights."""
    nnlab, raw = mlp_runs
    assert (nnlab.steps, nnlab.epochs) == (raw.steps, raw.epochs) == (40, 2)
    assert round(nnlab.train_loss, 5) == round(raw.train_loss, 5)
    assert nnlab.state.keys() == raw.state.keys()
    for name, value in nnlab.state.items():
        assert torch.allclose(value.float(), raw.state[name].float(), atol=1e-6), name
    assert nnlab.test_acc == raw.test_acc
    assert nnlab.seconds > 0 and raw.seconds > 0


def test_dataloader_loop_learns_like_the_raw_loop(mlp_runs, tmp_path):
    """Another data order, the same model and optimizer: a similar accuracy after two epochs."""
    _, raw = mlp_runs
    loader = dataloader_loop(compose(MLP_2_EPOCHS, tmp_path / "dataloader"), "cpu")
    assert loader.steps == raw.steps
    assert loader.train_loss != pytest.approx(raw.train_loss, abs=1e-6)  # really another order
    assert raw.test_acc > 0.85 and loader.test_acc > 0.85
    assert abs(loader.test_acc - raw.test_acc) < 0.05


def test_lightning_skipped_when_absent(monkeypatch, tmp_path):
    """Without `lightning` its row is left out with the install hint; the other rows still run."""
    monkeypatch.setitem(sys.modules, "lightning", None)  # makes `import lightning` raise ImportError
    with pytest.raises(Unavailable, match="pip install"):
        lightning_loop(compose(MLP_2_EPOCHS, tmp_path / "l"), "cpu")
    case = Case("tiny", CASES["mlp_digits"].overrides, 1, ("raw", "lightning"))
    result = run_torch_case(case, epochs=1, repeats=1, device="cpu", workdir=tmp_path)
    assert [r["implementation"] for r in result["rows"]] == ["raw"]
    assert result["notes"] == [INSTALL]
    assert result["rows"][0]["ratio_to_raw"] == 1.0


def test_overrides_reach_every_implementation(tmp_path):
    """`python -m benchmarks.bench -- KEY=VALUE`: the case's config with the user's settings, for
    nnlab and the raw loop alike (so still the same computation: the same loss)."""
    case = Case("tiny", CASES["mlp_digits"].overrides, 1, ("nnlab", "raw"))
    result = run_torch_case(case, 1, 1, "cpu", tmp_path, overrides=["model.hidden_sizes=[16]", "model.dropout=0.0"])
    rows = {r["implementation"]: r for r in result["rows"]}
    assert round(rows["nnlab"]["train_loss"], 5) == round(rows["raw"]["train_loss"], 5)
    weights = torch.load(tmp_path / "nnlab_0" / "checkpoints" / "last.ckpt", weights_only=True)["model"]
    assert weights["net.1.weight"].shape == (16, 64)


def test_som_case_runs_nnlab_then_minisom_at_each_sigma():
    """The `som_digits` case: nnlab's batch SOM row, then one MiniSom row per sigma with its time
    over nnlab's; the quantization errors of a map trained on standardized digits are sane."""
    rows, notes = som_rows(epochs=2, device="cpu", repeats=1)
    assert notes == []
    assert [r["implementation"] for r in rows] == ["nnlab"] + [rows[1]["implementation"]] * len(MINISOM_SIGMAS)
    assert rows[1]["implementation"].startswith("MiniSom ")
    assert [r["mode"] for r in rows] == ["batch"] + [f"online, sigma {s}" for s in MINISOM_SIGMAS]
    assert rows[0]["iterations"] == "2 epochs, 2 updates"  # the batch SOM: one full-batch update an epoch
    for r in rows:
        assert r["train_s"] > 0 and 0 < r["qe"] < 8 and 0 <= r["te"] <= 1, r["mode"]  # 64 z-scored features
    for r in rows[1:]:
        assert r["speedup"] == pytest.approx(r["train_s"] / rows[0]["train_s"])


def test_som_case_without_minisom_keeps_nnlabs_row(monkeypatch):
    monkeypatch.setitem(sys.modules, "minisom", None)  # makes `import minisom` raise ImportError
    rows, notes = som_rows(epochs=1, device="cpu", repeats=1)
    assert [r["implementation"] for r in rows] == ["nnlab"]
    assert notes == ["MiniSom is not installed, so its rows are skipped: pip install minisom"]


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("optimizer.fuzed=true", "Could not override 'optimizer.fuzed'"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is out of range: it must be > 0.0."),
    ],
)
def test_overrides_that_do_not_apply_are_refused_before_any_run(capsys, override, reason):
    with pytest.raises(SystemExit) as e:
        main(["--cases", "mlp_digits", "--", override])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"the overrides {override} do not apply to case 'mlp_digits': {reason}" in err


def test_unknown_case_names_the_closest(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--cases", "mlp_digit"])
    assert e.value.code == 2
    assert "unknown case 'mlp_digit'. Did you mean 'mlp_digits'?" in capsys.readouterr().err


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_cli_writes_json_and_markdown(tmp_path):
    """`--epochs 1 --repeats 1` through the command line: one row per implementation with sane
    values (never timings compared), a GPU-only case skipped with its reason on a CPU."""
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    args = ["--cases", "mlp_digits,gpu_resnet", "--epochs", "1", "--repeats", "1", "--device", "cpu"]
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", *args, "--out", str(out), "--markdown", str(md)],
        cwd=ROOT,  # as a user runs it: from the root of the checkout (runs go under NNLAB_ROOT=tmp_path)
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["repeats"] == 1 and results["device"] == "cpu"
    assert {"cpu", "cpu_count", "versions", "load_average"} <= set(results["environment"])
    assert results["environment"]["versions"]["torch"].startswith(torch.__version__.split("+")[0])

    mlp = results["cases"]["mlp_digits"]
    assert mlp["status"] == "ok" and mlp["epochs"] == 1
    rows = {r["implementation"]: r for r in mlp["rows"]}
    expected = {"nnlab", "nnlab_lean", "raw", "raw_pytorch_update", "dataloader", "sklearn"}
    expected |= {"lightning"} if not mlp["notes"] else set()
    assert set(rows) == expected
    for name, r in rows.items():
        assert r["epochs"] == 1 and r["steps"] == 20, name  # 1259 training rows / 64 per batch
        assert r["time_s"] > 0 and r["steps_per_s"] == pytest.approx(r["steps"] / r["time_s"]), name
        assert r["epoch_s"] == pytest.approx(r["time_s"]), name
        assert r["ratio_to_raw"] == pytest.approx(r["steps_per_s"] / rows["raw"]["steps_per_s"]), name
        assert 0.5 < r["test_acc"] <= 1.0, name
        assert math.isfinite(r["train_loss"]) and r["train_loss"] > 0, name
    assert rows["raw"]["ratio_to_raw"] == 1.0
    assert round(rows["nnlab"]["train_loss"], 5) == round(rows["raw"]["train_loss"], 5)
    assert round(rows["nnlab_lean"]["train_loss"], 5) == round(rows["raw"]["train_loss"], 5)
    # optimizer.fused=null: the same training, with PyTorch's per-tensor update's rounding
    assert rows["raw_pytorch_update"]["train_loss"] == pytest.approx(rows["raw"]["train_loss"], abs=2e-3)

    gpu = results["cases"]["gpu_resnet"]
    assert gpu["status"] == "skipped" and "CUDA" in gpu["notes"][0]

    table = md.read_text()
    assert "| raw PyTorch loop (the limit) |" in table and "1.00x" in table
    assert "`gpu_resnet`" in table and "Skipped." in table
