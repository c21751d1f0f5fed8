"""Classical baselines beside the network (nnlab.analysis.classical): scikit-learn fitted on the
run's own rows, the `auto` rule, the regression mapping, the errors, and what a real run and a
real sweep report of them."""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import log_loss, r2_score
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from helpers import CLI_TIMEOUT_S, CONFIG_DIR, TINY, cli_env, expected_metric_keys, run_cli
from nnlab.analysis.classical import (
    AUTO_MAX_VALUES,
    BASELINES,
    check_baselines,
    choose,
    compare_baselines,
    comparison,
    fit,
    markdown_table,
)
from nnlab.commands.train import compose_run
from nnlab.data.datamodule import DataModule
from nnlab.data.sklearn import diabetes, iris
from nnlab.data.timeseries import sine
from nnlab.errors import UserError
from nnlab.tasks.supervised import Supervised

ALL = list(BASELINES)


def supervised(kind: str = "classification") -> Supervised:
    """A task that predicts the data's targets (its model is never trained here)."""
    return Supervised(nn.Linear(1, 1), functools.partial(torch.optim.SGD, lr=0.1), kind=kind)


@pytest.fixture(scope="module")
def iris_data() -> DataModule:
    return DataModule(iris(), val_fraction=0.15, test_fraction=0.2, seed=3)


@pytest.fixture(scope="module")
def diabetes_data() -> DataModule:
    return DataModule(diabetes(), seed=3)


def flat_rows(data: DataModule, split: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = data.arrays(split)
    return x.reshape(len(x), -1), y


# -- scores: scikit-learn by hand on data.arrays ------------------------------------------------


def test_classification_scores_are_sklearns_on_the_networks_rows(iris_data: DataModule) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    metrics = compare_baselines(ALL, iris_data, supervised(), {}, None, seed=3)
    x, y = flat_rows(iris_data, "train")
    by_hand = {
        "logistic": LogisticRegression(max_iter=1000, random_state=3),
        "random_forest": RandomForestClassifier(random_state=3),
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=3),
    }
    for name, model in by_hand.items():
        model.fit(x, y)
        ours, _ = fit(name, iris_data, seed=3)
        for split in ("val", "test"):
            xs, ys = flat_rows(iris_data, split)
            assert np.array_equal(ours.predict(xs), model.predict(xs)), (name, split)  # the same model
            proba = model.predict_proba(xs)
            assert metrics[f"baselines/{name}/{split}/acc"] == pytest.approx((model.predict(xs) == ys).mean())
            expected_loss = log_loss(ys, np.clip(proba, 1e-15, None), labels=[0, 1, 2])
            assert metrics[f"baselines/{name}/{split}/loss"] == pytest.approx(expected_loss, rel=1e-6)
        assert metrics[f"baselines/{name}/fit_s"] > 0 and metrics[f"baselines/{name}/predict_s"] > 0
    names = {k.split("/")[1] for k in metrics}
    assert names == set(ALL)
    assert {k.split("/", 2)[2] for k in metrics} == {
        *(f"{s}/{m}" for s in ("val", "test") for m in ("loss", "acc", "macro_f1")),
        "fit_s",
        "predict_s",
    }


def test_regression_maps_logistic_to_ridge_and_scores_in_the_networks_units(diabetes_data: DataModule) -> None:
    """The targets stay standardized as the network sees them (data.standardize_target), so the
    baselines' mse and r2 sit beside the network's test/mse and test/r2."""
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.linear_model import Ridge

    assert diabetes_data.y_scale is not None  # standardized
    kinds = {name: type(fit(name, diabetes_data, seed=0)[0]) for name in ALL}
    assert kinds == {
        "logistic": Ridge,
        "random_forest": RandomForestRegressor,
        "hist_gradient_boosting": HistGradientBoostingRegressor,
    }
    metrics = compare_baselines(["logistic"], diabetes_data, supervised("regression"), {}, None, seed=0)
    x, y = flat_rows(diabetes_data, "train")
    xt, yt = flat_rows(diabetes_data, "test")
    pred = Ridge(alpha=1.0).fit(x, y).predict(xt)
    assert metrics["baselines/logistic/test/r2"] == pytest.approx(r2_score(yt, pred), abs=1e-5)
    assert metrics["baselines/logistic/test/mse"] == pytest.approx(np.mean((pred - yt) ** 2), rel=1e-5)
    assert metrics["baselines/logistic/test/loss"] == metrics["baselines/logistic/test/mse"]
    assert abs(yt.mean()) < 0.5 and metrics["baselines/logistic/test/mse"] < 2  # not raw units (~150)


def test_several_targets_fit_at_once() -> None:
    """A forecast horizon (y of shape (N, 8)): gradient boosting fits one model per target."""
    data = DataModule(sine(n_series=200, seed=0), stratify=False, standardize_target=False, seed=0)
    assert data.arrays("train")[1].shape[1] == 8
    metrics = compare_baselines(ALL, data, supervised("regression"), {}, None, seed=0)
    assert type(fit("hist_gradient_boosting", data, 0)[0]).__name__ == "MultiOutputRegressor"
    assert all(np.isfinite(metrics[f"baselines/{n}/test/r2"]) for n in ALL)


