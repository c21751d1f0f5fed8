"""Metrics and losses against values computed by hand on small cases."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from helpers import Run
from nnlab.errors import ConfigValueError
from nnlab.tasks.metrics import classification_metrics, confusion_figure, regression_metrics
from nnlab.tasks.supervised import Supervised


def test_classification_metrics_by_hand() -> None:
    # true:  0 0 1 1 2 2 ; pred: 0 1 1 1 2 0
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    pred = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = F.one_hot(pred, 3).float()
    metrics, confusion = classification_metrics(logits, y, ["a", "b", "c"], detailed=True)
    assert metrics["acc"] == pytest.approx(4 / 6)
    # class a: tp 1, fp 1 (the last row), fn 1 -> p 1/2, r 1/2; b: tp 2, fp 1 -> p 2/3, r 1;
    # c: tp 1, fp 0, fn 1 -> p 1, r 1/2.
    assert metrics["precision/a"] == pytest.approx(0.5) and metrics["recall/a"] == pytest.approx(0.5)
    assert metrics["precision/b"] == pytest.approx(2 / 3) and metrics["recall/b"] == pytest.approx(1.0)
    assert metrics["precision/c"] == pytest.approx(1.0) and metrics["recall/c"] == pytest.approx(0.5)
    f1 = {"a": 0.5, "b": 0.8, "c": 2 / 3}
    for name, value in f1.items():
        assert metrics[f"f1/{name}"] == pytest.approx(value)
    assert metrics["macro_f1"] == pytest.approx(sum(f1.values()) / 3)
    assert "roc_auc" not in metrics  # multiclass
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


@pytest.mark.parametrize("seed", range(5))
def test_epoch_metrics_counted_in_torch_equal_scikit_learns(seed: int) -> None:
    """Random predictions over 7 classes, some never true or never predicted."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (200,), generator=g)  # classes 5 and 6 never true
    logits = torch.randn(200, 7, generator=g)
    logits[:, 3] -= 10  # class 3 (almost) never predicted
    metrics, confusion = classification_metrics(logits, y, None, detailed=False)
    pred = logits.argmax(1).numpy()
    assert metrics["acc"] == pytest.approx(accuracy_score(y.numpy(), pred), abs=1e-12)
    expected = f1_score(y.numpy(), pred, labels=list(range(7)), average="macro", zero_division=0)
    assert metrics["macro_f1"] == pytest.approx(expected, abs=1e-12)
    assert np.array_equal(confusion, confusion_matrix(y.numpy(), pred, labels=list(range(7))))


@pytest.mark.parametrize("seed", range(5))
def test_test_report_per_class_scores_equal_scikit_learns(seed: int) -> None:
    """The per-class precision, recall and F1 of the test report, counted from the confusion
    matrix, against scikit-learn's, zero_division=0 included: class 5 is never true, class 3 never
    predicted, class 6 neither."""
    from sklearn.metrics import precision_recall_fscore_support

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 5, (200,), generator=g)
    y[y == 3] = 4 if seed % 2 else 3  # (class 3 never true either, in odd seeds)
    logits = torch.randn(200, 7, generator=g)
    logits[:, 3] -= 10
    logits[:, 6] -= 10
    logits[0, 5] += 10  # class 5 predicted at least once, though never true
    metrics, _ = classification_metrics(logits, y, None, detailed=True)
    p, r, f, _ = precision_recall_fscore_support(
        y.numpy(), logits.argmax(1).numpy(), labels=list(range(7)), zero_division=0
    )
    for c in range(7):
        assert metrics[f"precision/{c}"] == p[c]
        assert metrics[f"recall/{c}"] == r[c]
        assert metrics[f"f1/{c}"] == f[c]
    assert (metrics["precision/5"], metrics["recall/5"], metrics["f1/5"]) == (0.0, 0.0, 0.0)
    assert metrics["macro_f1"] == pytest.approx(float(np.mean(f)), abs=1e-15)


