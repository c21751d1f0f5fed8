"""Combining the predictions of several trained models (an ensemble) into one.

Every function takes the members' outputs stacked along a first axis: `probs` of shape
(M, N, C) (M members, N rows, C classes; each row a probability vector) for classification,
`preds` of shape (M, N, D) for regression. The rules:

    mean      average the members' class probabilities, predict the argmax
              (regression: average the predictions)
    vote      each member votes for its argmax; the class with most votes wins. A tie is broken by
              the mean probability of the tied classes, then by the lowest class index
    stacking  a meta-model learns how much to trust each member: scikit-learn's
              LogisticRegression on the members' probabilities side by side, (N, M*C), fitted on
              the validation split (LinearRegression on the predictions, for regression)

Why averaging helps: members that err on different rows cancel each other's mistakes. For a
squared error the gain is exact: MSE(mean of members) = mean of members' MSEs - the members'
variance around their mean (the "ambiguity decomposition", Krogh & Vedelsby 1995), so the mean
is never worse than the average member and gains as much as the members disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnlab.errors import ConfigValueError, check_choice

CLASSIFICATION_COMBINERS = ("mean", "vote", "stacking")
REGRESSION_COMBINERS = ("mean", "stacking")  # a vote needs discrete answers


def mean_probabilities(probs: np.ndarray) -> np.ndarray:
    """(M, N, C) -> (N, C): the members' average class probabilities."""
    return np.asarray(probs, dtype=float).mean(axis=0)


def mean_vote(probs: np.ndarray) -> np.ndarray:
    """(M, N, C) -> (N,): the argmax of the average probabilities (soft voting)."""
    return mean_probabilities(probs).argmax(axis=1)


def vote_counts(probs: np.ndarray) -> np.ndarray:
    """(M, N, C) -> (N, C): how many members put each class first."""
    probs = np.asarray(probs)
    m, n, c = probs.shape
    counts = np.zeros((n, c), dtype=int)
    np.add.at(counts, (np.broadcast_to(np.arange(n), (m, n)), probs.argmax(axis=2)), 1)
    return counts


def majority_vote(probs: np.ndarray) -> np.ndarray:
    """(M, N, C) -> (N,): the class most members put first (hard voting).

    Ties (e.g. 2 members, 2 different answers) go to the tied class with the highest mean
    probability, and, when that ties too, to the lowest class index (numpy's argmax keeps the
    first maximum).
    """
    counts = vote_counts(probs)
    tied = counts == counts.max(axis=1, keepdims=True)
    return np.where(tied, mean_probabilities(probs), -np.inf).argmax(axis=1)


def side_by_side(outputs: np.ndarray) -> np.ndarray:
    """(M, N, K) -> (N, M*K): member 0's outputs, then member 1's, ...: the meta-model's features."""
    outputs = np.asarray(outputs, dtype=float)
    return outputs.transpose(1, 0, 2).reshape(outputs.shape[1], -1)


def fit_stacking(val_probs: np.ndarray, val_y: np.ndarray, c: float = 1.0) -> Any:
    """A LogisticRegression (multinomial, L2 penalty of strength 1/c) from the members' side-by-side
    validation probabilities to the validation labels. Fit it on rows the members were not
    trained on: on training rows every member looks right and the meta-model learns nothing."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=1000).fit(side_by_side(val_probs), np.asarray(val_y))


def stacking_predict(meta: Any, probs: np.ndarray) -> np.ndarray:
    """(M, N, C) -> (N,): the fitted meta-model's classes for new rows (its own labels, so a class
    missing from the validation split is never predicted)."""
    return np.asarray(meta.predict(side_by_side(probs)))


def fit_stacking_regression(val_preds: np.ndarray, val_y: np.ndarray) -> Any:
    """A LinearRegression from the members' side-by-side validation predictions to the targets."""
    from sklearn.linear_model import LinearRegression

    y = np.asarray(val_y, dtype=float)
    return LinearRegression().fit(side_by_side(val_preds), y.reshape(len(y), -1))


def combine_classification(method: str, val_probs: np.ndarray, val_y: np.ndarray, test_probs: np.ndarray) -> np.ndarray:
    """The ensemble's test-set classes by `method` (mean, vote, stacking); only stacking reads val."""
    check_choice("ensemble.combine", method, CLASSIFICATION_COMBINERS)
    if method == "mean":
        return mean_vote(test_probs)
    if method == "vote":
        return majority_vote(test_probs)
    return stacking_predict(fit_stacking(val_probs, val_y), test_probs)


def combine_regression(method: str, val_preds: np.ndarray, val_y: np.ndarray, test_preds: np.ndarray) -> np.ndarray:
    """The ensemble's (N, D) test-set predictions by `method` (mean, stacking)."""
    if method == "vote":
        raise ConfigValueError(
            "ensemble.combine lists 'vote', but this run is a regression: a vote needs discrete "
            "answers. Use ensemble.combine=[mean,stacking]."
        )
    check_choice("ensemble.combine", method, REGRESSION_COMBINERS)
    test_preds = np.asarray(test_preds, dtype=float)
    if method == "mean":
        return test_preds.mean(axis=0)
    return fit_stacking_regression(val_preds, val_y).predict(side_by_side(test_preds)).reshape(test_preds.shape[1:])


def classification_scores(pred: np.ndarray, y: np.ndarray, num_classes: int) -> dict[str, float]:
    """Accuracy and macro-F1 (over all `num_classes`, as nnlab's test metrics count them)."""
    from sklearn.metrics import f1_score

    pred, y = np.asarray(pred), np.asarray(y)
    return {
        "acc": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }


def regression_scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Mean squared error over rows and targets."""
    y = np.asarray(y, dtype=float)
    return {"mse": float(((np.asarray(pred, dtype=float).reshape(y.shape) - y) ** 2).mean())}
