"""nnlab.analysis.fairness: the per-group table is fairlearn's MetricFrame and agrees with a count
by hand; the threshold optimizer shrinks the disparity it is told to; data.sensitive refuses what
it cannot audit in one paragraph; a real run writes the audit to metrics.json, its files and
TensorBoard, scored with the weights the test used."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnlab.analysis.fairness import (
    audit_fairness,
    check_fit_rows,
    check_options,
    group_report,
    threshold_optimize,
)
from nnlab.data.arrays import ArrayDataset
from nnlab.data.credit import german_credit
from nnlab.data.datamodule import DataModule
from nnlab.data.sklearn import diabetes, digits, iris
from nnlab.errors import OptionError, UserError
from nnlab.runs.restore import load_run


def by_hand(y: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, float]]:
    """Each group's count, accuracy, selection rate, TPR and FPR, counted with plain numpy (a rate
    over no rows is 0, fairlearn's rule)."""

    def rate(hits: np.ndarray) -> float:
        return float(hits.mean()) if len(hits) else 0.0

    table = {}
    for g in sorted(set(groups.tolist())):
        m = groups == g
        yg, pg = y[m], pred[m]
        table[g] = {
            "count": float(m.sum()),
            "acc": rate(yg == pg),
            "selection_rate": rate(pg == 1),
            "tpr": rate(pg[yg == 1] == 1),
            "fpr": rate(pg[yg == 0] == 1),
        }
    return table


