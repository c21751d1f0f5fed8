"""Anomaly detection by score: ROC-AUC, PR-AUC, and a threshold chosen on validation data.

A detector gives each sample a score (an autoencoder: its reconstruction error), higher meaning
"more anomalous". Two numbers judge the ranking without any threshold:
  - ROC-AUC: the probability that a random anomaly scores higher than a random normal sample
    (ties count half); 0.5 is chance, 1 a perfect ranking.
  - PR-AUC (average precision): the mean precision at each anomaly's rank, sum_n (R_n - R_{n-1}) P_n;
    it falls with the share of anomalies, so it is the stricter number when they are rare.
To flag samples, a threshold is fixed on the validation split and then applied, unchanged, to the
test split, where precision, recall and F1 at that threshold are reported. scikit-learn is
imported on first use.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_RULES = ("f1", "quantile")


def choose_threshold(scores: np.ndarray, is_anomaly: np.ndarray, rule: str = "f1", quantile: float = 0.95) -> float:
    """The score above which a sample is flagged, chosen on validation data.

    - f1: the threshold that maximises F1 (of the anomaly class) on these samples. Uses their
      labels, so the validation split must contain some anomalies.
    - quantile: the `quantile` of the *normal* samples' scores, e.g. 0.95 flags about 5% of
      normal data (a chosen false-positive rate); needs no anomaly examples at all.
    """
    if rule == "quantile" or not is_anomaly.any():
        return float(np.quantile(scores[~is_anomaly], quantile))
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(is_anomaly, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])  # the last (P=1, R=0) point has no threshold


def anomaly_metrics(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC and PR-AUC of the scores, and precision/recall/F1 of `score >= threshold`."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    flagged = scores >= threshold
    p, r, f, _ = precision_recall_fscore_support(is_anomaly, flagged, average="binary", pos_label=True, zero_division=0)
    metrics = {"precision": float(p), "recall": float(r), "f1": float(f), "threshold": float(threshold)}
    if 0 < is_anomaly.sum() < len(is_anomaly):  # both kinds present: the rankings are defined
        metrics["roc_auc"] = float(roc_auc_score(is_anomaly, scores))
        metrics["pr_auc"] = float(average_precision_score(is_anomaly, scores))
    return metrics


def score_histogram(scores: np.ndarray, is_anomaly: np.ndarray, threshold: float):
    """A matplotlib figure: score distributions of normal and anomalous samples, and the threshold."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores[~is_anomaly], bins=bins, alpha=0.6, label=f"normal ({(~is_anomaly).sum()})", density=True)
    ax.hist(scores[is_anomaly], bins=bins, alpha=0.6, label=f"anomaly ({is_anomaly.sum()})", density=True)
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3g} (from val)")
    ax.set_xlabel("reconstruction error")
    ax.set_ylabel("density")
    ax.legend()
    return fig
