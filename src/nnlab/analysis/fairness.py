"""Fairness audit of a binary classifier's test predictions, per group of `data.sensitive=<column>`,
and one mitigation: fairlearn's ThresholdOptimizer (Hardt, Price & Srebro, 2016).

    nnlab-train data=german_credit data.sensitive=sex

After the test, with the weights the test scored (`trainer.test`: the best checkpoint, or the
last; the EMA's average when regularization.ema_decay is set), the network predicts the test rows
once more. The positive class is class 1, the second class name in sorted order ("good" credit
risk: the loan is granted), so a row is *selected* when the network predicts class 1. Per group,
and overall (fairlearn's `MetricFrame`):

  - count: test rows of the group;
  - acc: share of correct predictions;
  - selection_rate: P(pred = 1), the share granted;
  - tpr: true positive rate P(pred = 1 | y = 1) (0 for a group with no positive row, fairlearn's rule);
  - fpr: false positive rate P(pred = 1 | y = 0) (0 for a group with no negative row).

and two disparities, 0 when every group is treated alike:

  - demographic_parity_difference: max - min of the groups' selection rates;
  - equalized_odds_difference: the larger of max - min of their TPRs and of their FPRs.

Mitigation (`fairness.mitigation: threshold_optimizer`): a threshold on the network's P(class 1)
per group, chosen on the validation rows so that the constraint (`fairness.constraints`:
demographic_parity equalizes selection rates, equalized_odds TPRs and FPRs) holds while the
objective (`fairness.objective`, accuracy by default) is as high as it can be. Where no single
threshold meets the constraint, fairlearn mixes two at random per row, so its predictions are
randomized (seeded with the run's seed). The network's weights do not change: the mitigation
post-processes its scores, and it needs the group of every row when it predicts. Its test
predictions are scored like the network's, under `fairness/mitigated/`: the trade-off is the
accuracy lost against the disparity removed.

Outputs: metrics.json (`fairness/<group>/<metric>`, `fairness/overall/<metric>`,
`fairness/demographic_parity_difference`, `fairness/equalized_odds_difference`, the same under
`fairness/mitigated/`), TensorBoard (those scalars, the table in the Text tab, the figure in the
Images tab), fairness.csv and fairness.md in the run folder, figures/fairness.png, and a table in
the console. A "/" in a group's name is written "_" in metric names.

fairlearn (`pip install "nnlab[fairness]"`) is imported when an audit runs, never before.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnlab.engine.ema import averaged_weights
from nnlab.engine.tensorboard import save_image
from nnlab.errors import UserError, check_choice

log = logging.getLogger(__name__)

INSTALL = 'pip install "nnlab[fairness]"'
MITIGATIONS = ("none", "threshold_optimizer")
# fairlearn's ThresholdOptimizer constraints; demographic_parity and equalized_odds are the two
# the docs compare.
CONSTRAINTS = (
    "demographic_parity",
    "equalized_odds",
    "true_positive_rate_parity",
    "false_positive_rate_parity",
    "true_negative_rate_parity",
    "false_negative_rate_parity",
)
# The objectives fairlearn accepts with every constraint (equalized_odds takes only these two).
OBJECTIVES = ("accuracy_score", "balanced_accuracy_score")
# The per-group metrics, in the order of the table and the figure.
METRICS = ("count", "acc", "selection_rate", "tpr", "fpr")
RATES = METRICS[1:]  # (what the figure draws: the count is not a rate)
LABELS = {"count": "count", "acc": "acc", "selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR"}
# Names the metric keys use beside the groups': a group called so gets a suffix.
RESERVED = ("overall", "mitigated", "demographic_parity_difference", "equalized_odds_difference")


@dataclass
class GroupReport:
    """One set of predictions scored per group: {group: {metric: value}}, the same over all rows,
    and the two disparities."""

    by_group: dict[str, dict[str, float]]
    overall: dict[str, float]
    demographic_parity_difference: float
    equalized_odds_difference: float

    def spread(self) -> dict[str, float]:
        """max - min over the groups of each rate (the disparities are read off it: DP is the
        selection rate's, EO the larger of TPR's and FPR's)."""
        return {m: max(g[m] for g in self.by_group.values()) - min(g[m] for g in self.by_group.values()) for m in RATES}

    def metrics(self, prefix: str) -> dict[str, float]:
        """As metrics.json names them: `<prefix>/<group>/<metric>`, `<prefix>/overall/<metric>`
        and the two disparities."""
        out = {}
        for group, row in [*((metric_group(g), r) for g, r in self.by_group.items()), ("overall", self.overall)]:
            out.update({f"{prefix}/{group}/{m}": float(v) for m, v in row.items()})
        out[f"{prefix}/demographic_parity_difference"] = float(self.demographic_parity_difference)
        out[f"{prefix}/equalized_odds_difference"] = float(self.equalized_odds_difference)
        return out


def check_options(mitigation: str, constraints: str, objective: str) -> None:
    """The `fairness:` block's choices, each against its list (an OptionError with a "did you mean")."""
    check_choice("fairness.mitigation", mitigation, MITIGATIONS)
    check_choice("fairness.constraints", constraints, CONSTRAINTS)
    check_choice("fairness.objective", objective, OBJECTIVES)


def require_fairlearn() -> None:
    try:
        import fairlearn  # noqa: F401
    except ImportError:
        raise UserError(
            f"data.sensitive: the fairness audit needs fairlearn, which is not installed. Install it with {INSTALL}, "
            "or drop data.sensitive."
        ) from None


def group_report(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> GroupReport:
    """Score 0/1 predictions per group with fairlearn's `MetricFrame` (and its two disparity
    functions), positive label 1."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    y_true, y_pred, groups = np.asarray(y_true), np.asarray(y_pred), np.asarray(groups)
    functions = {
        "count": count,
        "acc": accuracy_score,
        "selection_rate": selection_rate,
        "tpr": true_positive_rate,
        "fpr": false_positive_rate,
    }
    frame = MetricFrame(metrics=functions, y_true=y_true, y_pred=y_pred, sensitive_features=groups)
    by_group = {str(g): {m: float(frame.by_group.loc[g, m]) for m in METRICS} for g in frame.by_group.index}
    overall = {m: float(frame.overall[m]) for m in METRICS}
    return GroupReport(
        by_group=by_group,
        overall=overall,
        demographic_parity_difference=float(demographic_parity_difference(y_true, y_pred, sensitive_features=groups)),
        equalized_odds_difference=float(equalized_odds_difference(y_true, y_pred, sensitive_features=groups)),
    )


def scores_estimator() -> Any:
    """The network's scores as a fitted scikit-learn classifier, for ThresholdOptimizer(prefit=True):
    its input X is the (N, 1) column of P(class 1) the network gave each row, and it passes that
    through (predict_proba: [1 - p, p]; predict: p >= 0.5). The network itself cannot be handed
    over: fairlearn calls the estimator on X, and the scores are all it needs of it."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class NetworkScores(ClassifierMixin, BaseEstimator):
        def fit(self, X: Any, y: Any = None) -> NetworkScores:
            return self  # fitted already: the network was trained

        def predict_proba(self, X: Any) -> np.ndarray:
            p = np.asarray(X, dtype=np.float64)[:, 0]
            return np.stack([1.0 - p, p], axis=1)

        def predict(self, X: Any) -> np.ndarray:
            return (np.asarray(X)[:, 0] >= 0.5).astype(np.int64)

        def __sklearn_is_fitted__(self) -> bool:
            return True

    return NetworkScores()


def threshold_optimize(
    val_scores: np.ndarray,
    val_y: np.ndarray,
    val_groups: np.ndarray,
    test_scores: np.ndarray,
    test_groups: np.ndarray,
    constraints: str = "demographic_parity",
    objective: str = "accuracy_score",
    seed: int = 0,
) -> np.ndarray:
    """0/1 test predictions of fairlearn's ThresholdOptimizer fitted on the validation rows'
    scores (P(class 1)), labels and groups; randomized where it mixes two thresholds, seeded."""
    from fairlearn.postprocessing import ThresholdOptimizer

    check_fit_rows(val_y, val_groups, test_groups)
    optimizer = ThresholdOptimizer(
        estimator=scores_estimator(),
        constraints=constraints,
        objective=objective,
        prefit=True,
        predict_method="predict_proba",
    )
    optimizer.fit(np.asarray(val_scores)[:, None], np.asarray(val_y), sensitive_features=np.asarray(val_groups))
    pred = optimizer.predict(
        np.asarray(test_scores)[:, None], sensitive_features=np.asarray(test_groups), random_state=seed
    )
    return np.asarray(pred, dtype=np.int64)


def check_fit_rows(val_y: np.ndarray, val_groups: np.ndarray, test_groups: np.ndarray) -> None:
    """The threshold of a group is chosen on its validation rows: each test group needs some, of
    both classes (fairlearn would refuse one class; an unseen group would silently get 0s)."""
    fix = (
        "Give the validation split more rows (data.val_fraction), or fewer, larger groups (another data.sensitive, "
        "or wider data.sensitive_bins), or set fairness.mitigation=none."
    )
    unseen = sorted(set(test_groups.tolist()) - set(val_groups.tolist()))
    if unseen:
        raise UserError(
            f"fairness.mitigation=threshold_optimizer chooses each group's threshold on the validation rows, and "
            f"group(s) {', '.join(unseen)} have test rows but no validation rows. {fix}"
        )
    for group in sorted(set(val_groups.tolist())):
        labels = set(val_y[val_groups == group].tolist())
        if len(labels) < 2:
            raise UserError(
                f"fairness.mitigation=threshold_optimizer chooses each group's threshold on the validation rows, and "
                f"those of group {group} are all of class {labels.pop()}: no threshold can be told from another. {fix}"
            )


def network_outputs(trainer: Any, task: Any, data: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, 2), labels (N,)) of the rows of `split`, with the weights `trainer.test` scored
    with: those the model holds after the test (it loaded the best checkpoint), averaged by the
    EMA when there is one, in eval mode, under the task's autocast, at most
    trainer.limit_eval_batches batches, as the test's own evaluation does."""
    batches = data.eval_batches(split)
    if trainer.limit_eval_batches:
        batches = itertools.islice(batches, trainer.limit_eval_batches)
    precision = getattr(task, "precision", None)
    outs, ys = [], []
    with averaged_weights(trainer.module, trainer.ema), torch.no_grad():
        task.model.eval()
        for x, y in batches:
            with precision.autocast() if precision is not None else contextlib.nullcontext():
                out = task.model(x)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != 2:
                raise UserError(
                    f"data.sensitive: the fairness audit reads a classifier's two class scores per row, but this "
                    f"run's model gives {type(out).__name__}"
                    f"{tuple(out.shape) if isinstance(out, torch.Tensor) else ''}. Use a classifier (task=supervised), "
                    "or drop data.sensitive."
                )
            outs.append(out.float().cpu())
            ys.append(y.cpu())
    return torch.cat(outs).numpy(), torch.cat(ys).numpy()


def audit_fairness(
    trainer: Any,
    task: Any,
    data: Any,
    logger: Any,
    output_dir: str | Path,
    mitigation: str = "threshold_optimizer",
    constraints: str = "demographic_parity",
    objective: str = "accuracy_score",
    seed: int = 0,
    show: bool = True,
) -> dict[str, float]:
    """The audit of a tested run whose data module has `groups` (data.sensitive): score the test
    predictions per group (and the mitigation's, unless `mitigation="none"`), write the table,
    figure and scalars, print the table when `show`; return the `fairness/...` metrics."""
    check_options(mitigation, constraints, objective)
    require_fairlearn()
    output_dir = Path(output_dir)
    logits, y = network_outputs(trainer, task, data, "test")
    groups = np.asarray(data.groups["test"][: len(y)])  # (fewer rows when limit_eval_batches cut the split)
    pred = logits.argmax(1)  # the test's own prediction (nnlab.tasks.metrics: argmax of the logits)
    reports = {"network": group_report(y, pred, groups)}
    if mitigation == "threshold_optimizer":
        val_logits, val_y = network_outputs(trainer, task, data, "val")
        val_groups = np.asarray(data.groups["val"][: len(val_y)])
        mitigated = threshold_optimize(
            positive_scores(val_logits),
            val_y,
            val_groups,
            positive_scores(logits),
            groups,
            constraints,
            objective,
            seed,
        )
        reports[f"threshold_optimizer ({constraints})"] = group_report(y, mitigated, groups)

    metrics = reports["network"].metrics("fairness")
    for report in list(reports.values())[1:]:  # (the mitigation's, when there is one)
        metrics.update(report.metrics("fairness/mitigated"))
    column = getattr(data, "sensitive", None) or "group"
    table = markdown_table(reports, column)
    write_tables(reports, column, output_dir)
    figure = fairness_figure(reports, column)
    step = getattr(trainer, "epoch", 0)
    path = save_image(figure, output_dir / "figures" / "fairness.png", logger, "fairness/groups", step)
    if logger is not None:
        logger.log_metrics(metrics, step)
        logger.log_text("fairness/table", table, step)
    for name, report in reports.items():
        log.info(
            "Fairness by %s, %s: demographic parity difference %.4f, equalized odds difference %.4f, acc %.4f",
            column,
            name,
            report.demographic_parity_difference,
            report.equalized_odds_difference,
            report.overall["acc"],
        )
    log.info("Saved %s, fairness.csv and fairness.md", path)
    if show:
        print_table(reports, column)
    return metrics


def positive_scores(logits: np.ndarray) -> np.ndarray:
    """P(class 1) of each row: the softmax of its two logits."""
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1)[:, 1].numpy()


