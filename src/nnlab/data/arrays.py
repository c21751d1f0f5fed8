"""The one shape every dataset is handed over in: arrays plus what a model needs to size itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Kind = Literal["classification", "regression", "language_model"]


@dataclass
class ArrayDataset:
    """A whole dataset in memory.

    x: float32 features, shape (N, *input_shape), e.g. (1797, 1, 8, 8) for digits; or, for text
        (`tokenizer` set), int64 token ids (N, L), padded on the right with PAD = 0.
    y: int64 class indices (classification), float32 targets of shape (N,) or (N, T) (regression),
        or int64 next tokens (N, L) (language_model: y[:, t] is the token after x[:, t]).
    kind: "classification", "regression" or "language_model"; it picks the task's loss and metrics.
    class_names: one name per class (classification only).
    test_mask: True for the rows of a dataset's official test split (e.g. MNIST's 10,000); when
        given, the DataModule tests on exactly those rows and draws val from the others.
    val_mask: True for the dataset's own validation rows; with test_mask, the DataModule uses
        exactly these splits (text corpora split by contiguous blocks, with the tokenizer fitted
        on the training blocks only, need this).
    tokenizer: what turned the text into ids (`nnlab.data.tokenizers`); it is saved in the run
        folder so that eval and predict encode new text the same way.
    chars_per_token: characters per token of the training text (1 for characters, ~3-4 for
        BPE), which turns nats per token into bits per character.
    feature_names: one name per feature of a tabular dataset (x of shape (N, F)), e.g. the CSV's
        columns; they label attributions (nnlab-explain) and predictions.
    source: where the rows were read from (a CSV file's path), named by messages about them.
    columns: a table's raw values, one array of N per column name, as the file has them (the
        CSV reader keeps every column, the target and dropped ones too, as text): what
        `data.sensitive=<column>` groups the rows by for the fairness audit (`nnlab.data.groups`).
        A row edit that drops rows must drop them here too.
    """

    x: np.ndarray
    y: np.ndarray
    kind: Kind
    class_names: list[str] | None = None
    test_mask: np.ndarray | None = None
    feature_names: list[str] | None = None
    source: str | None = None
    val_mask: np.ndarray | None = None
    tokenizer: Any | None = None
    chars_per_token: float | None = None
    columns: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.x = np.ascontiguousarray(self.x, dtype=np.int64 if self.tokenizer is not None else np.float32)
        dtype = np.float32 if self.kind == "regression" else np.int64
        self.y = np.ascontiguousarray(self.y, dtype=dtype)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")
        for name in ("test_mask", "val_mask"):
            mask = getattr(self, name)
            if mask is not None:
                mask = np.asarray(mask, dtype=bool)
                if mask.shape != (len(self.x),):
                    raise ValueError(f"{name} has shape {mask.shape}, expected ({len(self.x)},)")
                setattr(self, name, mask)
        if self.val_mask is not None and (self.test_mask is None or (self.val_mask & self.test_mask).any()):
            raise ValueError("val_mask needs a test_mask, and no row may be in both")
        if self.kind == "language_model" and (self.tokenizer is None or self.y.shape != self.x.shape):
            raise ValueError("a language_model dataset needs a tokenizer and next-token targets y shaped like x")
        if self.feature_names is not None and (self.x.ndim != 2 or len(self.feature_names) != self.x.shape[1]):
            raise ValueError(f"{len(self.feature_names)} feature names for inputs of shape {self.x.shape[1:]}")
        for name, values in (self.columns or {}).items():
            if len(values) != len(self.x):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.x)} rows")
        if self.kind == "classification" and self.class_names is None:
            self.class_names = [str(c) for c in range(int(self.y.max()) + 1)]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def vocab_size(self) -> int | None:
        """Token ids run from 0 to vocab_size - 1 (text); None for numeric inputs."""
        return None if self.tokenizer is None else int(self.tokenizer.vocab_size)

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.kind == "classification" else None