# -- which baselines a run fits -----------------------------------------------------------------


def fake_rows(rows: int, shape: tuple[int, ...], kind: str = "classification", tokenizer: object = None):
    """A data module's face without its memory: zero-stride rows of any size."""
    x = np.broadcast_to(np.float32(0), (rows, *shape))
    return SimpleNamespace(kind=kind, tokenizer=tokenizer, arrays=lambda split: (x, np.zeros(rows)))


def test_auto_fits_all_three_on_small_sets_and_none_on_large_ones(caplog: pytest.LogCaptureFixture) -> None:
    task = supervised()
    assert choose("auto", fake_rows(1257, (1, 8, 8)), task) == ALL  # digits
    assert choose("auto", fake_rows(3600, (1, 40)), task) == ALL  # mnist1d
    with caplog.at_level(logging.INFO, logger="nnlab.analysis.classical"):
        assert choose("auto", fake_rows(54_000, (1, 28, 28)), task) == []  # MNIST
    assert "Baselines: none" in caplog.text and "54000 rows x 784" in caplog.text
    caplog.clear()
    # A list always runs, with a note on the time it may take.
    with caplog.at_level(logging.INFO, logger="nnlab.analysis.classical"):
        assert choose(["random_forest"], fake_rows(54_000, (1, 28, 28)), task) == ["random_forest"]
    assert "may take minutes" in caplog.text
    just_over = AUTO_MAX_VALUES // 10 + 1
    assert choose("auto", fake_rows(just_over, (10,)), task) == []
    assert choose("auto", fake_rows(just_over - 1, (10,)), task) == ALL


@pytest.mark.parametrize(
    ("data", "task", "reason"),
    [
        (fake_rows(100, (5,), tokenizer=object()), supervised(), "token ids"),
        (fake_rows(100, (5,), kind="language_model"), supervised(), "language_model data"),
        (SimpleNamespace(kind="classification"), supervised(), "environment"),  # no arrays: an env
        (fake_rows(100, (5,)), object(), "does not train the network to predict"),  # an autoencoder, a GAN, a SOM
    ],
)
def test_auto_skips_what_baselines_cannot_stand_beside_and_a_list_says_why(data, task, reason: str) -> None:
    assert choose("auto", data, task) == []
    assert check_baselines("auto", data, task) is None  # (the check a run can make before training)
    for check in (choose, check_baselines):
        with pytest.raises(UserError, match=reason) as e:
            check(["logistic"], data, task)
        assert "baselines=[logistic]" in str(e.value) and "baselines=[]" in str(e.value)
        assert "\n" not in str(e.value)  # one paragraph


def test_names_are_checked_and_none_means_none() -> None:
    data, task = fake_rows(100, (5,)), supervised()
    with pytest.raises(UserError, match="'logistc' is not a baseline. Did you mean 'logistic'?") as e:
        choose(["logistc"], data, task)
    assert all(name in str(e.value) for name in ALL)
    with pytest.raises(UserError, match="3 is not a baseline"):
        choose([3], data, task)
    assert choose("random_forest", data, task) == ["random_forest"]  # one name, not in a list
    assert choose(["logistic", "logistic"], data, task) == ["logistic"]
    assert choose([], data, task) == choose(None, data, task) == []


def test_a_training_split_that_cannot_be_fitted_skips_that_baseline(caplog: pytest.LogCaptureFixture) -> None:
    """One class in the training rows: logistic regression refuses, the run's results still count."""
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    y = np.zeros(40, dtype=np.int64)
    data = SimpleNamespace(kind="classification", tokenizer=None, num_classes=2, arrays=lambda split: (x, y))
    with caplog.at_level(logging.WARNING):
        metrics = compare_baselines(["logistic"], data, supervised(), {}, None, seed=0)
    assert metrics == {} and "could not be fitted" in caplog.text


def test_the_comparison_puts_the_network_first() -> None:
    metrics = {"val/acc": 0.9, "test/acc": 0.8, "baselines/random_forest/val/acc": 0.7}
    metrics |= {"baselines/random_forest/test/acc": 0.6, "baselines/random_forest/fit_s": 1.0}
    metrics |= {"baselines/random_forest/predict_s": 0.5, "baselines/logistic/test/acc": 0.5}
    metric, rows = comparison(metrics, network_s=3.0)
    assert metric == "acc"
    assert [(r.model, r.val, r.test, r.seconds) for r in rows] == [
        ("network", 0.9, 0.8, 3.0),
        ("logistic", None, 0.5, None),  # (catalogue order)
        ("random_forest", 0.7, 0.6, 1.5),
    ]
    assert markdown_table(metric, rows).splitlines()[2:5] == [
        "| network | 0.9000 | 0.8000 | 3.00 |",
        "| logistic |  | 0.5000 |  |",
        "| random_forest | 0.7000 | 0.6000 | 1.50 |",
    ]
    assert comparison({"test/r2": 0.5, "baselines/logistic/test/r2": 0.4})[0] == "r2"