def metric_group(group: str) -> str:
    """A group's name in metric names: "/" (a TensorBoard tag's separator) as "_", and a name that
    metric names use themselves (overall, mitigated) with " (group)" after it."""
    name = group.replace("/", "_")
    return f"{name} (group)" if name in RESERVED else name


# -- the table and the figure ---------------------------------------------------------------------


def table_rows(reports: dict[str, GroupReport], digits: int | None = 4) -> list[list[str]]:
    """[predictions, group, count, acc, selection rate, TPR, FPR] per group, overall, and the
    groups' spread (max - min: the disparities), for each set of predictions; rates rounded to
    `digits` (None: every digit, for the CSV)."""

    def shown(value: float) -> str:
        return repr(float(value)) if digits is None else f"{value:.{digits}f}"

    rows = []
    for name, report in reports.items():
        for group, row in [*report.by_group.items(), ("overall", report.overall)]:
            rows.append([name, group, str(int(row["count"])), *(shown(row[m]) for m in RATES)])
        rows.append([name, "max - min", "", *(shown(v) for v in report.spread().values())])
    return rows


def disparities(reports: dict[str, GroupReport]) -> list[str]:
    return [
        f"{name}: demographic parity difference {r.demographic_parity_difference:.4f}, equalized odds difference "
        f"{r.equalized_odds_difference:.4f}, accuracy {r.overall['acc']:.4f}"
        for name, r in reports.items()
    ]


