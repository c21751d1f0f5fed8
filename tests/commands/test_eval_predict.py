"""nnlab-eval and nnlab-predict: a trained run rebuilt from its checkpoint scores and predicts
exactly as the run itself did."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_command, train_tiny
from nnlab.commands.predict import read_inputs
from nnlab.errors import UserError
from nnlab.runs.restore import load_run


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.ckpt of a short digits MLP run (2 epochs of 20 steps), with its metrics.json beside."""
    run = train_tiny(
        ["data=digits", "trainer.max_epochs=2", "trainer.limit_train_batches=null"], tmp_path_factory.mktemp("run")
    )
    return run.dir / "checkpoints" / "best.ckpt"


def command(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_command(name, args, cwd)


def run_metrics(ckpt: Path) -> dict[str, float]:
    return json.loads((ckpt.parent.parent / "metrics.json").read_text())


def test_eval_reproduces_the_runs_test_metrics(digits_ckpt: Path, tmp_path: Path) -> None:
    result = command("eval", [f"ckpt_path={digits_ckpt}", f"hydra.run.dir={tmp_path / 'eval'}"], tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    trained = run_metrics(digits_ckpt)
    for key in ("test/acc", "test/loss", "test/macro_f1", "test/f1/3"):
        assert metrics[key] == pytest.approx(trained[key], abs=1e-6), key
    assert (tmp_path / "eval" / "figures" / "test_confusion_matrix.png").is_file()
    assert list((tmp_path / "eval").glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "eval" / "status.json").read_text())["status"] == "completed"


def test_eval_on_another_split_and_another_dataset_of_the_same_shape(digits_ckpt: Path) -> None:
    from hydra import compose, initialize_config_module

    run = load_run(digits_ckpt, device="cpu")
    val = run.task.evaluate(run.data.eval_batches("val"))
    assert val["acc"] == pytest.approx(run_metrics(digits_ckpt)["val/acc"], abs=1e-6)

    with initialize_config_module("nnlab.configs", version_base="1.3"):
        other = compose("eval", overrides=["ckpt_path=x", "data=digits", "data.test_fraction=0.5"])
    other_run = load_run(digits_ckpt, data=other.data, device="cpu")
    assert other_run.data.size("test") == pytest.approx(1797 * 0.5, abs=2)
    assert 0.5 < other_run.task.evaluate(other_run.data.eval_batches("test"))["acc"] <= 1.0


def test_eval_refuses_a_dataset_the_model_does_not_fit(digits_ckpt: Path, tmp_path: Path) -> None:
    result = command("eval", [f"ckpt_path={digits_ckpt}", "data=iris"], tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.stderr
    assert "do not fit the model" in result.stderr and "nnlab.data.sklearn.iris" in result.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ckpt_path=nowhere.ckpt"], "Checkpoint not found: nowhere.ckpt"),
        (["split=holdout"], "split='holdout'"),
    ],
)
def test_eval_errors_name_the_key(digits_ckpt: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    full = args if args[0].startswith("ckpt_path") else [f"ckpt_path={digits_ckpt}", *args]
    result = command("eval", full, tmp_path)
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def raw_test_rows(ckpt: Path) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The run's test rows in the dataset's raw units (its standardization undone), their labels,
    and the model's outputs on them as the run computes them."""
    run = load_run(ckpt, device="cpu")
    x, y = next(run.data.eval_batches("test"))
    mean, std = run.data.x_scale
    raw = x.numpy() * std + mean
    with torch.no_grad():
        return raw, y.numpy(), run.model(x)


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_predict_matches_the_model_on_raw_rows(digits_ckpt: Path, tmp_path: Path, suffix: str) -> None:
    raw, labels, logits = raw_test_rows(digits_ckpt)
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        header = ",".join(f"px{i}" for i in range(64))
        np.savetxt(path, raw.reshape(len(raw), -1), delimiter=",", header=header, comments="", fmt="%.9g")
    else:
        np.save(path, raw)  # (N, 1, 8, 8)
    out = tmp_path / "predict"
    result = command("predict", [f"ckpt_path={digits_ckpt}", f"input={path}", f"hydra.run.dir={out}"], tmp_path)
    assert result.returncode == 0, result.stderr

    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(raw)
    predicted = np.array([int(r["prediction"]) for r in rows])
    assert np.array_equal(predicted, logits.argmax(1).numpy())
    probs = np.array([[float(r[f"p_{c}"]) for c in range(10)] for r in rows])
    assert np.allclose(probs, torch.softmax(logits, 1).numpy(), atol=1e-5)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (predicted == labels).mean() == pytest.approx(run_metrics(digits_ckpt)["test/acc"], abs=1e-9)
    assert json.loads((out / "metrics.json").read_text())["rows"] == len(raw)


@pytest.mark.slow  # (moved out of the default suite to keep it near 10 minutes)
def test_predict_regression_in_the_targets_units(tmp_path: Path) -> None:
    run = train_tiny(["data=diabetes", "model=mlp"], tmp_path / "run")
    restored = load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")
    x, _ = next(restored.data.eval_batches("test"))
    mean, std = restored.data.x_scale
    np.save(tmp_path / "rows.npy", x.numpy() * std + mean)
    out = tmp_path / "predict"
    ckpt = run.dir / "checkpoints" / "best.ckpt"
    args = [f"ckpt_path={ckpt}", f"input={tmp_path / 'rows.npy'}", f"hydra.run.dir={out}"]
    result = command("predict", args, tmp_path)
    assert result.returncode == 0, result.stderr
    with open(out / "predictions.csv") as f:
        values = np.array([float(r["prediction"]) for r in csv.DictReader(f)])
    with torch.no_grad():
        expected = restored.data.untransform_target(restored.model(x).numpy().reshape(-1))
    assert np.allclose(values, expected, rtol=1e-5, atol=1e-3)
    assert 20 < values.mean() < 350  # disease progression units, not z-scores


@pytest.mark.parametrize(
    ("content", "suffix", "needle"),
    [
        ("1,2,3\n4,5,6\n", ".csv", "has 3 features per row, but the model takes 64"),
        ("1,2\n3\n", ".csv", "rows have different numbers of values"),
        ("a,b\n1,x\n", ".csv", "non-numeric value 'x'"),
        ("", ".csv", "has no data rows"),
        (None, ".npy", "has 10 features per row, but the model takes 64"),
        ("1,2", ".txt", "unknown format '.txt'"),
    ],
)
def test_predict_rejects_bad_input_files(tmp_path: Path, content: str | None, suffix: str, needle: str) -> None:
    path = tmp_path / f"in{suffix}"
    if content is None:
        np.save(path, np.zeros((4, 10)))
    else:
        path.write_text(content)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")) as e:
        read_inputs(path, (1, 8, 8))
    assert str(path) in str(e.value)


def test_predict_cli_wrong_feature_count_is_one_paragraph(digits_ckpt: Path, tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text("1,2,3\n")
    result = command("predict", [f"ckpt_path={digits_ckpt}", f"input={tmp_path / 'rows.csv'}"], tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1
    assert "takes 64" in result.stderr


@pytest.mark.parametrize("content", [None, b"junk", b""])
def test_eval_without_a_readable_checkpoint_is_one_paragraph(tmp_path: Path, content: bytes | None) -> None:
    args = []
    if content is not None:
        (tmp_path / "bad.ckpt").write_bytes(content)
        args = [f"ckpt_path={tmp_path / 'bad.ckpt'}"]
    result = command("eval", args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1
    expected = "ckpt_path is not set" if content is None else "Could not read checkpoint"
    assert expected in result.stderr
