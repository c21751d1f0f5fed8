"""Metrics over a whole split, computed with scikit-learn from the collected predictions.

Computed once per evaluation from all of a split's outputs (not averaged over batches), so
F1, ROC-AUC and R^2 are exact. scikit-learn is imported on first use.
"""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, class_names: list[str] | None, detailed: bool):
    """Accuracy and macro-F1; with `detailed`, per-class precision/recall/F1 too.

    ROC-AUC is reported for binary problems (score = softmax probability of class 1).
    Returns (metrics, confusion matrix as a (K, K) array with true classes as rows).
    """
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

    k = logits.shape[1]
    labels = list(range(k))
    names = class_names or [str(c) for c in labels]
    pred = logits.argmax(1).cpu().numpy()
    true = y.cpu().numpy()
    metrics = {
        "acc": float((pred == true).mean()),
        "macro_f1": float(f1_score(true, pred, labels=labels, average="macro", zero_division=0)),
    }
    if k == 2 and len(np.unique(true)) == 2:
        prob1 = torch.softmax(logits.float(), 1)[:, 1].cpu().numpy()
        metrics["roc_auc"] = float(roc_auc_score(true, prob1))
    if detailed:
        p, r, f, _ = precision_recall_fscore_support(true, pred, labels=labels, zero_division=0)
        for i, name in enumerate(names):
            metrics[f"precision/{name}"] = float(p[i])
            metrics[f"recall/{name}"] = float(r[i])
            metrics[f"f1/{name}"] = float(f[i])
    return metrics, confusion_matrix(true, pred, labels=labels)


def regression_metrics(out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """MSE, MAE and R^2 = 1 - SSE/SST (SST around the split's own mean; averaged over targets)."""
    err = out.view_as(y) - y
    sse = err.pow(2).sum(0)
    sst = (y - y.mean(0)).pow(2).sum(0).clamp_min(1e-12)
    values = torch.stack([err.pow(2).mean(), err.abs().mean(), (1 - sse / sst).mean()]).tolist()
    return dict(zip(("mse", "mae", "r2"), values))


def confusion_figure(matrix: np.ndarray, class_names: list[str], title: str = "confusion matrix"):
    """A matplotlib figure of a confusion matrix: counts in each cell, rows = true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.45 * k, 1.0 + 0.45 * k), dpi=100)
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
