"""Any CSV file as a tabular dataset: `nnlab-train data=csv data.dataset.path=f.csv data.dataset.target=y`.

Read with the standard library's csv module rather than pandas, which keeps the dependency list
short and lets every complaint name the exact line: pandas silently pads a short row with missing
values, and a file that a user typed by hand deserves a message that says where it is broken.
"""

from __future__ import annotations

import csv as _csv
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nnlab.data.arrays import ArrayDataset
from nnlab.data.split import ENOUGH_ROWS
from nnlab.errors import ConfigValueError, UserError, check_choice, did_you_mean

log = logging.getLogger(__name__)

# Field values read as missing (compared case-insensitively, after stripping spaces). "?" is the
# UCI repository's marker.
MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a", "<na>"})

# kind=auto calls an integer target with at most this many distinct values a class label.
MAX_AUTO_CLASSES = 20

KINDS = ("auto", "classification", "regression")


def csv(
    path: str | None = None,
    target: str | None = None,
    kind: str = "auto",
    categorical: Sequence[str] | None = None,
    drop: Sequence[str] | None = None,
    delimiter: str = ",",
) -> ArrayDataset:
    """One example per line of a CSV file with a header line; one column is the target.

    Features: every other column (except those in `drop`). A column whose values are all numbers
    is used as it is; a column of text (or one listed in `categorical`) is one-hot encoded, one
    feature `column=value` per distinct value, in sorted order. A column that holds mostly numbers
    but some text is taken for a typo and reported with its line. x is (N, F) float32.

    path: the CSV file; a relative path starts in the directory nnlab-train was started from.
    target: the column to predict.
    kind: auto, classification or regression. auto: a text target, or an integer one with at most
        20 distinct values, is classification; any other number is regression. Class names are the
        target's distinct values, sorted (numerically when they are numbers).
    categorical: columns to one-hot encode even though they hold numbers (codes, ZIP codes).
    drop: columns to leave out (ids, free text, leaks of the target).
    delimiter: the field separator: "," (default), ";", "|", or "tab".

    Missing values (an empty field, NA, N/A, NaN, null, None or ?): a row without a target is
    dropped. A missing number stays NaN, for the DataModule to fill with statistics of the
    training split only (`data_edit=impute` chooses how; train means by default); a missing
    category is all zeros in its one-hot columns (no category), which needs no statistic.
    Scaling is the DataModule's too (`data.normalize`), fitted on the training split.

    Every column's raw text (the target and dropped columns too) is kept in the dataset's
    `columns`, so `data.sensitive=<column>` can group the rows for a fairness audit, also by a
    column the model does not see (`drop`).
    """
    check_choice("data.dataset.kind", kind, KINDS)
    delimiter = "\t" if delimiter in ("tab", "\\t") else delimiter
    if len(delimiter) != 1:
        raise ConfigValueError(f"data.dataset.delimiter={delimiter!r} must be one character, e.g. ',' ';' or 'tab'.")
    if path is None:
        raise UserError(
            "data=csv needs a file and the column to predict: add data.dataset.path=<file.csv> "
            "data.dataset.target=<column> to the command line."
        )

    categorical, drop = list(categorical or []), list(drop or [])
    file = Path(path)
    header, rows, lines = _read(file, delimiter)
    name = str(file)  # as the user wrote it
    target = _check_columns(name, header, target, categorical, drop)
    columns = {c: [row[i] for row in rows] for i, c in enumerate(header)}
    features = [c for c in header if c != target and c not in drop]
    if not features:
        raise UserError(f"{name} has no feature columns besides the target '{target}' (and data.dataset.drop).")

    # Rows to keep: those with a target.
    missing = {c: np.array([is_missing(v) for v in columns[c]], dtype=bool) for c in [target, *features]}
    keep = ~missing[target]
    if not keep.all():
        dropped = [lines[i] for i in np.flatnonzero(~keep)]
        log.warning("%s: dropped %d row(s) with no target value (lines %s)", name, len(dropped), _some(dropped))
    if not keep.any():
        raise UserError(f"{name}: every row's target '{target}' is missing; fill in the target.")
    lines = [line for line, k in zip(lines, keep) if k]
    columns = {c: [v for v, k in zip(values, keep) if k] for c, values in columns.items()}
    missing = {c: m[keep] for c, m in missing.items()}

    blocks, names = [], []
    for c in features:
        if missing[c].all():
            log.warning("%s: column '%s' has no values; left out", name, c)
            continue
        block, block_names = _feature(name, c, columns[c], missing[c], lines, c in categorical)
        blocks.append(block)
        names += block_names
    if not blocks:
        raise UserError(f"{name}: every feature column is empty.")
    x = np.concatenate(blocks, axis=1)
    # Columns that could be predicted instead, likeliest labels first: those with the fewest values.
    others = sorted((c for c in features if len(set(columns[c])) > 1), key=lambda c: len(set(columns[c])))
    y, kind, class_names = _target(name, target, columns[target], lines, kind, others)
    log.info(
        "%s: %d rows, %d features (%s), target '%s': %s%s",
        name,
        len(x),
        x.shape[1],
        _some(names),
        target,
        kind,
        f" with classes {_some(class_names)}" if class_names else "",
    )
    # Every column as the file has it (target and dropped ones too): what data.sensitive groups by.
    raw = {c: np.array(values, dtype=str) for c, values in columns.items()}
    return ArrayDataset(x, y, kind, class_names, feature_names=names, source=name, columns=raw)


