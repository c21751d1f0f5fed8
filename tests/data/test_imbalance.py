"""Imbalanced variants of a classification set (the imbalance edit), class-balanced sampling
(the balanced_sampling edit) and class-weighted losses."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nnlab.data import sklearn
from nnlab.data.datamodule import DataModule
from nnlab.data.edits.imbalance import Imbalance
from nnlab.data.edits.order import BalancedSampling
from nnlab.errors import ConfigValueError, OptionError
from nnlab.tasks.supervised import Supervised


@pytest.fixture(scope="module")
def digits():
    return sklearn.digits()


def test_imbalance_thins_training_classes_exponentially(digits) -> None:
    balanced = DataModule(digits, seed=0)
    skewed = DataModule(digits, edits=[Imbalance(0.1)], seed=0)
    before, after = np.array(balanced.class_counts), np.array(skewed.class_counts)
    expected = np.round(before * 0.1 ** (np.arange(10) / 9))
    assert np.abs(after - expected).max() <= 1
    assert after[0] == before[0] and after[9] == pytest.approx(0.1 * before[9], abs=1)
    # val and test are untouched, so scores stay comparable with the balanced run.
    assert skewed.size("val") == balanced.size("val") and skewed.size("test") == balanced.size("test")
    assert np.array_equal(skewed._arrays["test"][1], balanced._arrays["test"][1])


def test_balanced_sampling_balances_classes_and_is_seeded(digits) -> None:
    data = DataModule(digits, edits=[Imbalance(0.1), BalancedSampling()], seed=0)
    y = torch.from_numpy(data._arrays["train"][1])
    orders = [data.epoch_order(e) for e in range(5)]
    counts = torch.bincount(y[torch.cat(orders)], minlength=10).double()
    share = counts / counts.sum()
    assert (share - 0.1).abs().max() < 0.03  # every class ~1/10 of the draws
    assert torch.equal(data.epoch_order(3), orders[3])  # the same epoch draws the same rows
    assert not torch.equal(orders[0], orders[1])


def test_balanced_class_weights_and_loss() -> None:
    counts = [90, 10]
    task = Supervised(
        torch.nn.Linear(2, 2), partial(torch.optim.SGD, lr=0.1), class_counts=counts, class_weight="balanced"
    )
    # n / (K * n_c): 100 / (2 * 90) and 100 / (2 * 10)
    assert task.class_weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    logits, y = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]]), torch.tensor([0, 1, 1])
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), y]
    w = task.class_weights[y]
    assert task.loss(logits, y).item() == pytest.approx(((w * nll).sum() / w.sum()).item())
    assert task.loss(logits, y).item() == pytest.approx(F.cross_entropy(logits, y, weight=task.class_weights).item())


def test_class_weights_need_a_weighted_loss() -> None:
    with pytest.raises(ConfigValueError, match="class_weight=balanced"):
        Supervised(torch.nn.Linear(2, 2), None, class_counts=[1, 1], loss="kl_div", class_weight="balanced")


def test_imbalance_needs_classes() -> None:
    with pytest.raises(
        ConfigValueError, match="data_edit.imbalance works on class labels, but this dataset is regression"
    ):
        DataModule(sklearn.diabetes(), edits=[Imbalance(0.5)], stratify=False)


def test_balanced_sampling_needs_classes() -> None:
    with pytest.raises(ConfigValueError, match="data_edit.balanced_sampling draws rows by class.*regression"):
        DataModule(sklearn.diabetes(), edits=[BalancedSampling()], stratify=False)


@pytest.mark.parametrize("ratio", [0.0, 1.5])
def test_a_bad_imbalance_ratio_names_the_key(ratio: float) -> None:
    with pytest.raises(
        OptionError, match=rf"data_edit.imbalance.ratio={ratio} is out of range: it must be in \(0.0, 1.0\]"
    ):
        Imbalance(ratio)
