"""Metrics over a whole split, from the collected predictions.

Computed once per evaluation from all of a split's outputs (not averaged over batches), so
F1, ROC-AUC and R^2 are exact. Accuracy, macro-F1 and the test report's per-class precision,
recall and F1 all come from one confusion matrix counted with torch, in scikit-learn's
definitions (`precision_recall_fscore_support(..., zero_division=0)`; tests check the values
are the same): scikit-learn's checks of its inputs cost a noticeable share of a small model's
epoch at every evaluation, and importing `sklearn.metrics` a noticeable share of a short run.
ROC-AUC (binary problems) still comes from scikit-learn, imported only then.
"""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, class_names: list[str] | None, detailed: bool):
    """Accuracy and macro-F1; with `detailed`, per-class precision/recall/F1 too.

    ROC-AUC is reported for binary problems (score = softmax probability of class 1).
    Returns (metrics, confusion matrix as a (K, K) array with true classes as rows).
    """
    k = logits.shape[1]
    pred = logits.argmax(1)
    confusion = confusion_counts(pred, y, k)
    metrics = {"acc": float(confusion.trace() / max(confusion.sum(), 1)), "macro_f1": macro_f1(confusion)}
    true = y.cpu().numpy() if k == 2 else None
    if true is not None and len(np.unique(true)) == 2:  # a binary problem with both classes present
        from sklearn.metrics import roc_auc_score

        prob1 = torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()
        metrics["roc_auc"] = float(roc_auc_score(true, prob1))
    if detailed:
        names = class_names or [str(c) for c in range(k)]
        p, r, f = per_class_scores(confusion)
        for i, name in enumerate(names):
            metrics[f"precision/{name}"] = float(p[i])
            metrics[f"recall/{name}"] = float(r[i])
            metrics[f"f1/{name}"] = float(f[i])
    return metrics, confusion


def confusion_counts(pred: torch.Tensor, true: torch.Tensor, k: int) -> np.ndarray:
    """The (k, k) confusion matrix (rows: true class, columns: predicted), counted on the device."""
    return torch.bincount(true.long() * k + pred.long(), minlength=k * k).view(k, k).cpu().numpy()


def per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (index = class): precision TP / (TP + FP), recall TP / (TP + FN) and
    F1 = 2 TP / (2 TP + FP + FN), each 0 where its denominator is 0: scikit-learn's
    `precision_recall_fscore_support(..., zero_division=0)` over all k labels."""
    tp = confusion.diagonal().astype(np.float64)
    predicted, true = confusion.sum(0), confusion.sum(1)  # TP + FP, TP + FN
    precision = tp / np.maximum(predicted, 1)  # (a zero denominator means TP = 0 too: the score is 0)
    recall = tp / np.maximum(true, 1)
    f1 = 2 * tp / np.maximum(predicted + true, 1)
    return precision, recall, f1


def macro_f1(confusion: np.ndarray) -> float:
    """Mean over classes of F1, 0 for a class never true nor predicted (scikit-learn's
    f1_score(average="macro", zero_division=0) over all k labels)."""
    return float(per_class_scores(confusion)[2].mean())


def regression_metrics(out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """MSE, MAE and R^2 = 1 - SSE/SST (SST around the split's own mean; averaged over targets)."""
    err = out.view_as(y) - y
    sse = err.pow(2).sum(0)
    sst = (y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    values = torch.stack([err.pow(2).mean(), err.abs().mean(), (1 - sse / sst).mean()]).tolist()
    return dict(zip(("mse", "mae", "r2"), values))


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = "confusion matrix"):
    """A matplotlib figure of a confusion matrix: counts in each cell, rows = true class. Made
    without pyplot (a slow import, and its figures must be closed): nothing to close."""
    from matplotlib.figure import Figure

    k = len(class_names)
    fig = Figure(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k), dpi=100)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=90 if k > 6 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if matrix[i, j] > high else "black",
            )
    fig.tight_layout()
    return fig
