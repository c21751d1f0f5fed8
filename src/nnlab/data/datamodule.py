"""Split, standardize and batch an in-memory dataset for the engine."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch

from nnlab.data import missing as gaps
from nnlab.data.arrays import ArrayDataset
from nnlab.data.split import ENOUGH_ROWS, MIN_ROWS, fit_minmax, fit_standardizer, fold_indices, split_indices
from nnlab.errors import ConfigValueError, OptionError, check_choice, check_range, did_you_mean

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]
Split = Literal["train", "val", "test"]
NORMALIZE = ("none", "standard", "minmax")

# Datasets up to this size live on the training device as whole tensors.
IN_MEMORY_LIMIT_BYTES = 1 << 30


class DataModule:
    """Seeded train/val/test splits of an `ArrayDataset`, batched for the engine.

    The rows go through these steps, in this order (each option is off unless set):

    1. `classes=[5, 6, 7, 8, 9]`: keep only those classes (indices or names), relabelled 0..k-1
       in the listed order, so every later option speaks of the kept classes.
    2. `missing=f` (tables): blank a seeded share f of the feature values in every split, at
       random (`missing_mechanism=mcar`) or only high values (`mnar`); see `nnlab.data.missing`.
    3. The split: seeded and stratified, by `val_fraction` and `test_fraction`. A dataset with an
       official test split (`ArrayDataset.test_mask`, e.g. MNIST) is tested on exactly those rows
       and validated on `val_fraction` of the others. `cv_folds=k` deals the train and val rows
       into k folds and validates on fold `fold`; the test rows stay held out
       (`nnlab.pipeline.cross_validate` runs every fold).
    4. Changes to the training rows only; val and test stay whole, so a changed run is scored on
       the same rows as a plain one. `imbalance=r` keeps a fraction r^(c/(K-1)) of class c (a
       long tail; the last class keeps r). `anomaly_classes=[9]` drops those classes, so a model
       learns what "normal" looks like and a task scores normal against anomalous test rows.
       `labels_per_class=n` keeps n rows per class (few-label transfer). `bootstrap=true`
       resamples the rows with replacement, as many as there were (bagging: about 63% of them
       appear), seeded by `bootstrap_seed` (None: `seed`), so ensemble members share one split
       and differ in their resample. `impute=drop` drops the rows with a gap.
    5. Scaling, fitted on the training split only, so no statistic of the validation or test
       rows leaks into training. Gaps are filled with the train means (`impute=mean_indicator`
       also appends a 0/1 "was missing" column per feature with gaps, and the model is sized
       from the data; val/test rows are filled even with `drop`: a model must answer every row).
       `normalize` scales the inputs: none, standard (z-score per feature) or minmax (each
       feature to [0, 1] by the train split's min and max; val/test may fall outside); unset,
       `standardize` picks standard or none. For regression, `standardize_target` z-scores the
       target too, which keeps MSE near 1 at the start whatever the target's units (metrics are
       then in standard deviations of the target).
    6. `outliers=f` (regression): a gross error of `outlier_scale` target standard deviations,
       up or down, added to a seeded share f of the training targets, as wrong labels would be.
       It comes after the target's scaling, so metrics stay in the clean target's units.

    Batching: a dataset that fits (`in_memory: auto` and under 1 GiB) lives on the training
    device as tensors, and each epoch slices a permutation drawn from a generator seeded with
    (seed, epoch): no DataLoader workers, no per-batch host copies, and the order of any epoch
    can be replayed. Larger datasets go through a `torch.utils.data.DataLoader` with pinned
    memory (on CUDA) and persistent workers, shuffled by the same seeded rule. `sampler=weighted`
    instead draws each epoch with replacement so that every class is equally likely (see also
    `task.class_weight`).
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        eval_batch_size: int = 1024,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        stratify: bool = True,
        standardize: bool = True,
        standardize_target: bool = True,
        normalize: Literal["none", "standard", "minmax"] | None = None,
        shuffle: bool = True,
        drop_last: bool = False,
        in_memory: bool | str = "auto",
        num_workers: int = 0,
        imbalance: float | None = None,
        sampler: str = "shuffle",
        anomaly_classes: list[int] | None = None,
        cv_folds: int | None = None,
        fold: int = 0,
        classes: list[int | str] | None = None,
        labels_per_class: int | None = None,
        bootstrap: bool = False,
        bootstrap_seed: int | None = None,
        outliers: float | None = None,
        outlier_scale: float = 10.0,
        missing: float | None = None,
        missing_mechanism: Literal["mcar", "mnar"] = "mcar",
        impute: Literal["drop", "mean", "mean_indicator"] = "mean",
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
        if cv_folds is not None:
            check_range("data.cv_folds", cv_folds, 2)
            check_range("data.fold", fold, 0, cv_folds - 1)
        check_choice("data.sampler", sampler, ["shuffle", "weighted"])
        if imbalance is not None:
            check_range("data.imbalance", imbalance, 0.0, 1.0, low_inclusive=False)
        if (imbalance is not None or sampler == "weighted") and dataset.kind != "classification":
            raise ConfigValueError(
                "data.imbalance and data.sampler=weighted need class labels, but this dataset is "
                f"{dataset.kind}. Remove them, or choose a classification dataset."
            )
        if classes is not None:  # first, so every later option speaks of the relabelled classes
            dataset = select_classes(dataset, classes)
        if anomaly_classes is not None:
            if dataset.kind != "classification":
                raise ConfigValueError(
                    f"data.anomaly_classes={list(anomaly_classes)} names classes, but this dataset is "
                    f"{dataset.kind}. Remove it, or choose a classification dataset."
                )
            anomaly_classes = [int(c) for c in anomaly_classes]
            bad = [c for c in anomaly_classes if not 0 <= c < dataset.num_classes]
            if bad or not anomaly_classes or len(set(anomaly_classes)) >= dataset.num_classes:
                raise ConfigValueError(
                    f"data.anomaly_classes={anomaly_classes} must list some, but not all, of the dataset's "
                    f"class indices 0-{dataset.num_classes - 1}, e.g. data.anomaly_classes=[9]."
                )
        self.anomaly_classes = anomaly_classes
        if labels_per_class is not None:
            check_range("data.labels_per_class", labels_per_class, 1)
            if dataset.kind != "classification":
                raise ConfigValueError(
                    f"data.labels_per_class={labels_per_class} counts rows per class, but this dataset is "
                    f"{dataset.kind}. Remove it, or choose a classification dataset."
                )
        if in_memory != "auto":
            check_choice("data.in_memory", in_memory, [True, False, "auto"])
        if normalize is not None:
            check_choice("data.normalize", normalize, NORMALIZE)
        else:  # standardize: true is the z-score, false no scaling
            normalize = "standard" if standardize else "none"
        if outliers is not None:
            check_range("data.outliers", outliers, 0.0, 1.0, high_inclusive=False)
            check_range("data.outlier_scale", outlier_scale, 0.0, low_inclusive=False)
            if dataset.kind != "regression":
                raise ConfigValueError(
                    f"data.outliers={outliers} corrupts regression targets, but this dataset is {dataset.kind} "
                    "(for wrong class labels there is no gross error size). Remove it, or choose a regression "
                    "dataset, e.g. data=diabetes."
                )
        check_choice("data.impute", impute, gaps.IMPUTE)
        check_choice("data.missing_mechanism", missing_mechanism, gaps.MECHANISMS)
        if missing is not None:
            check_range("data.missing", missing, 0.0, 1.0, high_inclusive=False)
            if missing_mechanism == "mnar" and missing > 0.5:  # wrong whatever the data: found by the preflight
                raise OptionError(
                    f"data.missing={missing} with data.missing_mechanism=mnar: only values above their "
                    "feature's median can go missing, so at most half of them. Lower data.missing to 0.5 or less."
                )
            if dataset.x.ndim != 2:
                raise ConfigValueError(
                    f"data.missing={missing} blanks values of a table (N, features), but this dataset's inputs "
                    f"have shape {dataset.input_shape}. Remove it, or choose a tabular dataset, e.g. data=wine."
                )
            dataset = dataclasses.replace(dataset, x=gaps.mask_values(dataset.x, missing, missing_mechanism, seed))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.sampler = sampler
        self.augment = augment
        self.seed = seed
        self.kind = dataset.kind
        self.num_classes = dataset.num_classes
        self.class_names = dataset.class_names
        self.feature_names = dataset.feature_names  # tabular data: one name per input column
        self.input_shape = dataset.input_shape

        if len(dataset.x) < MIN_ROWS:
            rows = f"{len(dataset.x)} row{'s' if len(dataset.x) > 1 else ''}"
            raise ConfigValueError(
                f"data: {dataset.source or 'the dataset'} has only {rows}: too few to split into training, "
                f"validation and test rows, one each at the least. Add examples: {ENOUGH_ROWS}."
            )
        stratify = stratify and dataset.kind == "classification"
        if dataset.test_mask is None:
            idx = split_indices(dataset.y, val_fraction, test_fraction, stratify, seed)
        else:  # the dataset's official test rows; val is carved from the rest
            rest = np.flatnonzero(~dataset.test_mask)
            train, val, _ = split_indices(dataset.y[rest], val_fraction, 0.0, stratify, seed)
            idx = (rest[train], rest[val], np.flatnonzero(dataset.test_mask))
        if cv_folds is not None:  # k-fold: train + val rows are re-dealt into folds; test stays out
            train, val = fold_indices(dataset.y, np.concatenate(idx[:2]), cv_folds, fold, stratify, seed)
            idx = (train, val, idx[2])
        if imbalance is not None:
            idx = (_imbalanced(idx[0], dataset.y, imbalance, seed), idx[1], idx[2])
        if anomaly_classes is not None:  # train on normal rows only
            idx = (idx[0][~np.isin(dataset.y[idx[0]], anomaly_classes)], idx[1], idx[2])
        if labels_per_class is not None:
            idx = (_few_labels(idx[0], dataset, labels_per_class, seed), idx[1], idx[2])
        if bootstrap:  # bagging: resample the final train rows with replacement, same count
            rng = np.random.default_rng([seed if bootstrap_seed is None else bootstrap_seed, 2])
            idx = (np.sort(rng.choice(idx[0], size=len(idx[0]), replace=True)), idx[1], idx[2])
        x = {name: dataset.x[i] for name, i in zip(("train", "val", "test"), idx)}
        y = {name: dataset.y[i] for name, i in zip(("train", "val", "test"), idx)}
        if missing is not None and impute == "drop":  # complete-case analysis of the train rows
            complete = ~np.isnan(x["train"]).any(axis=1)
            if not complete.any():
                raise ConfigValueError(
                    f"data.impute=drop leaves no training row: each of the {len(complete)} has a gap in one of "
                    f"its {dataset.input_shape[0]} features (data.missing={missing}). Lower data.missing, or set "
                    "data.impute=mean."
                )
            log.info("data.impute=drop: kept %d of %d training rows (no missing value)", complete.sum(), len(complete))
            x["train"], y["train"] = x["train"][complete], y["train"][complete]
        for name in ("train", "val", "test"):
            if len(x[name]) == 0:
                raise ConfigValueError(_empty_split(name, dataset, val_fraction, test_fraction, stratify, seed))
        # The train split's statistics, kept so that new inputs (nnlab-predict) get the same
        # imputation and scaling. x_scale is (offset, divisor): (mean, std) or (min, max - min).
        self.imputer: gaps.Imputer | None = None
        self.x_scale: tuple[np.ndarray, np.ndarray] | None = None
        self.y_scale: tuple[np.ndarray, np.ndarray] | None = None
        if missing is not None:
            self.imputer = gaps.fit_imputer(x["train"], indicators=impute == "mean_indicator")
            self.feature_names = self.imputer.feature_names(self.feature_names)
            self.input_shape = (dataset.input_shape[0] + len(self.imputer.indicators),)
        if normalize != "none":
            filled = x["train"] if self.imputer is None else self.imputer(x["train"])
            self.x_scale = (fit_standardizer if normalize == "standard" else fit_minmax)(filled)
        if self.imputer is not None or self.x_scale is not None:
            x = {k: self.transform(v) for k, v in x.items()}
        if standardize_target and self.kind == "regression":
            self.y_scale = mean, std = fit_standardizer(y["train"])
            y = {k: (v - mean) / std for k, v in y.items()}
        if outliers is not None:  # after the target's scaling: metrics stay in clean units
            y["train"] = _with_outliers(y["train"], outliers, outlier_scale, seed)
        self._arrays = {k: (x[k], y[k]) for k in x}
        nbytes = sum(a.nbytes + b.nbytes for a, b in self._arrays.values())
        self.in_memory = nbytes <= IN_MEMORY_LIMIT_BYTES if in_memory == "auto" else bool(in_memory)
        self.device = torch.device("cpu")
        self._tensors: dict[str, Batch] = {}
        self.rank, self.world_size = 0, 1  # data-parallel shard (see `shard`)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Inputs in the dataset's raw units -> what the model sees: gaps filled (and flagged) when
        `missing` is set, then z-scored (or min-max scaled) with the train split's statistics."""
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
        y = self._arrays["train"][1]
        return 1 if y.ndim == 1 else y.shape[1]

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
        if self.sampler == "weighted":
            # Draw n rows with replacement, each with probability proportional to 1 / (rows of its
            # class): every class is equally likely per draw, so batches are balanced on average.
            y = torch.from_numpy(self._arrays["train"][1])
            weights = 1.0 / torch.bincount(y).double()[y]
            order = torch.multinomial(weights, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
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
            from torch.utils.data import DataLoader, TensorDataset

            train = split == "train"
            self._loaders[split] = DataLoader(
                TensorDataset(*self._tensors[split]),
                batch_size=self.batch_size if train else self.eval_batch_size,
                # The sampler reads the order set below each epoch, so shuffling follows epoch_order().
                sampler=_OrderSampler(self) if train else None,
                drop_last=self.drop_last and train,
                num_workers=self.num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=self.num_workers > 0,
                # Worker seeds come from this generator, not the global one, so streaming leaves
                # the global RNG (dropout, init) exactly where in-memory batching does.
                generator=torch.Generator().manual_seed(self.seed),
            )
        if order is not None:
            self._train_order = order
        for x, y in self._loaders[split]:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


class _OrderSampler(torch.utils.data.Sampler):
    """Yields the DataModule's current epoch order, so both batching paths visit rows alike."""

    def __init__(self, data: DataModule) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data.steps_per_epoch * self.data.batch_size if self.data.world_size > 1 else self.data.size("train")

    def __iter__(self):
        return iter(self.data._train_order.tolist())


def _empty_split(name: str, dataset: ArrayDataset, val: float, test: float, stratify: bool, seed: int) -> str:
    """The message for an empty split, with the fractions nearest to `val` and `test` (and
    `stratify`) that give every split a row, found by trying them on the same rows and seed."""
    source = f" of {dataset.source}" if dataset.source else ""
    rows = f"{len(dataset.x)} rows{source}"
    now = f"data.val_fraction={val} and data.test_fraction={test}"
    found = _fractions_that_fill_every_split(dataset, val, test, stratify, seed)
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


def _fractions_that_fill_every_split(
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


def _with_outliers(y: np.ndarray, fraction: float, scale: float, seed: int) -> np.ndarray:
    """A copy of the targets `y` with a seeded share `fraction` of its rows moved by `scale`
    standard deviations of `y`, up or down at random: gross errors, far outside the clean spread."""
    rng = np.random.default_rng([seed, 4])
    rows = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    sign = rng.choice([-1.0, 1.0], size=(len(rows),) + y.shape[1:])
    out = y.copy()
    out[rows] = y[rows] + (sign * scale * y.std(axis=0)).astype(y.dtype)
    return out


def _imbalanced(train: np.ndarray, y: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Keep a fraction ratio^(c / (K - 1)) of each class c's training rows (class 0 keeps all,
    the last class keeps `ratio`): an exponentially imbalanced variant of a balanced set."""
    rng = np.random.default_rng(seed + 1)
    classes = np.unique(y)
    kept = []
    for rank, c in enumerate(classes):
        rows = train[y[train] == c]
        share = ratio ** (rank / max(len(classes) - 1, 1))
        kept.append(rng.permutation(rows)[: max(1, int(round(share * len(rows))))])
    return np.sort(np.concatenate(kept))


def select_classes(dataset: ArrayDataset, classes: list[int | str]) -> ArrayDataset:
    """The rows of `classes` only (given as indices or names), relabelled 0..k-1 in the listed
    order; class names and the official test mask follow."""
    if dataset.kind != "classification":
        raise ConfigValueError(
            f"data.classes={list(classes)} names classes, but this dataset is {dataset.kind}. "
            "Remove it, or choose a classification dataset."
        )
    names = dataset.class_names
    picked = []
    for c in classes:
        if isinstance(c, str) and c in names:
            picked.append(names.index(c))
        elif isinstance(c, int) and not isinstance(c, bool) and 0 <= c < len(names):
            picked.append(c)
        else:
            raise ConfigValueError(
                f"data.classes: unknown class {c!r}. This dataset's classes are indices 0-{len(names) - 1} "
                f"or the names {names}.{did_you_mean(str(c), names)}"
            )
    if len(set(picked)) != len(picked) or len(picked) < 2:
        raise ConfigValueError(
            f"data.classes={list(classes)} must list at least two different classes, each once, "
            "e.g. data.classes=[5,6,7,8,9]."
        )
    keep = np.isin(dataset.y, picked)
    relabel = np.full(len(names), -1, dtype=np.int64)
    relabel[picked] = np.arange(len(picked))
    return ArrayDataset(
        x=dataset.x[keep],
        y=relabel[dataset.y[keep]],
        kind="classification",
        class_names=[names[c] for c in picked],
        test_mask=None if dataset.test_mask is None else dataset.test_mask[keep],
        feature_names=dataset.feature_names,
    )


def _few_labels(train: np.ndarray, dataset: ArrayDataset, per_class: int, seed: int) -> np.ndarray:
    """`per_class` seeded training rows of every class (the few-label setting of transfer learning)."""
    rng = np.random.default_rng([seed, 1])
    kept = []
    for c, name in enumerate(dataset.class_names):
        rows = train[dataset.y[train] == c]
        if len(rows) < per_class:
            raise ConfigValueError(
                f"data.labels_per_class={per_class}, but class {name!r} has only {len(rows)} training rows. "
                f"Lower data.labels_per_class to at most {len(rows)}, or lower data.val_fraction/test_fraction."
            )
        kept.append(rng.choice(rows, size=per_class, replace=False))
    return np.sort(np.concatenate(kept))