def markdown_table(reports: dict[str, GroupReport], column: str) -> str:
    """The table in Markdown (fairness.md, TensorBoard's Text tab), the disparities below it."""
    header = ["predictions", column, *(LABELS[m] for m in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(METRICS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table_rows(reports)]
    return "\n".join([*lines, "", *(f"- {line}" for line in disparities(reports))])


def write_tables(reports: dict[str, GroupReport], column: str, output_dir: Path) -> None:
    """fairness.csv (one row per predictions and group, the spread rows included) and fairness.md."""
    import csv

    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "fairness.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["predictions", column, *METRICS])
        writer.writerows(table_rows(reports, digits=None))
    (output_dir / "fairness.md").write_text(
        f"# Fairness audit by {column} (test split)\n\n{markdown_table(reports, column)}\n", encoding="utf-8"
    )


def print_table(reports: dict[str, GroupReport], column: str) -> None:
    from rich.table import Table

    from nnlab.cli.console import console

    table = Table(title=f"fairness by {column} (test)", caption="\n".join(disparities(reports)))
    table.add_column("predictions")
    table.add_column(column)
    for m in METRICS:
        table.add_column(LABELS[m], justify="right")
    rows = table_rows(reports)
    for i, row in enumerate(rows):  # a line under each set of predictions
        table.add_row(*row, end_section=i + 1 == len(rows) or rows[i + 1][0] != row[0])
    console().print(table)


def fairness_figure(reports: dict[str, GroupReport], column: str) -> Any:
    """Bars of each group's acc, selection rate, TPR and FPR, one panel per set of predictions
    (the network's, the mitigation's), the disparities in each panel's title. Made without pyplot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(reports), 3.4), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, len(reports), sharey=True))
    for ax, (name, report) in zip(axes, reports.items()):
        groups = list(report.by_group)
        width = 0.8 / len(groups)
        x = np.arange(len(RATES))
        for i, group in enumerate(groups):
            values = [report.by_group[group][m] for m in RATES]
            ax.bar(
                x + (i - (len(groups) - 1) / 2) * width,
                values,
                width,
                label=f"{group} ({int(report.by_group[group]['count'])})",
            )
        ax.set_xticks(x, [LABELS[m] for m in RATES])
        ax.set_ylim(0, 1.22)  # (room for the legend above the bars)
        ax.set_title(
            f"{name}\nDP diff {report.demographic_parity_difference:.3f}, EO diff "
            f"{report.equalized_odds_difference:.3f}, acc {report.overall['acc']:.3f}",
            fontsize=9,
        )
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(title=column, fontsize=8, title_fontsize=8, loc="upper center", ncol=min(len(groups), 4))
    fig.tight_layout()
    return fig
