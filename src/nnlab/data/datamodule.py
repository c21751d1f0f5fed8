"""Split, scale and batch an in-memory dataset for the engine, with the run's row edits."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch

from nnlab.data import streaming
from nnlab.data.arrays import ArrayDataset
from nnlab.data.edits import Rows, at_stage, check_order
from nnlab.data.edits.impute import Impute
from nnlab.data.groups import check_bins, sensitive_groups
from nnlab.data.split import (
    ENOUGH_ROWS,
    MIN_ROWS,
    empty_split_message,
    fit_minmax,
    fit_standardizer,
    split_indices,
)
from nnlab.errors import ConfigValueError, check_choice, check_range

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
NORMALIZE = ("none", "standard", "minmax")

# Datasets up to this size live on the training device as whole tensors.
IN_MEMORY_LIMIT_BYTES = 1 << 30


class DataModule:
    """Seeded train/val/test splits of an `ArrayDataset`, scaled and batched for the engine.

    The rows go through these steps, in this order; `edits` (the `data_edit` group, see
    `nnlab.data.edits`) act at the step their stage names, in the order listed:

    1. Edits of the whole dataset (`dataset` stage: keep some classes, blank values).
    2. The split: seeded and stratified, by `val_fraction` and `test_fraction`. A dataset with an
       official test split (`ArrayDataset.test_mask`, e.g. MNIST) is tested on exactly those rows
       and validated on `val_fraction` of the others. Then the `split` edits: k-fold, imbalance,
       held-out classes, few labels, the bootstrap.
    3. Gaps (NaN) in the inputs are filled by the `fill` edit (`Impute`; train means when none is
       listed), fitted on the training rows.
    4. Scaling, fitted on the training split only, so no statistic of the validation or test rows
       leaks into training: `normalize` is none, standard (z-score per feature) or minmax (each
       feature to [0, 1] by the train split's min and max; val/test may fall outside). For
       regression, `standardize_target` z-scores the target too, which keeps MSE near 1 at the
       start whatever the target's units (metrics are then in standard deviations of the target).
    5. The `targets` edits (gross errors in the scaled training targets).

    Batching: a dataset that fits (`in_memory: auto` and under 1 GiB) lives on the training
    device as tensors, and each epoch slices a permutation drawn from a generator seeded with
    (seed, epoch): no DataLoader workers, no per-batch host copies, and the order of any epoch
    can be replayed. Larger datasets go through a `torch.utils.data.DataLoader` with pinned
    memory (on CUDA) and persistent workers, in the same seeded order. An `order` edit replaces
    the shuffle (class-balanced draws, or a fixed order).

    Fairness audit: `sensitive` names a column of the table (`sex`) whose value puts each row in
    a group, and `sensitive_bins` cuts a numeric one into ranges (`[25]`: "<25", ">=25"); see
    `nnlab.data.groups`. `groups[split]` then holds the group of every row of each split, in the
    split's order, for `nnlab.analysis.fairness`. The column stays a feature when the table has it
    as one (the model sees what the data hold); to train without it, drop it from the features
    (`data.dataset.drop=[sex]`): its raw values still group the rows.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        stratify: bool = True,
        normalize: Literal["none", "standard", "minmax"] = "standard",
        standardize_target: bool = True,
        drop_last: bool = False,
        in_memory: bool | str = "auto",
        num_workers: int = 0,
        sensitive: str | None = None,
        sensitive_bins: Sequence[float] | None = None,
        edits: Sequence[Any] = (),
        augment: Callable[..., torch.Tensor] | None = None,
        seed: int = 0,
    ) -> None:
        check_range("data.batch_size", batch_size, 1)
        check_range("data.eval_batch_size", eval_batch_size, 1)
        # Validation picks the best checkpoint and feeds schedulers; test gives the final score.
        check_range("data.val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("data.test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range(
            "data.val_fraction + data.test_fraction", val_fraction + test_fraction, 0.0, 1.0, high_inclusive=False
        )
        check_range("data.num_workers", num_workers, 0)
        if in_memory != "auto":
            check_choice("data.in_memory", in_memory, [True, False, "auto"])
        check_choice("data.normalize", normalize, NORMALIZE)
        sensitive_bins = check_bins(sensitive_bins)
        edits = list(edits)
        check_order(edits)
        had_columns = dataset.columns is not None
        for edit in at_stage(edits, "dataset"):
            dataset = edit.edit_dataset(dataset, seed)
        groups = None
        if sensitive is not None:  # after the dataset edits, which may drop rows (and must keep `columns`)
            if had_columns and dataset.columns is None:
                names = ",".join(e.name for e in at_stage(edits, "dataset"))
                raise ConfigValueError(
                    f"data.sensitive={sensitive}: data_edit=[{names}] rebuilt the dataset without its raw columns, "
                    "so its rows cannot be grouped. Drop data.sensitive, or that edit."
                )
            groups = sensitive_groups(dataset, sensitive, sensitive_bins)
        self.sensitive = sensitive
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.augment = augment
        self.seed = seed
        self.kind = dataset.kind
        self.num_classes = dataset.num_classes
        self.class_names = dataset.class_names
        self.feature_names = dataset.feature_names  # tabular data: one name per input column
        self.input_shape = dataset.input_shape
        # Text: the tokenizer that made the ids, the vocabulary the model embeds, and characters
        # per token (bits per character from nats per token). None for numeric inputs.
        self.tokenizer = dataset.tokenizer
        self.vocab_size = dataset.vocab_size
        self.chars_per_token = dataset.chars_per_token
        if self.tokenizer is not None and normalize != "none":
            raise ConfigValueError(
                f"data.normalize={normalize} cannot scale token ids: {dataset.source or 'this dataset'} is text, "
                "whose inputs are indices into a vocabulary. Set data.normalize=none."
            )

        if len(dataset.x) < MIN_ROWS:
            rows = f"{len(dataset.x)} row{'s' if len(dataset.x) > 1 else ''}"
            raise ConfigValueError(
                f"data: {dataset.source or 'the dataset'} has only {rows}: too few to split into training, "
                f"validation and test rows, one each at the least. Add examples: {ENOUGH_ROWS}."
            )
        stratify = stratify and dataset.kind == "classification"
        if dataset.val_mask is not None:  # the dataset's own three splits (text split by blocks)
            idx = tuple(
                np.flatnonzero(m)
                for m in (~(dataset.val_mask | dataset.test_mask), dataset.val_mask, dataset.test_mask)
            )
        elif dataset.test_mask is None:
            idx = split_indices(dataset.y, val_fraction, test_fraction, stratify, seed)
        else:  # the dataset's official test rows; val is carved from the rest
            rest = np.flatnonzero(~dataset.test_mask)
            train, val, _ = split_indices(dataset.y[rest], val_fraction, 0.0, stratify, seed)
            idx = (rest[train], rest[val], np.flatnonzero(dataset.test_mask))
        rows = Rows(dataset, *idx, stratify=stratify, seed=seed)
        for edit in at_stage(edits, "split"):
            rows = edit.edit_split(rows)
        # Classes left out of training, for a task that scores anomalies (empty: none).
        self.anomaly_classes: list[int] = list(rows.held_out)
        # data.sensitive: the group of each row of each split, in the split's order (None: no audit).
        self.groups: dict[Split, np.ndarray] | None = None
        if groups is not None:
            self.groups = {name: groups[i] for name, i in zip(SPLITS, (rows.train, rows.val, rows.test))}
        x = {name: dataset.x[i] for name, i in zip(SPLITS, (rows.train, rows.val, rows.test))}
        y = {name: dataset.y[i] for name, i in zip(SPLITS, (rows.train, rows.val, rows.test))}

        # The train split's statistics, kept so that new inputs (nnlab-predict) get the same
        # imputation and scaling. x_scale is (offset, divisor): (mean, std) or (min, max - min).
        self.imputer: Impute | None = (at_stage(edits, "fill") or [None])[0]
        if self.imputer is None and self.tokenizer is None and any(np.isnan(v).any() for v in x.values()):
            self.imputer = Impute()
            log.info("Data: filling missing input values with train-split means (data_edit=impute to choose how)")
        if self.imputer is not None:
            x["train"], y["train"] = self.imputer.fit(x["train"], y["train"])
            self.feature_names = self.imputer.feature_names(self.feature_names)
            self.input_shape = (dataset.input_shape[0] + len(self.imputer.indicators),)
        for name in SPLITS:
            if len(x[name]) == 0:
                raise ConfigValueError(empty_split_message(name, dataset, val_fraction, test_fraction, stratify, seed))
        self.x_scale: tuple[np.ndarray, np.ndarray] | None = None
        self.y_scale: tuple[np.ndarray, np.ndarray] | None = None
        if normalize != "none":
            filled = x["train"] if self.imputer is None else self.imputer(x["train"])
            self.x_scale = (fit_standardizer if normalize == "standard" else fit_minmax)(filled)
        if self.imputer is not None or self.x_scale is not None:
            x = {k: self.transform(v) for k, v in x.items()}
        if standardize_target and self.kind == "regression":
            self.y_scale = mean, std = fit_standardizer(y["train"])
            y = {k: (v - mean) / std for k, v in y.items()}
        for edit in at_stage(edits, "targets"):  # after the target's scaling: metrics stay in clean units
            y["train"] = edit.edit_targets(y["train"], self.kind, seed)
        self._arrays = {k: (x[k], y[k]) for k in x}
        nbytes = sum(a.nbytes + b.nbytes for a, b in self._arrays.values())
        self.in_memory = nbytes <= IN_MEMORY_LIMIT_BYTES if in_memory == "auto" else bool(in_memory)
        self.device = torch.device("cpu")
        self._tensors: dict[str, Batch] = {}
        self.rank, self.world_size = 0, 1  # data-parallel shard (see `shard`)
        self._order = (at_stage(edits, "order") or [None])[0]
        self.epoch_order(0)  # an order edit that cannot work on these rows says so before a model is built

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Inputs in the dataset's raw units -> what the model sees: gaps filled (and flagged) by the
        impute edit, then z-scored (or min-max scaled) with the train split's statistics. Token
        ids pass unchanged."""
        if self.tokenizer is not None:
            return x.astype(np.int64)
        if self.imputer is not None:
            x = self.imputer(x)
        if self.x_scale is None:
            return x.astype(np.float32)
        offset, divisor = self.x_scale
        return ((x - offset) / divisor).astype(np.float32)

    def untransform_target(self, y: np.ndarray) -> np.ndarray:
        """Regression outputs -> the target's raw units (undoing `standardize_target`)."""
        if self.y_scale is None:
            return y
        mean, std = self.y_scale
        return y * std + mean

    @property
    def class_counts(self) -> list[int] | None:
        """Rows per class in the training split (classification), e.g. for class-weighted losses."""
        if self.kind != "classification":
            return None
        return np.bincount(self._arrays["train"][1], minlength=self.num_classes).tolist()

    @property
    def num_outputs(self) -> int:
        """Width of the model's output layer: classes, or regression targets."""
        if self.kind == "classification":
            return self.num_classes
        if self.kind == "language_model":  # a score for every token of the vocabulary
            return self.vocab_size
        y = self._arrays["train"][1]
        return 1 if y.ndim == 1 else y.shape[1]

    def arrays(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        """The (x, y) rows of `split` as the model sees them (scaled), on the host, e.g. for a
        baseline fitted on exactly the network's training rows."""
        return self._arrays[split]

    def size(self, split: Split) -> int:
        return len(self._arrays[split][0])

    @property
    def steps_per_epoch(self) -> int:
        n = self.size("train")
        if self.world_size > 1:
            return n // (self.batch_size * self.world_size)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def shard(self, rank: int, world_size: int) -> None:
        """Data-parallel training: from now on each epoch is cut into global batches of
        batch_size x world_size rows (in the seeded epoch order), and this rank trains on slice
        `rank` of each, so the ranks' batches together make up the global batch. An epoch's last,
        incomplete global batch is dropped: every rank takes the same number of steps."""
        self.rank, self.world_size = rank, world_size

    def setup(self, device: torch.device) -> None:
        """Place the splits: on `device` when in memory, else as CPU tensors for a DataLoader."""
        self.device = device
        target = device if self.in_memory else torch.device("cpu")
        self._tensors = {
            k: (torch.from_numpy(x).to(target), torch.from_numpy(y).to(target)) for k, (x, y) in self._arrays.items()
        }
        self._loaders: dict[str, torch.utils.data.DataLoader] = {}
        # The standardization augmentation undoes to move pixels in raw units (ImageAugment).
        self._augment_scale = None
        if self.augment is not None and self.x_scale is not None and self.imputer is None:
            self._augment_scale = tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in self.x_scale)
        log.info(
            "Data: %s, input %s, train/val/test = %d/%d/%d rows, %s batches of %d on %s",
            self.kind,
            self.input_shape,
            self.size("train"),
            self.size("val"),
            self.size("test"),
            "in-memory" if self.in_memory else "DataLoader",
            self.batch_size,
            target,
        )

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The training rows of `epoch`, in the order they are visited (seeded by seed and epoch)."""
        n = self.size("train")
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self._order is not None:
            order = self._order.epoch_order(self._arrays["train"][1], g)
        else:
            order = torch.randperm(n, generator=g)
        if self.world_size > 1:  # this rank's slice of every global batch
            steps, b = n // (self.batch_size * self.world_size), self.batch_size
            order = order[: steps * b * self.world_size].view(steps, self.world_size, b)[:, self.rank].reshape(-1)
        return order

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """Yield the (x, y) batches of one training epoch, on the training device (augmented when
        an augmentation is set, with a generator seeded by seed and epoch)."""
        batches = self._train_batches(epoch)
        if self.augment is None:
            yield from batches
            return
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + epoch + 1 + 7919 * self.rank)
        for x, y in batches:
            yield self.augment(x, g, self._augment_scale), y

    def _train_batches(self, epoch: int) -> Iterator[Batch]:
        order = self.epoch_order(epoch)
        if not self.in_memory:
            yield from self._loader("train", order)
            return
        x, y = self._tensors["train"]
        order = order.to(self.device)
        x, y = x[order], y[order]  # the epoch's rows in order, gathered once: batches are views
        if self.drop_last and len(order) % self.batch_size:
            stop = len(order) - len(order) % self.batch_size
            x, y = x[:stop], y[:stop]
        yield from zip(x.split(self.batch_size), y.split(self.batch_size))  # (views made in one call each)

    def eval_batches(self, split: Split) -> Iterator[Batch]:
        """Yield the (x, y) batches of `split` in a fixed order, on the training device."""
        if not self.in_memory:
            yield from self._loader(split, None)
            return
        x, y = self._tensors[split]
        yield from zip(x.split(self.eval_batch_size), y.split(self.eval_batch_size))

    def _loader(self, split: Split, order: torch.Tensor | None) -> Iterator[Batch]:
        """Stream a split through a DataLoader (kept between epochs so workers persist)."""
        if split not in self._loaders:
            self._loaders[split] = streaming.loader(self, split)
        if order is not None:
            self._train_order = order
        for x, y in self._loaders[split]:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