def test_the_default_runs_report_imports_neither_scikit_learn_nor_pyplot(tmp_path) -> None:
    """The test report of a multiclass problem (the default experiment's) is counted without
    scikit-learn, and its confusion matrix drawn and logged without pyplot: their imports took
    0.8-1.2 s and 0.4-0.6 s of the ~6 s default run. Only ROC-AUC (binary) needs scikit-learn."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "from pathlib import Path\n"
        "from nnlab.engine.tensorboard import TensorBoardLogger, save_image\n"
        "from nnlab.tasks.metrics import classification_metrics, confusion_figure\n"
        "m, c = classification_metrics(torch.randn(50, 10), torch.randint(0, 10, (50,)), None, detailed=True)\n"
        f"logger = TensorBoardLogger({str(tmp_path)!r})\n"
        f"save_image(confusion_figure(c, list('abcdefghij')), Path({str(tmp_path)!r}) / 'c.png', logger, 't', 1)\n"
        "logger.close()\n"
        "print(sorted(m for m in ('sklearn', 'matplotlib.pyplot') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert (tmp_path / "c.png").stat().st_size > 1000
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    image = events.Images("t")[-1]
    assert (image.width, image.height) == (round((1.2 + 0.45 * 10) * 100), round((1.0 + 0.45 * 10) * 100))


def test_summary_metrics_leave_out_per_class_values() -> None:
    metrics, _ = classification_metrics(torch.eye(3), torch.tensor([0, 1, 2]), None, detailed=False)
    assert set(metrics) == {"acc", "macro_f1"}


def test_binary_roc_auc_by_hand() -> None:
    # P(class 1) = 0.1, 0.4, 0.35, 0.8 for labels 0, 0, 1, 1: of the 4 (pos, neg) pairs, 3 are
    # ranked correctly (0.35 < 0.4 is the miss), so AUC = 3/4.
    p1 = torch.tensor([0.1, 0.4, 0.35, 0.8])
    logits = torch.stack([torch.zeros(4), torch.log(p1 / (1 - p1))], 1)  # softmax(...)[:, 1] == p1
    metrics, _ = classification_metrics(logits, torch.tensor([0, 0, 1, 1]), None, detailed=False)
    assert metrics["roc_auc"] == pytest.approx(0.75)


def test_regression_metrics_by_hand() -> None:
    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    out = torch.tensor([[1.5], [2.0], [2.0], [5.0]])
    metrics = regression_metrics(out, y)
    assert metrics["mse"] == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert metrics["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert metrics["r2"] == pytest.approx(1 - 2.25 / 5.0)  # SST around mean 2.5 = 5


def task(loss: str, kind: str = "classification", **kwargs) -> Supervised:
    model = torch.nn.Linear(2, 3)
    return Supervised(model, partial(torch.optim.SGD, lr=0.1), kind=kind, loss=loss, **kwargs)


LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 0.2]])
Y = torch.tensor([0, 2])


def test_classification_losses_match_their_formulas() -> None:
    ce = -torch.log_softmax(LOGITS, 1)[torch.arange(2), Y].mean()
    assert task("cross_entropy").loss(LOGITS, Y) == pytest.approx(ce.item())
    assert task("nll").loss(LOGITS, Y) == pytest.approx(ce.item())
    # kl_div with a one-hot target equals cross-entropy (the target's entropy is 0).
    assert task("kl_div").loss(LOGITS, Y) == pytest.approx(ce.item(), rel=1e-5)
    # hinge: per sample sum_{j != y} max(0, 1 - z_y + z_j) / K
    hinge = ((0 + 0) / 3 + (max(0, 1 - 0.2 + 0.0) + max(0, 1 - 0.2 + 1.0)) / 3) / 2
    assert task("hinge").loss(LOGITS, Y) == pytest.approx(hinge)
    # bce: one sigmoid per class against the one-hot target, averaged over all B*K entries.
    target = F.one_hot(Y, 3).float()
    sig = torch.sigmoid(LOGITS)
    bce = -(target * torch.log(sig) + (1 - target) * torch.log(1 - sig)).mean()
    assert task("bce").loss(LOGITS, Y) == pytest.approx(bce.item(), rel=1e-5)


def test_label_smoothing_in_cross_entropy_and_kl() -> None:
    eps, k = 0.1, 3
    target = F.one_hot(Y, k).float() * (1 - eps) + eps / k
    smoothed_ce = -(target * torch.log_softmax(LOGITS, 1)).sum(1).mean()
    assert task("cross_entropy", label_smoothing=eps).loss(LOGITS, Y) == pytest.approx(smoothed_ce.item(), rel=1e-5)
    entropy = -(target * torch.log(target)).sum(1).mean()
    kl = task("kl_div", label_smoothing=eps).loss(LOGITS, Y)
    assert kl == pytest.approx((smoothed_ce - entropy).item(), rel=1e-5)


def test_regression_losses_match_their_formulas() -> None:
    out, y = torch.tensor([[0.0], [3.0]]), torch.tensor([1.0, 0.5])
    assert task("mse", "regression").loss(out, y) == pytest.approx((1 + 6.25) / 2)
    assert task("mae", "regression").loss(out, y) == pytest.approx((1 + 2.5) / 2)
    assert task("huber", "regression").loss(out, y) == pytest.approx((0.5 * 1 + (2.5 - 0.5)) / 2)


def test_a_loss_of_the_other_kind_is_rejected() -> None:
    with pytest.raises(ConfigValueError, match=r"task.loss.*regression.*Choose one of: mse, mae, huber"):
        task("cross_entropy", "regression")
    with pytest.raises(ConfigValueError, match="Did you mean 'hinge'"):
        task("hinge_loss")


def test_confusion_figure_draws_every_count() -> None:
    matrix = np.array([[3, 1], [0, 4]])
    fig = confusion_figure(matrix, ["no", "yes"])
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0", "1", "3", "4"]


def test_run_logs_the_confusion_matrix(digits_run: Run) -> None:
    """The test split's confusion matrix: a TensorBoard image and a PNG in the run folder."""
    assert (digits_run.dir / "figures" / "confusion_matrix.png").stat().st_size > 1000
    events = EventAccumulator(str(digits_run.dir), size_guidance={"images": 0})
    events.Reload()
    assert "test/confusion_matrix" in events.Tags()["images"]
    image = events.Images("test/confusion_matrix")[-1]
    assert image.width > 100 and image.height > 100
    assert math.isfinite(digits_run.metrics["test/macro_f1"])


