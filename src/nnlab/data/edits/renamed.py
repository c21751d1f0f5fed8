"""Data keys that became row edits (or another key), and how to spell them now.

Old commands and configs name these keys; they are refused with the new spelling rather than with
Hydra's "not in struct" (see `nnlab.cli.overrides` and `nnlab.checks.validation`). `{value}` is the value
the old key was given, when known.
"""

from __future__ import annotations

RENAMED: dict[str, str] = {
    "data.imbalance": "data_edit=imbalance data_edit.imbalance.ratio={value}",
    "data.anomaly_classes": "data_edit=anomaly data_edit.anomaly.classes={value}",
    "data.cv_folds": "data_edit=kfold data_edit.kfold.folds={value}",
    "data.fold": "data_edit=kfold data_edit.kfold.fold={value} (the k-fold loop sets it for each fold)",
    "data.classes": "data_edit=classes data_edit.classes.classes={value}",
    "data.labels_per_class": "data_edit=few_labels data_edit.few_labels.per_class={value}",
    "data.bootstrap": "data_edit=bootstrap (a resample of the training rows)",
    "data.bootstrap_seed": "data_edit=bootstrap data_edit.bootstrap.seed={value}",
    "data.outliers": "data_edit=outliers data_edit.outliers.fraction={value}",
    "data.outlier_scale": "data_edit=outliers data_edit.outliers.scale={value}",
    "data.missing": "data_edit=missing data_edit.missing.fraction={value}",
    "data.missing_mechanism": "data_edit=missing data_edit.missing.mechanism={value}",
    "data.impute": (
        "data_edit=impute data_edit.impute.strategy=mean|median|most_frequent|drop "
        "(mean_indicator is strategy=mean indicator=true)"
    ),
    "data.sampler": "data_edit=balanced_sampling for sampler=weighted; no edit for sampler=shuffle",
    "data.shuffle": "data_edit=fixed_order for shuffle=false; no edit for shuffle=true",
    "data.standardize": "data.normalize=standard for standardize=true, data.normalize=none for false",
    "data.dataset.impute": (
        "data_edit=impute data_edit.impute.strategy={value}: gaps are now filled with statistics of the "
        "training split only"
    ),
    "data.dataset.scale": (
        "data.normalize=minmax for scale=minmax (fitted on the training split only); for scale=none remove it "
        "(the DataModule's data.normalize scales the inputs)"
    ),
}


def renamed_message(key: str, value: object = None) -> str | None:
    """The paragraph for an old `key` (given `value`), or None when `key` was never renamed."""
    new = RENAMED.get(key.lstrip("+~"))
    if new is None:
        return None
    shown = "<value>" if value is None else str(value).replace(" ", "")
    message = f"{key.lstrip('+~')} is no longer a key: it is now spelled {new.format(value=shown)}."
    if "data_edit" in new:
        message += (
            " Row edits compose in the order listed, e.g. data=wine data_edit=[missing,imbalance]; see "
            "docs/concepts.md (Row edits)."
        )
    return message
