"""The groups of `data.sensitive=<column>`: one group name per row, for the fairness audit
(`nnlab.analysis.fairness`).

The column is read from the dataset's raw `columns` (a CSV file's columns, as written, kept by
the reader also when the column is dropped from the features), or, for a table without them (the
scikit-learn sets), from its numeric feature columns. The groups are the column's values, as text:

  - a text column, or a numeric one with at most `MAX_GROUPS` distinct values (codes such as
    job=0..3): one group per value, e.g. "female", "male";
  - a numeric column with more values (age, an amount) must be cut into ranges by
    `data.sensitive_bins`: edges [25] give the groups "<25" and ">=25", edges [25, 60] give "<25",
    "25-60" (25 <= value < 60) and ">=60";
  - a missing value (an empty field, NA, ...) is the group "missing".

The audit needs a yes/no decision per row, so the data must be binary classification; a
regression or multi-class dataset is refused here, before any training.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.data.tabular import is_missing, number
from nnlab.errors import ConfigValueError, OptionError, UserError, did_you_mean

# A numeric column with more distinct values than this needs data.sensitive_bins; a text column
# with more is refused (groups of a few rows each measure nothing).
MAX_GROUPS = 20

MISSING_GROUP = "missing"


def check_bins(bins: Sequence[float] | None) -> list[float] | None:
    """data.sensitive_bins as a list of strictly increasing finite numbers (or None): an option
    wrong whatever the data, so it is an `OptionError` that the preflight raises before the data
    is read."""
    if bins is None:
        return None
    edges = [float(b) for b in bins]
    if not edges:
        raise OptionError(
            "data.sensitive_bins=[] cuts nothing. Give the edges of the ranges, e.g. data.sensitive_bins=[25] "
            "for the groups <25 and >=25, or data.sensitive_bins=null for a column of few values."
        )
    if any(not np.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise OptionError(
            f"data.sensitive_bins={list(bins)} must be finite numbers in increasing order, each edge once, "
            "e.g. data.sensitive_bins=[25,60]."
        )
    return edges


def sensitive_groups(dataset: ArrayDataset, column: str, bins: Sequence[float] | None = None) -> np.ndarray:
    """The group of every row of `dataset` by its value in `column` (see the module's docstring):
    an array of N strings. Raises a `UserError` naming the fix for a column the data lack, a
    column that needs bins, or data that are not binary classification."""
    where = dataset.source or "this dataset"
    edges = check_bins(bins)
    if importlib.util.find_spec("fairlearn") is None:  # (checked now, not after the training it audits)
        raise UserError(
            f"data.sensitive={column}: the fairness audit needs fairlearn, which is not installed. Install it "
            'with pip install "nnlab[fairness]", or drop data.sensitive.'
        )
    values = raw_column(dataset, column)
    if dataset.kind != "classification":
        raise ConfigValueError(
            f"data.sensitive={column}: the fairness audit compares a classifier's yes/no decisions across groups "
            f"(selection rate, true and false positive rates), but {where} is {dataset.kind}. Choose a binary "
            "classification dataset (data=german_credit, or data=csv with a two-valued target), or drop "
            "data.sensitive."
        )
    if dataset.num_classes != 2:
        raise ConfigValueError(
            f"data.sensitive={column}: the fairness audit needs a yes/no decision (binary classification, the "
            f"second class the positive one), but {where} has {dataset.num_classes} classes "
            f"({', '.join(dataset.class_names or [])}). Predict a two-valued column, or drop data.sensitive."
        )
    missing = np.array([is_missing(str(v)) for v in values], dtype=bool)
    numbers = [None if m else number(str(v)) for v, m in zip(values, missing)]
    numeric = all(n is not None for n, m in zip(numbers, missing) if not m)
    distinct = sorted({str(v) for v, m in zip(values, missing) if not m})
    if edges is not None:
        if not numeric:
            raise ConfigValueError(
                f"data.sensitive_bins cuts a numeric column into ranges, but '{column}' of {where} holds text "
                f"({', '.join(distinct[:5])}{', ...' if len(distinct) > 5 else ''}): its values are the groups. "
                "Set data.sensitive_bins=null."
            )
        groups = np.array([MISSING_GROUP if n is None else bin_name(n, edges) for n in numbers], dtype=object)
    elif len(distinct) > MAX_GROUPS:
        raise ConfigValueError(too_many_groups(dataset, column, distinct, numeric, numbers))
    else:
        groups = np.array([MISSING_GROUP if m else str(v) for v, m in zip(values, missing)], dtype=object)
    if len(set(groups)) < 2:
        raise ConfigValueError(
            f"data.sensitive={column}: every row of {where} is in the one group '{groups[0]}', so there is nothing "
            "to compare. Choose a column with two or more values"
            + (", or other data.sensitive_bins edges." if edges is not None else ".")
        )
    return groups.astype(str)


def raw_column(dataset: ArrayDataset, column: str) -> np.ndarray:
    """The N values of `column`: from the table's raw `columns`, else a numeric feature by its
    name (scikit-learn's tables); refused, with the columns there are, when there is no such column."""
    where = dataset.source or "this dataset"
    if dataset.columns is not None:
        names = list(dataset.columns)
        if column in dataset.columns:
            return dataset.columns[column]
    elif dataset.feature_names is not None and dataset.x.ndim == 2:
        names = list(dataset.feature_names)
        if column in names:
            return dataset.x[:, names.index(column)]
    else:
        raise UserError(
            f"data.sensitive={column}: {where} has no columns to group its rows by (its inputs are "
            f"{'token ids' if dataset.tokenizer is not None else 'images or sequences'}, not a table). The fairness "
            "audit groups the rows of a table: data=german_credit, or data=csv with a file of yours."
        )
    same = [n for n in names if n.lower() == column.lower()]
    hint = f" Did you mean '{same[0]}'?" if same else did_you_mean(column, names)
    raise UserError(
        f"data.sensitive={column}: {where} has no column '{column}'.{hint} Its columns: {', '.join(names)}."
        + ("" if dataset.columns is not None else " (A table read from CSV keeps its text columns too: data=csv.)")
    )


def bin_name(value: float, edges: list[float]) -> str:
    """The range `value` falls in: "<e0", "e0-e1" (e0 <= value < e1), ..., ">=e_last"."""
    i = int(np.searchsorted(edges, value, side="right"))  # the number of edges <= value
    if i == 0:
        return f"<{_short(edges[0])}"
    if i == len(edges):
        return f">={_short(edges[-1])}"
    return f"{_short(edges[i - 1])}-{_short(edges[i])}"


def _short(edge: float) -> str:
    return str(int(edge)) if edge.is_integer() else repr(edge)


def too_many_groups(
    dataset: ArrayDataset, column: str, distinct: list[str], numeric: bool, numbers: list[float | None]
) -> str:
    """The paragraph for a column with more than MAX_GROUPS values: bins for a number (with its
    median as an example edge), another column for text."""
    where = dataset.source or "this dataset"
    few = [
        name
        for name, values in (dataset.columns or {}).items()
        if name != column and 2 <= len(set(values.tolist())) <= MAX_GROUPS and not is_target(values, dataset.y)
    ]
    others = f" Columns with few values: {', '.join(few)}." if few else ""
    if numeric:
        median = float(np.median([n for n in numbers if n is not None]))
        edge = _short(float(f"{median:.2g}"))  # the median to two significant digits: 33 for age
        return (
            f"data.sensitive={column}: '{column}' of {where} is a number with {len(distinct)} distinct values, too "
            f"many to be groups (at most {MAX_GROUPS}). Cut it into ranges with data.sensitive_bins, e.g. "
            f"data.sensitive_bins=[{edge}] for <{edge} and >={edge} (about its median), or choose a column of "
            f"categories.{others}"
        )
    return (
        f"data.sensitive={column}: '{column}' of {where} has {len(distinct)} distinct values, too many to be "
        f"groups (at most {MAX_GROUPS}): groups of a few test rows each measure nothing. Choose a column of a few "
        f"categories.{others}"
    )


def is_target(values: np.ndarray, y: np.ndarray) -> bool:
    """Whether a column's values and the classes match one to one: the target column (kept with the
    others), which no audit groups by."""
    pairs = set(zip(values.tolist(), y.tolist()))
    return len(pairs) == len(set(values.tolist())) == len(set(y.tolist()))