# ---- step metrics: the trainer's running means ------------------------------------------------
def test_running_means_weight_batches_by_size_and_count_accuracy_at_read() -> None:
    from nnlab.engine.metrics import Accuracy, RunningMean

    window = RunningMean()
    scores = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]])  # predicts 0, 1, 0
    window.update({"loss": torch.tensor(1.0), "acc": Accuracy(scores[:2], torch.tensor([0, 0]))}, 2)
    window.update({"loss": torch.tensor(4.0), "acc": Accuracy(scores[2:], torch.tensor([0]))}, 1)
    means, count = window.pop()
    assert count == 3
    assert means["loss"] == pytest.approx((1.0 * 2 + 4.0 * 1) / 3)  # sizes differ: weighted
    assert means["acc"] == pytest.approx(2 / 3)  # 2 of the 3 rows right
    assert window.pop() == ({}, 0)  # reset
    for _ in range(4):  # equal sizes: the sum times the size, on the host
        window.update({"loss": torch.tensor(0.25)}, 64)
    assert window.pop() == ({"loss": 0.25}, 256)


def test_running_means_resume_to_the_same_bits() -> None:
    """A window checkpointed mid-way and restored sums the same values in the same order: the
    mean read after the resume equals, bit for bit, the one an uninterrupted window reads."""
    from nnlab.engine.metrics import Accuracy, RunningMean

    g = torch.Generator().manual_seed(0)
    steps = [
        (
            {
                "loss": torch.rand((), generator=g),
                "acc": Accuracy(torch.randn(64, 10, generator=g), torch.arange(64) % 10),
            },
            64,
        )
        for _ in range(10)
    ]
    whole = RunningMean()
    for values, n in steps:
        whole.update(values, n)
    first = RunningMean()
    for values, n in steps[:7]:
        first.update(values, n)
    resumed = RunningMean()
    resumed.load_state_dict(first.state_dict())
    for values, n in steps[7:]:
        resumed.update(values, n)
    assert resumed.pop() == whole.pop()


def test_running_means_count_and_sum_low_precision_metrics_exactly() -> None:
    """bfloat16 batch means (a bf16 run) are summed in float64, and a window's count of correct
    predictions stays exact past bfloat16's 256 (257 would round to 256)."""
    from nnlab.engine.metrics import Accuracy, RunningMean

    window = RunningMean()
    for n in (200, 57):  # all right: 257 correct
        scores = torch.zeros(n, 3, dtype=torch.bfloat16)
        scores[:, 1] = 1
        window.update({"loss": torch.tensor(0.5, dtype=torch.bfloat16), "acc": Accuracy(scores, torch.ones(n))}, n)
    means, count = window.pop()
    assert count == 257 and means == {"loss": 0.5, "acc": 1.0}


def test_running_means_read_an_older_checkpoints_sums() -> None:
    from nnlab.engine.metrics import RunningMean

    window = RunningMean()
    window.load_state_dict({"sums": {"loss": torch.tensor(6.0)}, "count": 4})
    window.update({"loss": torch.tensor(2.0)}, 2)
    assert window.pop() == ({"loss": (6.0 + 4.0) / 6}, 6)