def _read(file: Path, delimiter: str) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows (fields stripped of spaces) and each row's line number (the header is line 1)."""
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise UserError(
            f"data.dataset.path={str(file)!r}: {file.resolve()} {what}. Relative paths start in the "
            f"directory nnlab-train was started from ({Path.cwd()})."
        )
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    line = 0
    try:
        # utf-8-sig: also reads the byte-order mark that spreadsheet programs put at the start.
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = _csv.reader(f, delimiter=delimiter)
            for fields in reader:
                line = reader.line_num
                fields = [v.strip() for v in fields]
                if len(fields) <= 1 and not "".join(fields):  # a blank line
                    continue
                if header is None:
                    header = fields
                    _check_header(str(file), header, line)
                    continue
                if len(fields) != len(header):
                    raise UserError(
                        f"{file}, line {line}: {len(fields)} fields, but the header names {len(header)} "
                        f"columns ({', '.join(header)}). Quote a value that contains the delimiter "
                        f'{delimiter!r} ("Smith, J"), and keep an empty field for a missing value.'
                    )
                rows.append(fields)
                lines.append(line)
    except UnicodeDecodeError:
        raise UserError(f"{file} is not UTF-8 text (near line {line + 1}). Save it as UTF-8 CSV.") from None
    except _csv.Error as e:
        raise UserError(f"{file}, line {line + 1}: the CSV cannot be parsed ({e}).") from None
    if header is None:
        raise UserError(
            f"{file.resolve()} is empty: a CSV needs a header line naming the columns, then one line per example."
        )
    if not rows:
        raise UserError(
            f"{file.resolve()} has a header line but no data rows. Add the examples below it, one line each: "
            f"{ENOUGH_ROWS}."
        )
    return header, rows, lines


def _check_header(name: str, header: list[str], line: int) -> None:
    for i, column in enumerate(header):
        if not column:
            raise UserError(f"{name}, line {line}: column {i + 1} of the header has no name. Name every column.")
        if "\n" in column or "\r" in column:
            raise UserError(
                f"{name}, line {line}: column {i + 1} of the header, {column!r}, holds a line break (a quote left "
                "open?). Close the quote, or put the name on one line."
            )
    repeated = [c for c, n in Counter(header).items() if n > 1]
    if repeated:
        raise UserError(f"{name}, line {line}: the header names column '{repeated[0]}' twice. Rename one of them.")


def _check_columns(name: str, header: list[str], target: str | None, categorical: Sequence[str], drop: Sequence[str]):
    columns = ", ".join(header)
    looks_like_data = all(number(c) is not None for c in header)
    no_header = " Its first line looks like data: add a header line naming the columns." if looks_like_data else ""
    if target is None:
        raise UserError(
            f"data=csv needs the column to predict: set data.dataset.target to one of {columns}.{no_header}"
        )
    target = str(target)
    if target not in header:
        raise UserError(
            f"{name} has no column '{target}' (data.dataset.target).{_did_you_mean(target, header)} "
            f"Its columns: {columns}.{no_header}"
        )
    for key, listed in (("drop", drop), ("categorical", categorical)):
        for c in listed:
            if c not in header:
                raise UserError(
                    f"data.dataset.{key} names '{c}', which is not a column of {name}.{_did_you_mean(str(c), header)} "
                    f"Its columns: {columns}."
                )
            if c == target:
                raise UserError(f"data.dataset.{key} names the target '{c}'; take it out of the list.")
    return target