# -- a real run, k-fold, and a sweep's report --------------------------------------------------


def test_the_default_run_fits_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`nnlab-train` with no overrides: baselines=auto on digits, which auto takes. The tests turn
    them off through NNLAB_BASELINES (helpers.py), the default's one other source."""
    monkeypatch.delenv("NNLAB_BASELINES")
    assert compose_run([], tmp_path).baselines == "auto"
    monkeypatch.setenv("NNLAB_BASELINES", "[logistic]")
    assert compose_run([], tmp_path).baselines == ["logistic"]
    assert choose("auto", fake_rows(1257, (1, 8, 8)), supervised()) == ALL  # digits' training split
    for debug in ("default", "overfit"):  # the quick checks leave them out
        assert OmegaConf.load(CONFIG_DIR / "debug" / f"{debug}.yaml").baselines == []


def test_a_real_run_reports_them_in_metrics_json_the_table_the_log_and_tensorboard(
    train_run, tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    """A tiny run of the default experiment (digits) with `auto` (the helpers turn them off)."""
    with caplog.at_level(logging.INFO, logger="nnlab.analysis.classical"):
        run = train_run(["baselines=auto"], tmp_path)
    printed = capsys.readouterr().out
    metrics = json.loads((run.dir / "metrics.json").read_text())
    own = {k for k in metrics if not k.startswith("baselines/")}
    assert own == expected_metric_keys("classification", [str(c) for c in range(10)])
    for name in ALL:
        for split in ("val", "test"):
            assert {f"baselines/{name}/{split}/{m}" for m in ("loss", "acc", "macro_f1")} <= set(metrics)
        assert metrics[f"baselines/{name}/fit_s"] > 0
        # One log line each, with its scores and time.
        (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"Baseline {name} ")]
        assert f"test loss {metrics[f'baselines/{name}/test/loss']:.4f} acc" in line and "fit " in line

    # The final table: the network and each baseline, val and test acc; the baselines' keys are
    # not rows of the metrics table above it.
    assert "baselines/" not in printed[: printed.index("network vs classical baselines")]
    table = printed[printed.index("network vs classical baselines") :]
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") == 5}
    assert set(rows) == {"network", *ALL}
    for name, prefix in [("network", ""), *((n, f"baselines/{n}/") for n in ALL)]:
        cells = [c.strip() for c in rows[name].split("│")[2:5]]
        assert cells[:2] == [f"{metrics[f'{prefix}{s}/acc']:.4f}" for s in ("val", "test")]
        assert float(cells[2]) > 0  # seconds

    # TensorBoard: the scores as scalars at the run's last epoch, the table in the Text tab.
    events = EventAccumulator(str(run.dir))
    events.Reload()
    for name in ALL:
        for split in ("val", "test"):
            (point,) = events.Scalars(f"baselines/{name}/{split}/acc")
            assert point.step == 1 and point.value == pytest.approx(metrics[f"baselines/{name}/{split}/acc"])
    (text,) = events.Tensors("baselines/comparison/text_summary")
    markdown = text.tensor_proto.string_val[0].decode()
    assert markdown.startswith("| model | val acc | test acc | time s |")
    assert f"| random_forest | {metrics['baselines/random_forest/val/acc']:.4f} |" in markdown


def test_k_fold_averages_the_baselines_over_the_folds(train_run, tmp_path: Path) -> None:
    run = train_run(["data=iris", "data_edit=kfold", "data_edit.kfold.folds=3", "baselines=[logistic]"], tmp_path)
    key = "baselines/logistic/test/acc"
    folds = [run.metrics[f"fold_{i}/{key}"] for i in range(3)]
    assert run.metrics[key] == pytest.approx(np.mean(folds))
    assert run.metrics[f"{key}_std"] == pytest.approx(np.std(folds, ddof=1))
    for i in range(3):
        fold = json.loads((tmp_path / f"fold_{i}" / "metrics.json").read_text())
        assert fold[key] == run.metrics[f"fold_{i}/{key}"]


def test_the_sweep_report_shows_the_best_baseline(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", "data=iris", "optimizer.lr=0.01,0.001", *TINY, "trainer.summary=false"]
    done = run_cli([*args, "baselines=[logistic,random_forest]", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}
    best = min(metrics, key=lambda t: metrics[t]["val/loss"])
    losses = {n: metrics[best][f"baselines/{n}/val/loss"] for n in ("logistic", "random_forest")}
    winner = min(losses, key=losses.get)
    expected = f"best baseline on its split: {winner} val/loss = {losses[winner]:.4f}"

    shown = subprocess.run(
        [sys.executable, "-m", "nnlab.commands.report", str(sweep)],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"best trial {best}: val/loss = {metrics[best]['val/loss']:.4f}; {expected}" in shown.stdout
    assert expected in (sweep / "report.md").read_text()
