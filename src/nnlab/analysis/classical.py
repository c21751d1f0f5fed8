"""Classical baselines beside the network: does deep learning beat classical machine learning on
these rows?

After the network's test, `compare_baselines` fits scikit-learn models on exactly the rows the
network trained on (`DataModule.arrays("train")`: the same split, row edits, imputation and
scaling), scores them on the same validation and test rows with the network's own metric code
(`nnlab.tasks.metrics`), and reports them beside the network: metrics.json, the final table,
TensorBoard and one log line each. The names, and what each fits per kind of data:

    name                     classification                  regression
    logistic                 LogisticRegression (L2, C=1)    Ridge (L2, alpha=1)
    random_forest            RandomForestClassifier          RandomForestRegressor
    hist_gradient_boosting   HistGradientBoostingClassifier  HistGradientBoostingRegressor

`logistic` is the linear model of the task: logistic regression for classes, its regression twin
(a linear least-squares fit with the same L2 penalty) for values. Every model keeps
scikit-learn's defaults otherwise (100 trees; 100 boosting rounds), seeded with the run's seed.
Images and signals are flattened to one row of pixels (digits: 64 values). Several regression
targets (a forecast horizon) are fitted at once; gradient boosting fits one model per target.

`baselines: auto` (train.yaml) fits all three where they are cheap and meaningful: a network
trained to predict the data's classes or values (task=supervised or perceptron) on numeric rows of
at most AUTO_MAX_VALUES training values (rows x values per row: every bundled tabular set, digits,
mnist1d, sine; not MNIST, Fashion-MNIST or CIFAR). It skips text (token ids are indices, not
features), language models, environments (no rows), and tasks that learn without the targets
(autoencoders, GANs, SOMs). A list (`baselines=[logistic]`) always runs, on large sets too, and
fails with one paragraph where no baseline can apply; `[]` turns them off.

Metrics, per baseline, in the network's names and units (regression targets standardized as the
network sees them, when data.standardize_target is on): `baselines/<name>/{val,test}/<metric>`
with loss (cross-entropy of the predicted probabilities; MSE for regression: the network's default
loss), acc, macro_f1 and, for two classes, roc_auc; or loss, mse, mae and r2. Then
`baselines/<name>/fit_s` and `baselines/<name>/predict_s`, wall seconds of the fit and of scoring
both splits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnlab.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

# `auto` fits the baselines when the training split holds at most this many values (rows x values
# per row): every bundled tabular and 2-D set, digits (1259 x 64 = 81k), mnist1d (3601 x 40 = 144k)
# and sine (3500 x 32 = 112k); MNIST (54,000 x 784 = 42M) and CIFAR are far above, where a forest
# of fully grown trees and ten-class boosting cost as much as training the network, or more.
AUTO_MAX_VALUES = 500_000
# The split-level metric each table compares, by kind of data: unit-free, higher is better.
PRIMARY = {"classification": "acc", "regression": "r2"}
PREFIX = "baselines/"


def logistic(kind: str, seed: int, targets: int) -> Any:
    """The linear model of the task: logistic regression (L2 penalty, C=1, lbfgs), or ridge
    regression with the same penalty (alpha = 1/C = 1) for values."""
    if kind == "classification":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(max_iter=1000, random_state=seed)  # (100 iterations stop short on digits)
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0)


def random_forest(kind: str, seed: int, targets: int) -> Any:
    """100 fully grown trees on bootstrap samples, sqrt(features) (classes) or all features
    (values) tried per split; trained on every core."""
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    forest = RandomForestClassifier if kind == "classification" else RandomForestRegressor
    return forest(n_jobs=-1, random_state=seed)


def hist_gradient_boosting(kind: str, seed: int, targets: int) -> Any:
    """Gradient-boosted trees on binned features (LightGBM's algorithm): 100 rounds, early stopping
    on a held-out tenth of the training rows above 10,000 rows. One model per regression target."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if kind == "classification":
        return HistGradientBoostingClassifier(random_state=seed)
    if targets == 1:
        return HistGradientBoostingRegressor(random_state=seed)
    from sklearn.multioutput import MultiOutputRegressor

    return MultiOutputRegressor(HistGradientBoostingRegressor(random_state=seed))


# The baselines by name, in the order `auto` fits and the tables list them: the one catalogue of
# names (each maps (kind, seed, number of regression targets) to an unfitted estimator).
BASELINES: dict[str, Callable[[str, int, int], Any]] = {
    "logistic": logistic,
    "random_forest": random_forest,
    "hist_gradient_boosting": hist_gradient_boosting,
}


# -- which baselines a run fits -------------------------------------------------------------------


def requested(baselines: object) -> list[str] | None:
    """The names `baselines` lists (None for `auto`), each checked; a UserError for anything else."""
    if baselines is None:
        return []
    if isinstance(baselines, str):
        if baselines == "auto":
            return None
        baselines = [baselines]  # one name: baselines=logistic
    try:
        names = list(baselines)  # (a list from YAML or the command line)
    except TypeError:
        names = [baselines]
    for name in names:
        if not isinstance(name, str) or name not in BASELINES:
            hint = did_you_mean(str(name), BASELINES) if isinstance(name, str) else ""
            raise UserError(
                f"baselines={format_names(baselines)}: {name!r} is not a baseline.{hint} Give auto, a list of "
                f"{', '.join(BASELINES)} (e.g. baselines=[logistic,random_forest]), or [] for none."
            )
    return list(dict.fromkeys(names))


def format_names(baselines: object) -> str:
    if isinstance(baselines, str):
        return baselines
    try:
        return "[" + ",".join(str(b) for b in baselines) + "]"
    except TypeError:
        return str(baselines)


def predicts_targets(task: Any) -> bool:
    """Whether the task trains the network to predict the data's targets, so its test metrics
    score predictions of y as a classifier's or regressor's would: supervised learning and the
    perceptron rule. (The Task protocol declares no such property, so the two are named here; an
    autoencoder, a GAN or a SOM learns without the targets, even where it reports an accuracy.)"""
    from nnlab.tasks.perceptron import PerceptronRule
    from nnlab.tasks.supervised import Supervised

    return isinstance(task, Supervised | PerceptronRule)


def unsupported(data: Any, task: Any) -> str | None:
    """Why no baseline can stand beside this run ("it acts in an environment ..."), or None."""
    if not hasattr(data, "arrays"):
        return "it acts in an environment, which has no rows to fit a model on"
    if data.kind not in PRIMARY:
        return f"its data are {data.kind} data, not classes or values to predict"
    if getattr(data, "tokenizer", None) is not None:
        return (
            "its inputs are token ids (text), indices into a vocabulary rather than features; a text "
            "classifier reports its own bag-of-words baseline (test/baseline_acc)"
        )
    if not predicts_targets(task):
        return (
            f"its task ({type(task).__name__}) does not train the network to predict the data's targets; "
            "the baselines stand beside supervised classification and regression (task=supervised or perceptron)"
        )
    return None


def training_values(data: Any) -> tuple[int, int]:
    """(rows, values per row) of the training split, as the baselines see it (flattened)."""
    x = data.arrays("train")[0]
    return len(x), math.prod(x.shape[1:])


def check_baselines(baselines: object, data: Any, task: Any) -> list[str] | None:
    """The names `baselines` lists (None for `auto`, [] for none), after the checks that need no
    fitting: a UserError for an unknown name, or for a list on a run no baseline can stand beside.
    Cheap, so a run can call it before training (`choose` calls it again after the test)."""
    names = requested(baselines)
    if names:
        reason = unsupported(data, task)
        if reason is not None:
            raise UserError(
                f"baselines={format_names(baselines)} asks for classical models beside the network, but {reason}. "
                "Set baselines=[] (or auto, which skips such runs) for this run."
            )
    return names


def choose(baselines: object, data: Any, task: Any) -> list[str]:
    """The baselines this run fits: `auto` by the rule in the module docstring, or the list given
    (a UserError where it cannot apply, see `check_baselines`; a note where it may take long)."""
    names = check_baselines(baselines, data, task)
    if names == []:
        return []
    if names is None:  # auto
        reason = unsupported(data, task)
        if reason is not None:
            log.debug("Baselines: none (%s)", reason)
            return []
        rows, width = training_values(data)
        if rows * width > AUTO_MAX_VALUES:
            log.info(
                "Baselines: none (baselines=auto fits them up to %s training values; this split has %d rows x %d "
                "= %s). baselines=[logistic,random_forest,hist_gradient_boosting] fits them anyway.",
                f"{AUTO_MAX_VALUES:,}",
                rows,
                width,
                f"{rows * width:,}",
            )
            return []
        return list(BASELINES)
    rows, width = training_values(data)
    if rows * width > AUTO_MAX_VALUES:
        log.info(
            "Baselines on %d rows x %d values (%s, above the %s that auto fits): a random forest or gradient "
            "boosting may take minutes here.",
            rows,
            width,
            f"{rows * width:,}",
            f"{AUTO_MAX_VALUES:,}",
        )
    return names


# -- fitting and scoring --------------------------------------------------------------------------


def flat(x: np.ndarray) -> np.ndarray:
    """(N, *shape) -> (N, values): an image or signal as one row of values."""
    return x.reshape(len(x), -1)


def scores(kind: str, model: Any, x: np.ndarray, y: np.ndarray, num_classes: int | None) -> dict[str, float]:
    """A fitted model's metrics on (x, y), computed by the network's own metric code.

    Classification: the predicted probabilities, one column per class of the data (0 for a class
    the training split lacked), become log-probabilities, which stand in for the network's logits:
    their argmax is the model's prediction, their softmax its probabilities, and their
    cross-entropy the log loss. Regression: the predictions against y, in y's units."""
    import torch
    import torch.nn.functional as F

    from nnlab.tasks.metrics import classification_metrics, regression_metrics

    if kind == "classification":
        proba = np.zeros((len(x), num_classes))
        proba[:, model.classes_] = model.predict_proba(flat(x))
        logits = torch.from_numpy(np.log(np.clip(proba, 1e-15, None)))  # (N, K); log 0 clipped as in log loss
        target = torch.from_numpy(np.asarray(y, dtype=np.int64))
        metrics = {"loss": F.cross_entropy(logits, target).item()}
        metrics.update(classification_metrics(logits, target, None, detailed=False)[0])
        return metrics
    out = torch.from_numpy(np.asarray(model.predict(flat(x)), dtype=np.float32).reshape(y.shape))
    target = torch.from_numpy(np.asarray(y, dtype=np.float32))
    return {"loss": F.mse_loss(out, target).item(), **regression_metrics(out, target)}


def fit(name: str, data: Any, seed: int) -> tuple[Any, float]:
    """Baseline `name` fitted on the training split; returns (model, fit wall seconds)."""
    x, y = data.arrays("train")
    targets = 1 if y.ndim == 1 else y.shape[1]
    model = BASELINES[name](data.kind, seed, targets)
    start = time.perf_counter()
    model.fit(flat(x), y)
    return model, time.perf_counter() - start


def threads(data: Any) -> int | None:
    """BLAS and OpenMP threads for the baselines: one on a set `auto` takes, where more only wait
    for each other (gradient boosting and lbfgs on digits, as the bag-of-words baseline in
    nnlab.analysis.text_baselines); every core (None) on a larger one. The forest spreads its trees
    over the cores with joblib, which this leaves alone."""
    rows, width = training_values(data)
    return 1 if rows * width <= AUTO_MAX_VALUES else None


def compare_baselines(
    baselines: object,
    data: Any,
    task: Any,
    network: dict[str, float],
    network_s: float | None,
    seed: int,
    logger: Any = None,
    step: int = 0,
) -> dict[str, float]:
    """Fit the baselines `baselines` asks for (auto, a list of names, or []) on the run's training
    rows and score them on its val and test rows; log a line for each, and with a TensorBoard
    `logger` their scores as scalars `baselines/<name>/<split>/<metric>` at `step` (the run's last
    epoch) and the comparison with the `network`'s metrics (its fit and test took `network_s`
    seconds) as a table in the Text tab. Returns the metrics for metrics.json (see the module
    docstring); {} when no baseline runs."""
    from threadpoolctl import threadpool_limits

    names = choose(baselines, data, task)
    metrics: dict[str, float] = {}
    limit = threads(data) if names else None
    for name in names:
        with threadpool_limits(limit):
            try:
                model, fit_s = fit(name, data, seed)
            except ValueError as e:  # e.g. one class left in the training split: the network's results still count
                log.warning("Baseline %s could not be fitted on the training split: %s", name, e)
                continue
            start = time.perf_counter()
            split_scores = {
                split: scores(data.kind, model, *data.arrays(split), data.num_classes) for split in ("val", "test")
            }
            predict_s = time.perf_counter() - start
        for split, values in split_scores.items():
            metrics.update({f"{PREFIX}{name}/{split}/{k}": v for k, v in values.items()})
        metrics[f"{PREFIX}{name}/fit_s"] = fit_s
        metrics[f"{PREFIX}{name}/predict_s"] = predict_s
        shown = "; ".join(
            f"{split} " + " ".join(f"{k} {v:.4f}" for k, v in values.items()) for split, values in split_scores.items()
        )
        log.info("Baseline %s (%s): %s (fit %.2fs, predict %.2fs)", name, type(model).__name__, shown, fit_s, predict_s)
    if logger is not None and metrics:
        logger.log_metrics({k: v for k, v in metrics.items() if not k.endswith(("/fit_s", "/predict_s"))}, step)
        metric, rows = comparison({**network, **metrics}, network_s)
        logger.log_text("baselines/comparison", markdown_table(metric, rows), step)
    return metrics


# -- the comparison table -------------------------------------------------------------------------


@dataclass
class Row:
    """One model of the comparison: its val and test value of the table's metric, and its time."""

    model: str
    val: float | None
    test: float | None
    seconds: float | None


def baseline_names(metrics: dict[str, float]) -> list[str]:
    """The baselines `metrics` holds (`baselines/<name>/...` keys), in the catalogue's order."""
    found = {k[len(PREFIX) :].split("/", 1)[0] for k in metrics if k.startswith(PREFIX)}
    return [name for name in BASELINES if name in found]


def comparison(metrics: dict[str, float], network_s: float | None = None) -> tuple[str, list[Row]]:
    """(metric, rows): the network, then each baseline in `metrics`, by the split-level metric
    they share (acc for classes, r2 for values); time: the network's fit and test (`network_s`,
    None when unknown), each baseline's fit and scoring."""
    names = baseline_names(metrics)
    metric = next(
        (m for m in PRIMARY.values() if any(f"{PREFIX}{n}/test/{m}" in metrics for n in names)), PRIMARY["regression"]
    )
    rows = [Row("network", metrics.get(f"val/{metric}"), metrics.get(f"test/{metric}"), network_s)]
    for name in names:
        key = f"{PREFIX}{name}/"
        times = [metrics.get(f"{key}fit_s"), metrics.get(f"{key}predict_s")]
        seconds = None if None in times else sum(times)
        rows.append(Row(name, metrics.get(f"{key}val/{metric}"), metrics.get(f"{key}test/{metric}"), seconds))
    return metric, rows


def cell(value: float | None, digits: int = 4) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def markdown_table(metric: str, rows: Sequence[Row]) -> str:
    """The comparison as Markdown (TensorBoard's Text tab renders it)."""
    lines = [f"| model | val {metric} | test {metric} | time s |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row.model} | {cell(row.val)} | {cell(row.test)} | {cell(row.seconds, 2)} |")
    lines += ["", "time: the network's fit and test; each baseline's fit and scoring of val and test."]
    return "\n".join(lines)