def biased_predictions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, scores (P(class 1)) and groups where group "a" gets scores 0.25 higher than "b"
    for the same label: a classifier biased in favour of "a"."""
    rng = np.random.default_rng(seed)
    groups = np.where(rng.random(n) < 0.4, "a", "b")
    y = (rng.random(n) < 0.6).astype(np.int64)
    scores = np.clip(0.25 + 0.35 * y + 0.25 * (groups == "a") + rng.normal(0, 0.15, n), 0, 1)
    return y, scores, groups


def test_group_table_equals_metricframe_and_a_count_by_hand() -> None:
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    groups = rng.choice(np.array(["x", "y", "z"]), 300, p=[0.5, 0.3, 0.2])
    y = (rng.random(300) < 0.5).astype(np.int64)
    y[groups == "z"] = 0  # group z has no positive row: its TPR is 0 by fairlearn's rule
    pred = np.where(rng.random(300) < 0.7, y, 1 - y)
    pred[groups == "x"] = np.where(rng.random((groups == "x").sum()) < 0.3, 1, pred[groups == "x"])  # x favoured

    report = group_report(y, pred, groups)
    hand = by_hand(y, pred, groups)
    assert set(report.by_group) == {"x", "y", "z"}
    for g, row in hand.items():
        assert report.by_group[g] == pytest.approx(row), g
    assert report.overall == pytest.approx(by_hand(y, pred, np.full(300, "all"))["all"])
    selection = [row["selection_rate"] for row in hand.values()]
    tpr, fpr = ([row[m] for row in hand.values()] for m in ("tpr", "fpr"))
    assert report.demographic_parity_difference == pytest.approx(max(selection) - min(selection))
    assert report.equalized_odds_difference == pytest.approx(max(max(tpr) - min(tpr), max(fpr) - min(fpr)))
    assert report.demographic_parity_difference > 0.1  # (x is favoured: the check above compares something)
    assert report.spread()["selection_rate"] == pytest.approx(report.demographic_parity_difference)

    frame = MetricFrame(
        metrics={
            "acc": accuracy_score,
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
        },
        y_true=y,
        y_pred=pred,
        sensitive_features=groups,
    )
    for g in ("x", "y", "z"):
        for m in ("acc", "selection_rate", "tpr", "fpr"):
            assert report.by_group[g][m] == pytest.approx(frame.by_group.loc[g, m]), (g, m)

    metrics = report.metrics("fairness")
    assert metrics["fairness/z/tpr"] == 0.0
    assert metrics["fairness/x/count"] == float((groups == "x").sum())
    assert metrics["fairness/overall/acc"] == pytest.approx(float((y == pred).mean()))
    assert metrics["fairness/demographic_parity_difference"] == report.demographic_parity_difference


@pytest.mark.parametrize(
    ("constraints", "disparity"),
    [("demographic_parity", "demographic_parity_difference"), ("equalized_odds", "equalized_odds_difference")],
)
def test_threshold_optimizer_shrinks_the_disparity_it_constrains(constraints: str, disparity: str) -> None:
    y_val, s_val, g_val = biased_predictions(3000, seed=1)
    y_test, s_test, g_test = biased_predictions(3000, seed=2)
    before = group_report(y_test, (s_test >= 0.5).astype(np.int64), g_test)
    pred = threshold_optimize(s_val, y_val, g_val, s_test, g_test, constraints, seed=0)
    after = group_report(y_test, pred, g_test)
    assert getattr(before, disparity) > 0.2
    assert getattr(after, disparity) < getattr(before, disparity) / 3
    assert set(np.unique(pred).tolist()) <= {0, 1}
    again = threshold_optimize(s_val, y_val, g_val, s_test, g_test, constraints, seed=0)
    assert np.array_equal(pred, again)  # randomized, but seeded


def test_threshold_optimizer_needs_each_test_group_in_val_with_both_classes() -> None:
    y = np.array([0, 1, 0, 1])
    with pytest.raises(UserError, match=r"group\(s\) c have test rows but no validation rows"):
        check_fit_rows(y, np.array(["a", "a", "b", "b"]), np.array(["a", "b", "c"]))
    with pytest.raises(UserError, match="those of group b are all of class 1.*data.val_fraction"):
        check_fit_rows(np.array([0, 1, 1, 1]), np.array(["a", "a", "b", "b"]), np.array(["a", "b"]))


def test_fairness_options_are_checked_with_a_suggestion() -> None:
    check_options("threshold_optimizer", "equalized_odds", "balanced_accuracy_score")
    with pytest.raises(
        OptionError, match="fairness.mitigation='treshold_optimizer'.*Did you mean 'threshold_optimizer'"
    ):
        check_options("treshold_optimizer", "demographic_parity", "accuracy_score")
    with pytest.raises(OptionError, match="fairness.constraints='equal_odds'.*Did you mean 'equalized_odds'"):
        check_options("none", "equal_odds", "accuracy_score")
    with pytest.raises(OptionError, match="fairness.objective"):
        check_options("none", "demographic_parity", "selection_rate")


# -- data.sensitive ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit() -> ArrayDataset:
    return german_credit()


def test_an_unknown_column_is_refused_with_a_suggestion_and_the_columns(credit: ArrayDataset) -> None:
    with pytest.raises(UserError) as info:
        DataModule(credit, sensitive="sexx")
    message = str(info.value)
    assert "data.sensitive=sexx: german_credit has no column 'sexx'. Did you mean 'sex'?" in message
    assert "Its columns: risk, sex, job, housing, saving_accounts, checking_account" in message
    with pytest.raises(UserError, match="Did you mean 'sex'"):
        DataModule(credit, sensitive="Sex")


def test_a_scikit_learn_table_offers_its_own_columns() -> None:
    with pytest.raises(UserError) as info:
        DataModule(iris(), sensitive="sex")
    assert "has no column 'sex'" in str(info.value)
    assert "Its columns: sepal length (cm), sepal width (cm), petal length (cm), petal width (cm)" in str(info.value)
    with pytest.raises(UserError, match="images or sequences, not a table.*data=german_credit"):
        DataModule(digits(), sensitive="sex")


def test_regression_and_multiclass_data_are_refused() -> None:
    with pytest.raises(UserError, match="data.sensitive=sex: .*is regression. Choose a binary classification"):
        DataModule(diabetes(), sensitive="sex")
    with pytest.raises(UserError, match="has 3 classes \\(setosa, versicolor, virginica\\)"):
        DataModule(iris(), sensitive="sepal length (cm)", sensitive_bins=[5.8])


def test_a_numeric_column_of_many_values_needs_bins(credit: ArrayDataset) -> None:
    with pytest.raises(UserError) as info:
        DataModule(credit, sensitive="age")
    message = str(info.value)
    assert "'age' of german_credit is a number with 53 distinct values" in message
    assert "data.sensitive_bins=[33]" in message  # its median, as an example edge
    assert "Columns with few values: sex, job, housing, saving_accounts, checking_account, purpose." in message

    data = DataModule(credit, sensitive="age", sensitive_bins=[25, 60])
    groups = np.concatenate([data.groups[s] for s in ("train", "val", "test")])
    ages = credit.columns["age"].astype(int)
    assert (groups == "<25").sum() == (ages < 25).sum() > 0
    assert (groups == "25-60").sum() == ((ages >= 25) & (ages < 60)).sum()
    assert (groups == ">=60").sum() == (ages >= 60).sum() > 0


def test_bins_are_checked(credit: ArrayDataset) -> None:
    with pytest.raises(OptionError, match=r"increasing order"):
        DataModule(credit, sensitive="age", sensitive_bins=[60, 25])
    with pytest.raises(UserError, match="'sex' of german_credit holds text \\(female, male\\)"):
        DataModule(credit, sensitive="sex", sensitive_bins=[1])
    with pytest.raises(UserError, match="every row of german_credit is in the one group '>=18'"):
        DataModule(credit, sensitive="age", sensitive_bins=[18])


def test_groups_follow_the_split_rows(credit: ArrayDataset) -> None:
    data = DataModule(credit, sensitive="sex", val_fraction=0.2, test_fraction=0.2, seed=3)
    sizes = {s: data.size(s) for s in ("train", "val", "test")}
    assert {s: len(g) for s, g in data.groups.items()} == sizes
    # The groups are those of the rows each split holds: the one-hot sex=female input (standardized)
    # is above its mean exactly for the female rows.
    female = data.feature_names.index("sex=female")
    for split in ("train", "val", "test"):
        x, _ = data.arrays(split)
        assert np.array_equal(x[:, female] > 0, data.groups[split] == "female"), split
    counts = {g: sum(int((data.groups[s] == g).sum()) for s in sizes) for g in ("female", "male")}
    assert counts == {"female": 310, "male": 690}


def test_a_column_dropped_from_the_features_still_groups_the_rows() -> None:
    data = DataModule(german_credit(drop=["sex"]), sensitive="sex")
    assert not any(name.startswith("sex") for name in data.feature_names)
    assert sorted(set(data.groups["test"].tolist())) == ["female", "male"]


# -- the audit of a run -----------------------------------------------------------------------------


def test_the_audit_without_mitigation_writes_its_files(credit: ArrayDataset, tmp_path: Path) -> None:
    """audit_fairness on parts built by hand (no training): its metric names, files, and that
    fairness.mitigation=none adds nothing under fairness/mitigated."""
    data = DataModule(credit, sensitive="sex")
    data.setup(torch.device("cpu"))
    torch.manual_seed(0)
    model = torch.nn.Linear(data.input_shape[0], 2)
    trainer = SimpleNamespace(module=model, ema=None, limit_eval_batches=None, epoch=3)
    metrics = audit_fairness(trainer, SimpleNamespace(model=model), data, None, tmp_path, mitigation="none", show=False)
    names = {
        f"fairness/{g}/{m}"
        for g in ("female", "male", "overall")
        for m in ("count", "acc", "selection_rate", "tpr", "fpr")
    }
    assert set(metrics) == names | {"fairness/demographic_parity_difference", "fairness/equalized_odds_difference"}
    x, y = data.arrays("test")
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(1).numpy()
    assert metrics["fairness/overall/acc"] == pytest.approx(float((pred == y).mean()))
    hand = by_hand(y, pred, data.groups["test"])
    assert metrics["fairness/female/selection_rate"] == pytest.approx(hand["female"]["selection_rate"])
    rows = list(csv.reader((tmp_path / "fairness.csv").open()))
    assert rows[0] == ["predictions", "sex", "count", "acc", "selection_rate", "tpr", "fpr"]
    assert [r[:3] for r in rows[1:]] == [
        ["network", "female", str(int(hand["female"]["count"]))],
        ["network", "male", str(int(hand["male"]["count"]))],
        ["network", "overall", str(len(y))],
        ["network", "max - min", ""],
    ]
    assert "| network | female |" in (tmp_path / "fairness.md").read_text()
    assert (tmp_path / "figures" / "fairness.png").stat().st_size > 1000


def test_a_run_audits_the_tested_weights_into_metrics_and_tensorboard(train_run, tmp_path: Path) -> None:
    """`nnlab-train data=german_credit data.sensitive=sex`, tiny, with an EMA of the weights (the
    test scores the best checkpoint's EMA): the audit's overall accuracy, TPR and FPR are the
    test's accuracy and per-class recalls, so it scored the same predictions."""
    run = train_run(
        [
            "data=german_credit",
            "data.sensitive=sex",
            "trainer.max_epochs=3",
            "trainer.limit_train_batches=null",
            "regularization.ema_decay=0.9",
        ],
        tmp_path,
    )
    m = run.metrics
    assert m["fairness/overall/acc"] == pytest.approx(m["test/acc"], abs=1e-12)
    assert m["fairness/overall/tpr"] == pytest.approx(m["test/recall/good"], abs=1e-6)
    assert 1 - m["fairness/overall/fpr"] == pytest.approx(m["test/recall/bad"], abs=1e-6)
    assert m["fairness/female/count"] + m["fairness/male/count"] == m["fairness/overall/count"] == 200
    for prefix in ("fairness", "fairness/mitigated"):
        for name in ("demographic_parity_difference", "equalized_odds_difference"):
            assert 0.0 <= m[f"{prefix}/{name}"] <= 1.0
    stored = json.loads((run.dir / "metrics.json").read_text())
    assert stored["fairness/mitigated/overall/acc"] == m["fairness/mitigated/overall/acc"]
    for name in ("fairness.csv", "fairness.md", "figures/fairness.png"):
        assert (run.dir / name).is_file(), name

    events = EventAccumulator(str(run.dir), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (
        "fairness/demographic_parity_difference",
        "fairness/female/selection_rate",
        "fairness/mitigated/male/tpr",
    ):
        assert tag in tags["scalars"], tag
    assert events.Scalars("fairness/demographic_parity_difference")[-1].value == pytest.approx(
        m["fairness/demographic_parity_difference"]
    )
    assert "fairness/table/text_summary" in tags["tensors"]
    text = events.Tensors("fairness/table/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "threshold_optimizer (demographic_parity)" in text
    assert "fairness/groups" in tags["images"]

    # The stored config (nnlab.data.credit's target, data.sensitive) passes the gate for configs
    # from elsewhere and rebuilds, as nnlab-eval and nnlab-predict do.
    restored = load_run(run.dir / "checkpoints" / "best.ckpt", device="cpu")
    assert restored.data.sensitive == "sex" and restored.data.class_names == ["bad", "good"]


def test_the_tradeoff_script_reads_a_sweep(tmp_path: Path) -> None:
    """scripts/fairness_tradeoff.py on a sweep folder of two seeds x two constraints: each seed's
    network once, each constraint's mitigation, means over the seeds, a figure."""
    import importlib.util
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "fairness_tradeoff.py"
    spec = importlib.util.spec_from_file_location("fairness_tradeoff", script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    trial = 0
    for seed, (acc, dp) in enumerate([(0.70, 0.20), (0.74, 0.10)]):
        for constraint, (m_acc, m_dp) in (("demographic_parity", (0.69, 0.02)), ("equalized_odds", (0.68, 0.04))):
            folder = tmp_path / str(trial)
            (folder / ".hydra").mkdir(parents=True)
            (folder / ".hydra" / "overrides.yaml").write_text(
                f"- seed={seed}\n- fairness.constraints={constraint}\n- experiment=fairness_credit\n"
            )
            (folder / "status.json").write_text(json.dumps({"status": "completed", "wall_s": 1.0}))
            metrics = {
                "fairness/overall/acc": acc,
                "fairness/demographic_parity_difference": dp,
                "fairness/equalized_odds_difference": 2 * dp,
                "fairness/mitigated/overall/acc": m_acc + seed / 100,
                "fairness/mitigated/demographic_parity_difference": m_dp,
                "fairness/mitigated/equalized_odds_difference": 2 * m_dp,
            }
            (folder / "metrics.json").write_text(json.dumps(metrics))
            trial += 1
    found = module.points(module.find_trials(tmp_path))
    assert set(found) == {"network", "demographic_parity", "equalized_odds"}
    assert found["network"] == {
        "0": {"acc": 0.70, "demographic_parity_difference": 0.20, "equalized_odds_difference": 0.40},
        "1": {"acc": 0.74, "demographic_parity_difference": 0.10, "equalized_odds_difference": 0.20},
    }
    assert found["equalized_odds"]["1"]["acc"] == pytest.approx(0.69)
    assert module.main([str(tmp_path), "--out", str(tmp_path / "fig.png")]) == 0
    table = (tmp_path / "fig.md").read_text()
    assert "| network | 2 | 0.7200 ± 0.0283 | 0.1500 ± 0.0707 | 0.3000 ± 0.1414 |" in table
    assert "| threshold_optimizer (demographic_parity) | 2 | 0.6950 ± 0.0071 | 0.0200 ± 0.0000 |" in table
    assert (tmp_path / "fig.png").stat().st_size > 10_000
