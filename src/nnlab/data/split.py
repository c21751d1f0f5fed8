"""Seeded train/val/test splits, stratified by class when asked."""

from __future__ import annotations

import numpy as np

from nnlab.data.arrays import ArrayDataset

# Each split needs a row; a class's share of each split is rounded to whole rows, and with the
# default fractions (val 0.1, test 0.2) 6 rows are the fewest whose 0.1 rounds to one row.
MIN_ROWS = 3
ENOUGH_ROWS = (
    "with the default data.val_fraction=0.1 and data.test_fraction=0.2, 6 rows of each class (6 rows for a "
    "regression target) give the validation and test splits a row each, and a model needs many more to learn"
)


def split_indices(
    y: np.ndarray, val_fraction: float, test_fraction: float, stratify: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (train, val, test) row indices.

    With `stratify`, each class is split separately, so every split keeps the class proportions
    (rounding each class's share to the nearest row). The same seed always gives the same split.
    """
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    parts: list[list[np.ndarray]] = [[], [], []]
    for idx in groups:
        idx = rng.permutation(idx)
        n_test = int(round(test_fraction * len(idx)))
        n_val = int(round(val_fraction * len(idx)))
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    # Sorted, so a split's row order does not depend on how its classes were grouped.
    train, val, test = (np.sort(np.concatenate(p)) for p in parts)
    return train, val, test


def fold_indices(
    y: np.ndarray, rows: np.ndarray, folds: int, fold: int, stratify: bool, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices of `fold` (0-based) of a `folds`-fold cross-validation of `rows`.

    scikit-learn's (Stratified)KFold, shuffled with `seed`: every row of `rows` is in the
    validation part of exactly one fold, and with `stratify` each fold keeps the class shares.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = (StratifiedKFold if stratify else KFold)(n_splits=folds, shuffle=True, random_state=seed % 2**32)
    train, val = list(splitter.split(rows, y[rows] if stratify else None))[fold]
    return np.sort(rows[train]), np.sort(rows[val])


def fit_standardizer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of `x` along axis 0; constant features get std 1 (left centred)."""
    mean = x.mean(axis=0, dtype=np.float64)  # float64: squares of values near float32's limit overflow
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-8, 1.0, std)  # also works when x is 1-D and std a scalar
    return np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)


def fit_minmax(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature min and range (max - min) of `x` along axis 0, so (x - min) / range maps the
    rows of `x` to [0, 1]; a constant feature gets range 1 (mapped to 0)."""
    low = x.min(axis=0)
    span = x.max(axis=0).astype(np.float64) - low
    span = np.where(span < 1e-8, 1.0, span)
    return np.asarray(low, dtype=np.float32), np.asarray(span, dtype=np.float32)


def empty_split_message(name: str, dataset: ArrayDataset, val: float, test: float, stratify: bool, seed: int) -> str:
    """The message for an empty split, with the fractions nearest to `val` and `test` (and
    `stratify`) that give every split a row, found by trying them on the same rows and seed."""
    source = f" of {dataset.source}" if dataset.source else ""
    rows = f"{len(dataset.x)} rows{source}"
    now = f"data.val_fraction={val} and data.test_fraction={test}"
    found = fractions_that_fill_every_split(dataset, val, test, stratify, seed)
    if found == (val, test, stratify):  # the split itself is fine: a later option emptied it
        fix = (
            "lower data.val_fraction or data.test_fraction"
            if name == "train"
            else f"raise data.{name}_fraction (now {val if name == 'val' else test})"
        )
        return f"data: the {name} split of {rows} is empty; {fix}."
    if found is None:
        return (
            f"data: the {name} split of the {rows} is empty, and no data.val_fraction and data.test_fraction "
            f"give each of the training, validation and test splits a row of so few. Add rows: {ENOUGH_ROWS}."
        )
    new_val, new_test, new_stratify = found
    settings = [f"data.val_fraction={new_val}"] if new_val != val else []
    settings += [f"data.test_fraction={new_test}"] if new_test != test and dataset.test_mask is None else []
    settings += ["data.stratify=false"] if new_stratify != stratify else []
    whose = "each class's rows (data.stratify splits every class alike)" if stratify else "the rows"
    if name == "train":
        why = f"{now} take all of {whose}"
    else:
        why = f"data.{name}_fraction={val if name == 'val' else test} of {whose} rounds to no row"
    return (
        f"data: the {name} split of the {rows} is empty: {why}. Set {' '.join(settings)}, which gives every "
        "split a row (or add rows)."
    )


def fractions_that_fill_every_split(
    dataset: ArrayDataset, val: float, test: float, stratify: bool, seed: int
) -> tuple[float, float, bool] | None:
    """(val_fraction, test_fraction, stratify) nearest the given ones whose split leaves no split
    empty, on a grid of 0.05 steps (stratified first, as asked), or None when none does."""
    steps = [round(0.05 * i, 2) for i in range(1, 19)]
    tests = [test] if dataset.test_mask is not None else [test, *steps]
    trials = sorted(
        {(v, t) for v in [val, *steps] for t in tests if round(v + t, 2) < 1.0},
        key=lambda vt: (abs(vt[0] - val) + abs(vt[1] - test), vt),
    )
    y = dataset.y if dataset.test_mask is None else dataset.y[~dataset.test_mask]
    # Two training rows if the data allow (batch norm cannot train on a batch of one), else one.
    for least_train in (2, 1):
        for strat in dict.fromkeys([stratify, False]):
            for v, t in trials:
                sizes = [len(s) for s in split_indices(y, v, 0.0 if dataset.test_mask is not None else t, strat, seed)]
                if dataset.test_mask is not None:
                    sizes[2] = int(dataset.test_mask.sum())
                if sizes[0] >= least_train and min(sizes) > 0:
                    return v, t, strat
    return None