def _feature(
    name: str,
    column: str,
    values: list[str],
    missing: np.ndarray,
    lines: list[int],
    categorical: bool,
) -> tuple[np.ndarray, list[str]]:
    """One column as (N, 1) numbers (NaN where missing) or (N, K) one-hot indicators (all zero where
    missing)."""
    numbers = [None if m else number(v) for v, m in zip(values, missing)]
    text = [i for i, (n, m) in enumerate(zip(numbers, missing)) if n is None and not m]
    if not categorical and text and len(text) * 2 < (~missing).sum():
        i = text[0]  # mostly numbers: a typo, not a category
        more = f" (and {len(text) - 1} more rows: lines {_some([lines[j] for j in text[1:]])})" if len(text) > 1 else ""
        raise UserError(
            f"{name}, line {lines[i]}: column '{column}' holds numbers, but this row has {values[i]!r}{more}. "
            "Fix the value, leave the field empty to mark it missing (filled as data_edit=impute says), "
            f"or add '{column}' to data.dataset.categorical to one-hot encode the column."
        )
    if categorical or text:
        categories = sorted({v for v, m in zip(values, missing) if not m})
        index = {c: k for k, c in enumerate(categories)}
        rows = np.flatnonzero(~missing)
        onehot = np.zeros((len(values), len(categories)), dtype=np.float32)
        onehot[rows, [index[values[i]] for i in rows]] = 1.0
        return onehot, [f"{column}={c}" for c in categories]

    col = np.array([np.nan if n is None else n for n in numbers], dtype=np.float64)
    _check_float32(name, column, col, values, lines)
    return col[:, None].astype(np.float32), [column]


def _target(name: str, column: str, values: list[str], lines: list[int], kind: str, others: list[str]):
    """y, the resolved kind and the class names. `others`: the feature columns that vary, named as
    targets to predict instead when this one has a single class."""
    numbers = [number(v) for v in values]
    text = [i for i, n in enumerate(numbers) if n is None]
    if kind == "regression" and text:
        i = text[0]
        raise UserError(
            f"{name}, line {lines[i]}: target column '{column}' has {values[i]!r}, which is not a number, but "
            "data.dataset.kind=regression. Fix the value, or set data.dataset.kind=classification."
        )
    if kind == "auto" and text and len(text) * 2 < len(values):
        i = text[0]  # mostly numbers: a typo rather than class names
        raise UserError(
            f"{name}, line {lines[i]}: target column '{column}' holds numbers, but this row has {values[i]!r}. "
            "Fix the value, or set data.dataset.kind=classification to take every value as a class name."
        )
    if kind == "auto":
        integer = not text and all(float(n).is_integer() for n in numbers)
        if text or (integer and len(set(numbers)) <= MAX_AUTO_CLASSES):
            kind = "classification"
        else:
            kind = "regression"
        log.info("%s: target '%s' taken for %s (set data.dataset.kind to change it)", name, column, kind)
    if kind == "regression":
        _check_float32(name, column, np.array(numbers, dtype=np.float64), values, lines)
        return np.array(numbers, dtype=np.float32), kind, None
    keys = values if text else numbers  # numbers compare numerically: "1" and "1.0" are one class
    classes = sorted(set(keys))
    if len(values) == 1:  # (one row is one class too, but the point is that it is one row)
        raise UserError(
            f"{name} has only 1 row: too few to split into training, validation and test rows, one each at the "
            f"least. Add examples: {ENOUGH_ROWS}."
        )
    if len(classes) < 2:
        instead = ""
        if others:
            more = f" (columns with more than one value: {_some(others)})" if len(others) > 1 else ""
            instead = f", or predict another column: data.dataset.target={others[0]}{more}"
        raise UserError(
            f"{name}: target column '{column}' has the single value {values[0]!r} in all {len(values)} rows: nothing "
            f"to classify, as a classifier tells two or more classes apart. Add rows of other classes{instead}."
        )
    index = {c: k for k, c in enumerate(classes)}
    y = np.array([index[k] for k in keys], dtype=np.int64)
    class_names = [c if text else _format_number(c) for c in classes]
    return y, kind, class_names


def _did_you_mean(word: str, columns: list[str]) -> str:
    """nnlab's "Did you mean" hint, which also catches a column spelled in another case (Y for y)."""
    same = [c for c in columns if c.lower() == word.lower()]
    return f" Did you mean '{same[0]}'?" if same else did_you_mean(word, columns)


def is_missing(value: str) -> bool:
    """Whether a field (stripped of spaces) marks a missing value: empty, NA, N/A, NaN, null, None or ?
    (also read by `nnlab.data.groups` for data.sensitive)."""
    return value.lower() in MISSING


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32(name: str, column: str, col: np.ndarray, values: list[str], lines: list[int]) -> None:
    """Numbers beyond float32's range would become inf in the tensors nnlab trains on."""
    over = np.flatnonzero(np.abs(np.nan_to_num(col)) > FLOAT32_MAX)
    if len(over):
        i = int(over[0])
        raise UserError(
            f"{name}, line {lines[i]}: column '{column}' has {values[i]!r}, beyond the float32 range nnlab trains in "
            "(+-3.4e38). Rescale the column, or leave the field empty to mark it missing."
        )


def number(value: str) -> float | None:
    """The value as a finite float, or None (text, inf): how a field is read as a number (also by
    `nnlab.data.groups` for data.sensitive)."""
    try:
        parsed = float(value)
    except ValueError:
        return None
    return parsed if math.isfinite(parsed) else None


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _some(items: Sequence[object], n: int = 5) -> str:
    """The first few items, comma-separated, with an ellipsis when there are more."""
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")
